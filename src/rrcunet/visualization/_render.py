"""Shared rendering plumbing: headless figures, atomic PNG writes, colours.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so nothing
touches a display or global pyplot state and rendering is safe in worker processes; the PNG is
rendered by the Agg canvas into a temporary file and renamed into place (:func:`rrcunet.io.atomic_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path

# Okabe–Ito colour-blind-safe palette: sky blue for the reference, orange for the model.
TUMOUR_FILL = "#D55E00"
LUNG_FILL = "#bcd9ef"
DARK_BG = "#000000"
TEXT_COLOR = "#e8e8e8"
MARKER_COLOR = "#ffd84d"


def new_figure(width_in: float, height_in: float, *, facecolor: str = "white") -> Figure:
    """A figure attached to an Agg canvas (never a GUI backend)."""
    fig = Figure(figsize=(width_in, height_in), facecolor=facecolor)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out_png: str | os.PathLike[str], *, dpi: int) -> Path:
    """Render ``fig`` to ``out_png`` atomically (temporary file + rename)."""
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise InputError(f"figure path {out} must end in .png (found {out.suffix or 'no suffix'!r})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out
