"""3D surface view of a segmentation: translucent lungs around an opaque tumour (Figures 5/6, right).

Owns :func:`surface_figure` and the mesh extraction behind it (:func:`label_meshes`). Surfaces come
from :func:`skimage.measure.marching_cubes` on block-averaged occupancy (the fraction of each block
that is inside the structure, iso-level 0.5), which both downsamples a 512×512×N map to a few
thousand triangles and gives smoother surfaces than the raw voxel staircase. They are drawn with
matplotlib's ``mplot3d`` (no OpenGL, no display) in the display frame of
:mod:`rrcunet.visualization.orientation` (x → patient left, y → posterior, z → superior), seen from
the front-left: the patient's right is on the viewer's left, head up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from scipy import ndimage
from skimage.measure import block_reduce, marching_cubes

from rrcunet.errors import InputError
from rrcunet.io.volume import Volume
from rrcunet.visualization._render import DARK_BG, LUNG_FILL, TEXT_COLOR, TUMOUR_FILL, new_figure, save_png
from rrcunet.visualization.orientation import TUMOUR_LABEL, _bbox, _check_same_grid, display_frame

__all__ = ["Mesh", "label_meshes", "surface_figure"]


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in display-frame millimetres (x → L, y → P, z → S from voxel (0, 0, 0)).

    Attributes:
        verts: ``(V, 3)`` float vertex positions in mm.
        faces: ``(F, 3)`` int vertex indices.
        volume_ml: volume of the source mask (voxel count × voxel volume), in mL.
    """

    verts: np.ndarray
    faces: np.ndarray
    volume_ml: float


def _mesh(mask: np.ndarray, spacing: tuple[float, float, float], target_mm: float) -> Mesh | None:
    if not mask.any():
        return None
    volume_ml = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
    box = _bbox(mask)
    sub = mask[box]
    factors = tuple(max(1, int(round(target_mm / s))) for s in spacing)
    # Occupancy per block (block_reduce pads the last partial block with 0), then a two-block
    # margin of background so every surface closes.
    occ = block_reduce(sub.astype(np.float32), factors, np.mean, cval=0.0)
    eff = tuple(f * s for f, s in zip(factors, spacing))
    # Light Gaussian smoothing (σ = 0.4 × the coarsest block size, in mm) removes the staircase of
    # thick slices — for display only: the volume in the title is counted from the voxels.
    sigma_mm = 0.4 * max(eff)
    occ = ndimage.gaussian_filter(np.pad(occ, 2), sigma=[sigma_mm / e for e in eff], mode="constant")
    # A structure smaller than half a block would vanish at 0.5; lower the level for it.
    level = min(0.5, 0.5 * float(occ.max()))
    verts, faces, _normals, _values = marching_cubes(occ, level=level, spacing=eff)
    # Padded block p covers source voxels start + (p-2)*f ... ; its centre is at (p-2)*f + (f-1)/2.
    offset = np.array([(b.start - 2 * f + (f - 1) / 2.0) * s for b, f, s in zip(box, factors, spacing)])
    return Mesh(verts + offset, faces, volume_ml)


def label_meshes(label: Volume, *, lung_mm: float = 4.0, tumour_mm: float = 2.0) -> dict[str, Mesh | None]:
    """Lung-region (label ≥ 1) and tumour (label 2) surfaces of a label map, in the display frame.

    Args:
        label: 0/1/2 label map.
        lung_mm: block size (mm) the lung mask is averaged over before meshing (speed vs detail).
        tumour_mm: block size (mm) for the tumour (finer: tumours are small).

    Returns:
        ``{"lung": Mesh | None, "tumour": Mesh | None}`` (``None`` when the structure is absent).
    """
    if lung_mm <= 0 or tumour_mm <= 0:
        raise InputError(f"mesh block sizes must be positive mm, not lung_mm={lung_mm}, tumour_mm={tumour_mm}")
    frame = display_frame(label)
    a = np.asarray(frame.array)
    return {
        "lung": _mesh(a >= 1, frame.spacing, lung_mm),
        "tumour": _mesh(a == TUMOUR_LABEL, frame.spacing, tumour_mm),
    }


def _view_vector(elev: float, azim: float) -> np.ndarray:
    """Unit vector from the scene toward a viewer/light at (elev, azim), matplotlib's convention."""
    e, a = np.deg2rad(elev), np.deg2rad(azim)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def _shade(tris: np.ndarray, rgba: tuple[float, float, float, float], light: np.ndarray) -> np.ndarray:
    """Per-face colours: ambient + two-sided Lambert shading (own few lines: mplot3d's built-in
    shading cannot be combined with invisible edges)."""
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.where(norm > 0, norm, 1.0)
    intensity = 0.35 + 0.65 * np.abs(normals @ light)
    out = np.empty((len(tris), 4))
    out[:, :3] = np.clip(np.asarray(rgba[:3])[None, :] * intensity[:, None], 0, 1)
    out[:, 3] = rgba[3]
    return out


