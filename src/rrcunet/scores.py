"""Score primitives shared by training validation, evaluation and figures.

Owns :func:`confusion_counts` (per-class TP/FP/FN of two label maps), :func:`overlap_scores`
(Dice and IoU from counts, with the empty-class convention of docs/metrics.md) and the paper's
Figure 7 binning of per-case tumour Dice (:func:`dice_histogram`). They sit in the bottom layer
because the trainer's validation, :mod:`rrcunet.evaluation.metrics` (which re-exports them) and
:mod:`rrcunet.visualization` all need the same definitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rrcunet.errors import InputError

DICE_HISTOGRAM_EDGES: tuple[float, ...] = (0.5, 0.75, 0.8)
"""Inner edges of the paper's Figure 7 bins: < 0.5, 0.5–0.75, 0.75–0.8, >= 0.8."""


def confusion_counts(pred: np.ndarray, gt: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Per-class ``[TP, FP, FN]`` of two integer label maps of one shape, as an ``(n_classes, 3)`` int64 array.

    Example::

        >>> import numpy as np
        >>> confusion_counts(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3).tolist()
        [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    """
    counts = np.zeros((n_classes, 3), dtype=np.int64)
    for c in range(n_classes):
        p = pred == c
        g = gt == c
        tp = int(np.count_nonzero(p & g))
        counts[c] = (tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp)
    return counts


def overlap_scores(tp: float, fp: float, fn: float) -> tuple[float, float]:
    """``(Dice, IoU)`` from counts (or volumes). Both 1.0 when ``tp + fp + fn == 0`` (class absent in both).

    Dice = 2TP / (2TP + FP + FN) (paper Eq. 5, and Eq. 7's F1 for hard labels); IoU = TP / (TP + FP + FN) (Eq. 6).
    """
    denom = tp + fp + fn
    if denom == 0:
        return 1.0, 1.0
    return float(2 * tp / (2 * tp + fp + fn)), float(tp / denom)


@dataclass(frozen=True)
class DiceHistogram:
    """Counts of per-case Dice scores in bins ``[0, e1), [e1, e2), ..., [e_{n-1}, e_n], (e_n, 1]``.

    ``labels`` name the bins (``"< 0.5"``, ``"0.5–0.75"``, ``"0.75–0.8"``, ``"> 0.8"`` for the
    paper's edges). NaN scores are not binned; ``n_nan`` counts them.
    """

    edges: tuple[float, ...]
    labels: tuple[str, ...]
    counts: tuple[int, ...]
    n_nan: int

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.labels, self.counts))


def dice_histogram(values: Iterable[float], *, edges: Sequence[float] = DICE_HISTOGRAM_EDGES) -> DiceHistogram:
    """Bin per-case tumour Dice scores as in Figure 7 of the paper.

    The paper (§4.4) counts cases "less than 0.5", "from 0.5 to 0.75", "from 0.75 to 0.8" and
    "greater than 0.8", and adds the last two bins up as "greater than 0.75". So bins are closed on the
    left, except the last one, which is "> last edge": a score of exactly 0.5 falls in "0.5–0.75",
    0.75 and 0.8 in "0.75–0.8". Scores must lie in [0, 1]; NaN (an undefined score) is counted in
    ``n_nan`` and not binned.

    Example::

        >>> dice_histogram([0.2, 0.5, 0.79, 0.8, 0.95]).as_dict()
        {'< 0.5': 1, '0.5–0.75': 1, '0.75–0.8': 2, '> 0.8': 1}
    """
    e = tuple(float(x) for x in edges)
    if not e or any(not 0 < x < 1 for x in e) or any(b <= a for a, b in zip(e, e[1:])):
        raise InputError(f"histogram edges must be increasing numbers strictly between 0 and 1, not {tuple(edges)}")
    v = np.asarray(list(values), dtype=np.float64)
    nan = np.isnan(v)
    bad = v[~nan][(v[~nan] < 0) | (v[~nan] > 1)]
    if bad.size:
        raise InputError(f"Dice scores must lie in [0, 1]; got {bad[:5].tolist()}")
    idx = np.searchsorted(np.asarray(e), v[~nan], side="right")  # bin k holds e[k-1] <= v < e[k]
    idx[v[~nan] == e[-1]] = len(e) - 1  # the last edge itself is not "greater than" it
    counts = tuple(int(n) for n in np.bincount(idx, minlength=len(e) + 1))
    labels = (f"< {e[0]:g}", *(f"{a:g}–{b:g}" for a, b in zip(e, e[1:])), f"> {e[-1]:g}")
    return DiceHistogram(edges=e, labels=labels, counts=counts, n_nan=int(nan.sum()))
