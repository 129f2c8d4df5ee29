"""Numbers and tables as text (Markdown files, HTML report, console), with one spelling of NaN.

:func:`number` writes one value (NaN, a value that does not exist, as :data:`MISSING`);
:func:`table` lays rows out as a GitHub-flavoured Markdown table or as aligned plain text.
Machine-readable files keep their own spelling (CSV ``nan``, JSON ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

#: How NaN is written: no spread over one seed, no voxel-pooled HD95, no lesion in a group.
MISSING = "n/a"


def number(value: Any, digits: int = 4) -> str:
    """``value`` as text: a real with ``digits`` decimals (NaN :data:`MISSING`, ±inf ``inf``/``-inf``),
    an integer as is, a bool ``yes``/``no``, ``None`` empty, anything else ``str``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if not isinstance(value, Real):
        return str(value)
    return MISSING if math.isnan(value) else f"{float(value):.{digits}f}"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, digits: int = 4,
          right: Collection[str] = (), markdown: bool = True) -> str:
    """``rows`` as a GitHub-flavoured Markdown table, or as plain text in aligned columns under a
    dashed rule (``markdown=False``); each line ends in a newline.

    Args:
        rows: one mapping per row (a missing key is an empty cell); cells through :func:`number`.
        columns: the columns in order; default the keys of the first row.
        digits: decimals of the numbers.
        right: columns aligned right.
    """
    cols = list(columns if columns is not None else rows[0] if rows else [])
    lines = [cols] + [[number(r.get(c), digits) for c in cols] for r in rows]
    if markdown:
        rule = "|" + "|".join("---:" if c in right else "---" for c in cols) + "|"
        text = ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join([text[0], rule, *text[1:]]) + "\n"
    widths = [max(map(len, col)) for col in zip(*lines)]
    lines.insert(1, ["-" * w for w in widths])
    return "".join("  ".join(c.rjust(w) if k in right else c.ljust(w) for c, w, k in zip(line, widths, cols)).rstrip()
                   + "\n" for line in lines)