def _bounds(meshes: list[Mesh | None]) -> tuple[np.ndarray, np.ndarray] | None:
    pts = [m.verts for m in meshes if m is not None]
    if not pts:
        return None
    allv = np.concatenate(pts)
    return allv.min(axis=0), allv.max(axis=0)


def surface_figure(label: Volume, out_png: str | os.PathLike[str], *, gt: Volume | None = None,
                   title: str | None = None, dice: float | None = None, elev: float = 12.0,
                   azim: float = -65.0, lung_mm: float = 4.0, tumour_mm: float = 2.0, dpi: int = 100) -> Path:
    """Render lungs (translucent) and tumour (opaque) as 3D surfaces; GT beside prediction if given.

    Args:
        label: predicted (or any) 0/1/2 label map.
        out_png: output ``.png`` path, written atomically.
        gt: ground-truth label map on the same grid; when given the figure shows ground truth (left)
            and prediction (right) at the same scale and viewpoint.
        title: figure title (e.g. the case id); defaults to ``label.meta["case"]`` or ``"segmentation"``.
        dice: per-case tumour Dice shown in the title when given.
        elev, azim: viewpoint in degrees (matplotlib convention in the display frame); the default
            looks from the front and slightly from the patient's left and above. ``azim=-90,
            elev=0`` is a straight anterior view.
        lung_mm, tumour_mm: block sizes for meshing (:func:`label_meshes`).
        dpi: PNG resolution.

    Returns:
        The PNG path.
    """
    _check_same_grid(label, gt, "the ground truth", "prediction")
    panels: list[tuple[str, Volume]] = ([("Ground truth", gt)] if gt is not None else []) + [
        ("Prediction" if gt is not None else "Segmentation", label)]
    meshes = [label_meshes(v, lung_mm=lung_mm, tumour_mm=tumour_mm) for _, v in panels]
    bounds = _bounds([m for d in meshes for m in d.values()])
    if bounds is None:
        lo, hi = np.zeros(3), np.asarray(display_frame(label).spacing) * np.asarray(label.shape)
    else:
        lo, hi = bounds
    ranges = np.maximum(hi - lo, 1.0)

    n = len(panels)
    fig = new_figure(4.6 * n, 5.0, facecolor=DARK_BG)
    lung_rgba = to_rgba(LUNG_FILL, 0.13)
    tumour_rgba = to_rgba(TUMOUR_FILL, 1.0)
    light_dir = _view_vector(elev + 25.0, azim - 30.0)  # a key light above and left of the viewer
    for idx, ((name, _vol), mesh) in enumerate(zip(panels, meshes)):
        ax = fig.add_subplot(1, n, idx + 1, projection="3d", facecolor=DARK_BG)
        ax.set_proj_type("ortho")
        # Draw order is fixed (translucent lungs first, the opaque tumour over them) rather than
        # depth-sorted per collection, so a tumour inside the lung stays fully visible, as in an
        # X-ray-like "glass lung" view.
        ax.computed_zorder = False
        for key, rgba, z in (("lung", lung_rgba, 1), ("tumour", tumour_rgba, 2)):
            m = mesh[key]
            if m is None:
                continue
            tris = m.verts[m.faces]
            coll = Poly3DCollection(tris, facecolors=_shade(tris, rgba, light_dir), edgecolors="none",
                                    linewidths=0, zorder=z)
            ax.add_collection3d(coll)
        ax.set_xlim(lo[0], lo[0] + ranges[0])
        ax.set_ylim(lo[1], lo[1] + ranges[1])
        ax.set_zlim(lo[2], lo[2] + ranges[2])
        ax.set_box_aspect(tuple(ranges), zoom=1.35)
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
        tumour = mesh["tumour"]
        vol_txt = f"tumour {tumour.volume_ml:.1f} mL" if tumour is not None else "no tumour"
        ax.set_title(f"{name}\n{vol_txt}", color=TEXT_COLOR, fontsize=10, pad=-4)

    heading = title if title is not None else str(label.meta.get("case", "segmentation"))
    if dice is not None:
        heading += "  ·  tumour Dice " + (f"{dice:.3f}" if math.isfinite(dice) else "undefined")
    fig.suptitle(heading, color=TEXT_COLOR, fontsize=12, fontweight="bold", y=0.985)
    fig.legend(handles=[Patch(facecolor=to_rgba(LUNG_FILL, 0.5), label="lungs (translucent)"),
                        Patch(facecolor=TUMOUR_FILL, label="tumour")],
               loc="lower center", ncol=2, frameon=False, fontsize=8, labelcolor=TEXT_COLOR)
    fig.text(0.99, 0.01, "front-left view: patient right on viewer's left, head up", color="#a0a0a0",
             fontsize=7, ha="right", va="bottom")
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.06, top=0.9, wspace=0.0)
    return save_png(fig, out_png, dpi=dpi)
