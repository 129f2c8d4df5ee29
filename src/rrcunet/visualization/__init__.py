"""Visualization: the pictures and the static HTML report of an evaluation.

Owns everything drawn for a user (no metrics are computed here; they come from
:mod:`rrcunet.evaluation`):

* :func:`case_figure` — axial/coronal/sagittal CT slices through the tumour with ground-truth and
  predicted outlines (the paper's Figures 5, 6 and 8);
* :func:`surface_figure` — 3D lungs (translucent) and tumour (opaque), ground truth beside
  prediction (the 3D view of Figures 5/6);
* :func:`dice_bins` / :func:`dice_histogram` — per-case Dice in the paper's bins (Figure 7);
* :func:`write_html_report` — one static page linking all of the above.

Display convention (radiological; derived from the direction matrix, see
:mod:`rrcunet.visualization.orientation`): patient right on the image left, anterior/superior up.
Rendering is headless (matplotlib Agg via :class:`matplotlib.figure.Figure`, never ``pyplot``) and
every file is written atomically.
"""

from rrcunet.visualization.histogram import DICE_BINS, dice_bins, dice_histogram
from rrcunet.visualization.orientation import Focus, Plane, choose_focus, display_frame, orthogonal_planes
from rrcunet.visualization.report import write_html_report
from rrcunet.visualization.slices import case_figure, case_planes
from rrcunet.visualization.surface import label_meshes, surface_figure

__all__ = [
    "DICE_BINS",
    "Focus",
    "Plane",
    "case_figure",
    "case_planes",
    "choose_focus",
    "dice_bins",
    "dice_histogram",
    "display_frame",
    "label_meshes",
    "orthogonal_planes",
    "surface_figure",
    "write_html_report",
]
