"""Per-case slice figure: CT with ground-truth and predicted contours (the paper's Figures 5, 6, 8).

Owns :func:`case_figure`. Three orthogonal slices (axial, coronal, sagittal) through the tumour are
drawn side by side at one common physical scale (mm), so anisotropic voxels — 5 mm slices, 0.7 mm
pixels — are never squashed, in the radiological convention of :mod:`rrcunet.visualization.orientation`.
The CT is shown in a lung window; lung-region outlines (label ≥ 1) are thin, tumour outlines
(label 2) bold; ground truth in sky blue, prediction in orange (colour-blind safe, Okabe–Ito).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from rrcunet.errors import ConfigError, InputError
from rrcunet.io.volume import Volume
from rrcunet.visualization._render import (
    DARK_BG,
    MARKER_COLOR,
    TEXT_COLOR,
    new_figure,
    save_png,
)
from rrcunet.visualization.orientation import (
    TUMOUR_LABEL,
    Plane,
    _check_same_grid,
    choose_focus,
    display_box,
    display_frame,
    orthogonal_planes,
)

__all__ = ["case_figure", "case_planes"]

# Display sizes (inches at ``dpi``): the three panels share one mm→inch scale.
_MAX_PANELS_W_IN = 12.5
_MAX_PANELS_H_IN = 4.6
_GAP_IN = 0.12
_SIDE_IN = 0.1
_TOP_IN = 0.62
_BOTTOM_IN = 0.42
# A dark halo keeps annotations legible on white soft tissue as well as on black air.
_HALO = [patheffects.withStroke(linewidth=2.5, foreground="black")]
# (line width lung, line width tumour); the ground truth is drawn wider and underneath, so where
# the two outlines coincide it shows as a blue rim around the orange line.
_GT_LW = (1.3, 2.8)
_PRED_LW = (0.8, 1.6)
#: Lung and tumour told apart by colour (Okabe-Ito, colour-blind safe): blues/greens for the lung,
#: orange/yellow for the tumour; ground truth and prediction by shade (and width).
CONTOUR_COLORS = {("gt", "lung"): "#56B4E9", ("pred", "lung"): "#009E73",
                  ("gt", "tumour"): "#E69F00", ("pred", "tumour"): "#F0E442"}


def case_planes(ct: Volume, gt: Volume | None, pred: Volume | None, *,
                crop_margin_mm: float | None = 20.0) -> tuple[dict[str, Plane], dict[str, dict[str, Plane]], str,
                                                            tuple[int, int, int]]:
    """The 2D planes :func:`case_figure` draws, without drawing them.

    Args:
        ct: CT volume (HU).
        gt: ground-truth label map (0/1/2) on the CT grid, or ``None``.
        pred: predicted label map on the CT grid, or ``None``.
        crop_margin_mm: crop every plane to the bounding box of all labelled voxels plus this margin
            (mm); ``None`` shows the full field of view.

    Returns:
        ``(ct_planes, mask_planes, reason, focus_ijk)``: the CT planes by view name; boolean planes
        keyed ``"gt_lung"``, ``"gt_tumour"``, ``"pred_lung"``, ``"pred_tumour"`` (present ones only);
        why the focus was chosen; the focus as a source voxel index.
    """
    if ct.kind != "image":
        raise InputError(f"expected the CT image as first argument, found a {ct.kind!r} volume")
    _check_same_grid(ct, gt, "the ground truth")
    _check_same_grid(ct, pred, "the prediction")
    focus = choose_focus(gt, pred, shape=ct.shape)
    frame = display_frame(ct)
    dfocus = frame.index_from_source(focus.index)

    masks: dict[str, np.ndarray] = {}
    for prefix, vol in (("gt", gt), ("pred", pred)):
        if vol is None:
            continue
        lab = display_frame(vol).array
        masks[f"{prefix}_lung"] = lab >= 1
        masks[f"{prefix}_tumour"] = lab == TUMOUR_LABEL
    box = None
    if crop_margin_mm is not None:
        lungs = [m for k, m in masks.items() if k.endswith("_lung")]
        box = display_box(lungs, frame, margin_mm=crop_margin_mm, focus=dfocus)
    ct_planes = orthogonal_planes(frame, dfocus, box)
    mask_planes = {}
    for key, m in masks.items():
        mframe = type(frame)(m, frame.spacing, frame.transform, frame.source_shape)
        mask_planes[key] = orthogonal_planes(mframe, dfocus, box)
    return ct_planes, mask_planes, focus.reason, focus.index


def _format_dice(dice: float) -> str:
    if dice is None or not math.isfinite(dice):
        return "tumour Dice undefined (no tumour in either)"
    return f"tumour Dice {dice:.3f}"


def _draw_contour(ax: Axes, mask: np.ndarray, pixel_mm: tuple[float, float], *, color: str, lw: float,
                  zorder: float) -> None:
    if not mask.any():
        return
    # Pad with background so outlines touching the crop edge close; x/y are pixel centres in mm.
    padded = np.pad(mask.astype(np.float32), 1)
    rh, cw = pixel_mm
    xs = (np.arange(padded.shape[1]) - 0.5) * cw
    ys = (np.arange(padded.shape[0]) - 0.5) * rh
    ax.contour(xs, ys, padded, levels=[0.5], colors=[color], linewidths=lw, zorder=zorder,
               antialiased=True)


def _scale_bar(ax: Axes, width_mm: float, height_mm: float) -> None:
    length = 50.0 if width_mm >= 150 else (20.0 if width_mm >= 60 else 10.0)
    x0, y0 = 0.05 * width_mm, height_mm - 0.05 * height_mm
    ax.plot([x0, x0 + length], [y0, y0], color=TEXT_COLOR, lw=2, solid_capstyle="butt", zorder=5,
            path_effects=[patheffects.withStroke(linewidth=4, foreground="black")])
    label = f"{length / 10:g} cm" if length >= 10 else f"{length:g} mm"
    ax.text(x0 + length / 2, y0 - 0.015 * height_mm, label, color=TEXT_COLOR, fontsize=7,
            ha="center", va="bottom", zorder=5, path_effects=_HALO)


def _edge_letters(ax: Axes, edges: tuple[str, str, str, str]) -> None:
    style = dict(transform=ax.transAxes, color=MARKER_COLOR, fontsize=9, fontweight="bold", zorder=6,
                 path_effects=_HALO)
    left, right, top, bottom = edges
    ax.text(0.012, 0.5, left, ha="left", va="center", **style)
    ax.text(0.988, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.985, top, ha="center", va="top", **style)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **style)


def case_figure(ct: Volume, gt: Volume | None, pred: Volume, out_png: str | os.PathLike[str], *,
                title: str | None = None, dice: float | None = None,
                window: tuple[float, float] = (-1350.0, 150.0), crop_margin_mm: float | None = 20.0,
                dpi: int = 100) -> Path:
    """Draw axial, coronal and sagittal CT slices through the tumour with GT and predicted outlines.

    The slices pass through the centroid of the largest ground-truth tumour component (else of the
    predicted tumour, else the lungs' centre; :func:`~rrcunet.visualization.orientation.choose_focus`)
    and are displayed in the radiological convention (patient right on the image left; anterior /
    superior up) derived from the direction matrix, at one physical scale for the three panels.

    Args:
        ct: CT volume in HU.
        gt: ground-truth label map (0 background, 1 lung, 2 tumour) on the CT grid, or ``None``
            (prediction only, e.g. on a new patient).
        pred: predicted label map on the CT grid.
        out_png: output path (``.png``), written atomically.
        title: figure title, e.g. the case id; defaults to ``ct.meta["case"]`` or ``"CT"``.
        dice: per-case tumour Dice shown in the title (``NaN`` → "undefined"); omitted when ``None``.
        window: display window ``(low, high)`` in HU; default lung window (level −600, width 1500).
        crop_margin_mm: crop to the labelled region plus this margin; ``None`` for the whole slice.
        dpi: PNG resolution (about 1300×600 px at the default 100).

    Returns:
        The PNG path.

    Example::

        case_figure(ct, gt, pred, "report/LUNG1-001_slices.png", title="LUNG1-001", dice=0.87)
    """
    lo, hi = (float(window[0]), float(window[1]))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"window must be (low, high) HU with low < high, not {window!r}")
    if pred is None:
        raise InputError("case_figure needs a prediction; pass the predicted label map as `pred`")
    ct_planes, mask_planes, reason, focus = case_planes(ct, gt, pred, crop_margin_mm=crop_margin_mm)

    order = ("axial", "coronal", "sagittal")
    sizes_mm = []  # (width, height) of each panel in mm
    for name in order:
        p = ct_planes[name]
        sizes_mm.append((p.image.shape[1] * p.pixel_mm[1], p.image.shape[0] * p.pixel_mm[0]))
    total_w_mm = sum(w for w, _ in sizes_mm)
    max_h_mm = max(h for _, h in sizes_mm)
    scale = min(_MAX_PANELS_W_IN / total_w_mm, _MAX_PANELS_H_IN / max_h_mm)  # inch per mm
    panels_w = total_w_mm * scale
    fig_w = max(2 * _SIDE_IN + 2 * _GAP_IN + panels_w, 6.0)
    fig_h = _TOP_IN + _BOTTOM_IN + max_h_mm * scale
    fig = new_figure(fig_w, fig_h, facecolor=DARK_BG)

    x_in = (fig_w - panels_w - 2 * _GAP_IN) / 2
    for name, (w_mm, h_mm) in zip(order, sizes_mm):
        w_in, h_in = w_mm * scale, h_mm * scale
        y_in = _BOTTOM_IN + (max_h_mm * scale - h_in) / 2
        ax = fig.add_axes((x_in / fig_w, y_in / fig_h, w_in / fig_w, h_in / fig_h))
        x_in += w_in + _GAP_IN
        plane = ct_planes[name]
        ax.imshow(plane.image, cmap="gray", vmin=lo, vmax=hi, extent=(0, w_mm, h_mm, 0),
                  interpolation="bilinear", origin="upper", aspect="equal", zorder=0)
        # Lungs under tumours; within each, the (wider) ground truth under the prediction.
        for z, (structure, idx) in enumerate((("lung", 0), ("tumour", 1))):
            for key, lws in (("gt", _GT_LW), ("pred", _PRED_LW)):
                if f"{key}_{structure}" in mask_planes:
                    _draw_contour(ax, mask_planes[f"{key}_{structure}"][name].image, plane.pixel_mm,
                                  color=CONTOUR_COLORS[key, structure], lw=lws[idx],
                                  zorder=2 + z + (0.5 if key == "pred" else 0.0))
        ax.set_xlim(0, w_mm)
        ax.set_ylim(h_mm, 0)
        ax.set_axis_off()
        ax.text(0.012, 0.985, name.capitalize(), transform=ax.transAxes, color=TEXT_COLOR, fontsize=9,
                ha="left", va="top", zorder=6, path_effects=_HALO)
        _edge_letters(ax, plane.edges)
        _scale_bar(ax, w_mm, h_mm)

    heading = title if title is not None else str(ct.meta.get("case", "CT"))
    if dice is not None:
        heading = f"{heading}  ·  {_format_dice(dice)}"
    fig.text(0.5, 1 - 0.12 / fig_h, heading, color=TEXT_COLOR, fontsize=12, fontweight="bold",
             ha="center", va="top")
    sub = (f"slices through voxel (i, j, k) = {focus}, {reason}  ·  window [{lo:g}, {hi:g}] HU  ·  "
           f"radiological view (patient right on image left)")
    fig.text(0.5, 1 - 0.4 / fig_h, sub, color="#a0a0a0", fontsize=7.5, ha="center", va="top")

    handles = []
    if gt is not None:
        handles += [Line2D([], [], color=CONTOUR_COLORS["gt", "lung"], lw=_GT_LW[0], label="ground truth lung"),
                    Line2D([], [], color=CONTOUR_COLORS["gt", "tumour"], lw=_GT_LW[1], label="ground truth tumour")]
    handles += [Line2D([], [], color=CONTOUR_COLORS["pred", "lung"], lw=_PRED_LW[0], label="predicted lung"),
                Line2D([], [], color=CONTOUR_COLORS["pred", "tumour"], lw=_PRED_LW[1], label="predicted tumour")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
               labelcolor=TEXT_COLOR, bbox_to_anchor=(0.5, 0.02 / fig_h), handlelength=2.2)
    return save_png(fig, out_png, dpi=dpi)
