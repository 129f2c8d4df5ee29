"""Per-case tumour Dice histogram in the paper's bins (Figure 7).

Owns :data:`DICE_BINS`, :func:`dice_bins` and :func:`dice_histogram`.

Bin edges. The paper (§4.4) counts cases "less than 0.5", "from 0.5 to 0.75", "from 0.75 to 0.8"
and "greater than 0.8", and sums "30 out of 41 CT scans with Dice scores greater than 0.75" from the
last two bins, so a score of exactly 0.75 belongs to the third bin. We therefore use

* ``"< 0.5"``:      ``[0, 0.5)``
* ``"0.5–0.75"``:   ``[0.5, 0.75)``
* ``"0.75–0.8"``:   ``[0.75, 0.8]``  (closed on both sides: 0.8 itself is *not* "greater than 0.8")
* ``"> 0.8"``:      ``(0.8, 1]``
* ``"undefined"``:  ``NaN`` — Dice is undefined when neither the ground truth nor the prediction
  contains tumour (MONAI returns NaN there); such cases are counted apart, never as 0 or 1.

(The paper's own counts, 5 + 5 + 6 + 24 = 40, do not add up to its 41 test scans; we cannot tell
which bin lost a case.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from rrcunet.errors import InputError
from rrcunet.scores import dice_histogram as metrics_dice_histogram
from rrcunet.visualization._render import new_figure, save_png

__all__ = ["DICE_BINS", "UNDEFINED", "dice_bins", "dice_histogram"]

#: Bin names in display order, with their (low, high, low_closed, high_closed) edges.
DICE_BINS: dict[str, tuple[float, float, bool, bool]] = {
    "< 0.5": (0.0, 0.5, True, False),
    "0.5–0.75": (0.5, 0.75, True, False),
    "0.75–0.8": (0.75, 0.8, True, True),
    "> 0.8": (0.8, 1.0, False, True),
}
UNDEFINED = "undefined"
_EDGES = (0.5, 0.75, 0.8)

# Red → green, colour-blind-distinguishable by lightness as well as hue.
_BIN_COLORS = ("#d55e00", "#e69f00", "#8fbc5a", "#2e8b57")
_UNDEFINED_COLOR = "#9e9e9e"


def _interval(name: str) -> str:
    if name == UNDEFINED:
        return "(NaN)"
    lo, hi, lo_closed, hi_closed = DICE_BINS[name]
    return f"{'[' if lo_closed else '('}{lo:g}, {hi:g}{']' if hi_closed else ')'}"


def dice_bins(dices: Sequence[float]) -> dict[str, int]:
    """Count per-case Dice scores in the paper's bins (edges in the module docstring).

    Args:
        dices: per-case tumour Dice scores in ``[0, 1]``; ``NaN`` means undefined.

    Returns:
        ``{"< 0.5": n, "0.5–0.75": n, "0.75–0.8": n, "> 0.8": n, "undefined": n}``, always all five
        keys in that order.

    Raises:
        InputError: a score outside ``[0, 1]`` or not a number.

    Example::

        >>> dice_bins([0.2, 0.5, 0.75, 0.8, 0.81, float("nan")])
        {'< 0.5': 1, '0.5–0.75': 1, '0.75–0.8': 2, '> 0.8': 1, 'undefined': 1}
    """
    values = []
    for i, value in enumerate(dices):
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            raise InputError(f"Dice score #{i} is not a number: {value!r}") from None
    # One binning rule for the whole package: rrcunet.evaluation.metrics.dice_histogram.
    hist = metrics_dice_histogram(values, edges=_EDGES)
    counts = dict(zip(DICE_BINS, hist.counts))
    counts[UNDEFINED] = hist.n_nan
    return counts


def dice_histogram(dices: Sequence[float], out_png: str | os.PathLike[str], *,
                   title: str = "Per-case tumour Dice", dpi: int = 100) -> Path:
    """Bar chart of :func:`dice_bins` counts with the count on each bar (the paper's Figure 7).

    The "undefined" bar appears only when some score is ``NaN``. The title gives the number of cases
    and the mean Dice over the defined ones.

    Args:
        dices: per-case tumour Dice scores (``NaN`` = undefined).
        out_png: output ``.png`` path, written atomically.
        title: chart title.
        dpi: PNG resolution.

    Returns:
        The PNG path.
    """
    counts = dice_bins(dices)
    names = list(DICE_BINS)
    colors = list(_BIN_COLORS)
    if counts[UNDEFINED]:
        names.append(UNDEFINED)
        colors.append(_UNDEFINED_COLOR)
    values = [counts[n] for n in names]
    defined = [float(d) for d in dices if not math.isnan(float(d))]

    fig = new_figure(5.6, 3.8)
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.66))
    bars = ax.bar(range(len(names)), values, color=colors, edgecolor="#333333", linewidth=0.8, width=0.7)
    top = max(values + [1])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02 * top, str(v),
                ha="center", va="bottom", fontsize=11, fontweight="bold", color="#222222")
    ax.set_xticks(range(len(names)), [f"{n}\n{_interval(n)}" for n in names], fontsize=9)
    ax.set_ylim(0, top * 1.18)
    ax.set_xlabel("tumour Dice")
    ax.set_ylabel("number of cases")
    ax.yaxis.get_major_locator().set_params(integer=True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    n = len(dices)
    mean = f", mean {sum(defined) / len(defined):.3f}" if defined else ""
    fig.suptitle(f"{title} (n = {n}{mean})", fontsize=11, fontweight="bold", y=0.96)
    return save_png(fig, out_png, dpi=dpi)
