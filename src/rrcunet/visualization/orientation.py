"""Display geometry: put any :class:`~rrcunet.io.volume.Volume` in front of a reader the right way up.

Owns the *display convention* used by every picture rrcunet draws, the choice of the point the
slices pass through, and the extraction of the three orthogonal 2D planes in display order.

Display convention (radiological, the one of clinical viewers and 3D Slicer's default layout):

* **axial**: seen from the feet. Patient's *right* on the image *left*, *anterior* at the top.
* **coronal**: seen from the front. Patient's *right* on the image *left*, *superior* at the top.
* **sagittal**: seen from the patient's left. *Anterior* on the image *left*, *superior* at the top.

The convention is derived from the direction matrix (LPS, see :mod:`rrcunet.io.volume`), never from
the array order, so a volume stored with flipped or permuted axes displays exactly like the same
anatomy stored in the usual way. Every volume is first re-indexed into the *display frame*: array axes
0, 1, 2 increase toward patient **L**eft, **P**osterior and **S**uperior. The re-indexing only permutes
and flips axes (a view, no copy, no interpolation); an oblique acquisition is shown in the nearest
such frame (nibabel's :func:`~nibabel.orientations.io_orientation`), not resampled, so an oblique
scan looks slightly rotated — as it does in a viewer that does not reslice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from rrcunet.errors import InputError
from rrcunet.io.volume import Geometry, Volume
from rrcunet.tasks import TUMOUR_LABEL

__all__ = [
    "DISPLAY_AXCODES",
    "DisplayFrame",
    "Focus",
    "Plane",
    "choose_focus",
    "display_box",
    "display_frame",
    "orthogonal_planes",
]

#: Direction toward which display-frame array axes 0, 1, 2 increase (nibabel axis codes).
DISPLAY_AXCODES: tuple[str, str, str] = ("L", "P", "S")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class DisplayFrame:
    """A volume's array re-indexed so that axes 0, 1, 2 increase toward patient L, P, S.

    Attributes:
        array: the re-indexed array (usually a view of the source array).
        spacing: voxel size in mm along the display axes.
        transform: nibabel orientation transform (3×2): row ``i`` gives the display axis that source
            axis ``i`` becomes, and whether it is flipped (-1).
        source_shape: shape of the source array.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    transform: np.ndarray
    source_shape: tuple[int, int, int]

    def index_from_source(self, ijk: tuple[int, int, int] | np.ndarray) -> tuple[int, int, int]:
        """Map a source voxel index ``(i, j, k)`` to the same voxel's display-frame index."""
        out = [0, 0, 0]
        for src_axis, (dst_axis, flip) in enumerate(self.transform):
            idx = int(ijk[src_axis])
            out[int(dst_axis)] = idx if flip > 0 else self.source_shape[src_axis] - 1 - idx
        return out[0], out[1], out[2]

    def index_to_source(self, xyz: tuple[int, int, int] | np.ndarray) -> tuple[int, int, int]:
        """Inverse of :meth:`index_from_source`."""
        out = [0, 0, 0]
        for src_axis, (dst_axis, flip) in enumerate(self.transform):
            idx = int(xyz[int(dst_axis)])
            out[src_axis] = idx if flip > 0 else self.source_shape[src_axis] - 1 - idx
        return out[0], out[1], out[2]


def _transform_for(geometry: Geometry) -> np.ndarray:
    ras_affine = _LPS_TO_RAS @ geometry.affine
    return ornt_transform(io_orientation(ras_affine), axcodes2ornt(DISPLAY_AXCODES))


def display_frame(volume: Volume) -> DisplayFrame:
    """Re-index ``volume`` into the display frame (axes toward L, P, S). No copy, no interpolation.

    Example::

        frame = display_frame(ct)
        axial = frame.array[:, :, k].T   # rows anterior→posterior, columns patient right→left
    """
    transform = _transform_for(volume.geometry)
    array = apply_orientation(volume.array, transform)
    spacing = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(transform):
        spacing[int(dst_axis)] = volume.spacing[src_axis]
    return DisplayFrame(array, (spacing[0], spacing[1], spacing[2]), transform, volume.shape)


class Focus(NamedTuple):
    """The voxel (source index ``(i, j, k)``) the three slices pass through, and why it was chosen."""

    index: tuple[int, int, int]
    reason: str


def _largest_component_centroid(mask: np.ndarray) -> np.ndarray:
    """Centroid (voxel units) of the largest 26-connected component of a non-empty boolean mask."""
    # Label only inside the mask's bounding box: a tumour is small and the full 512×512×N grid
    # would cost most of the time budget of a case figure.
    box = _bbox(mask)
    sub = mask[box]
    labels, n = ndimage.label(sub, structure=np.ones((3, 3, 3), dtype=bool))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        sub = labels == int(np.argmax(sizes))
    return _centroid(sub) + np.array([s.start for s in box])


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Centroid (voxel units) of a non-empty boolean mask, from its three 1D projections (fast)."""
    n = float(np.count_nonzero(mask))
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        proj = mask.sum(axis=other, dtype=np.int64)
        out.append(float(np.dot(np.arange(mask.shape[axis]), proj)) / n)
    return np.array(out)


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice]:
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return out[0], out[1], out[2]


def _check_same_grid(reference: Volume, other: Volume | None, what: str, ref_name: str = "CT") -> None:
    if other is not None and not reference.geometry.same_grid(other.geometry):
        raise InputError(
            f"{what} is not on the {ref_name} grid: {what} has {other.geometry.describe()}, the {ref_name} has "
            f"{reference.geometry.describe()}; resample the label map onto the {ref_name} (nearest neighbour) first"
        )


def choose_focus(gt: Volume | None, pred: Volume | None, *, shape: tuple[int, int, int] | None = None) -> Focus:
    """Choose the voxel the axial, coronal and sagittal slices go through.

    In order of preference: the centroid of the largest 26-connected tumour (label 2) component of
    the ground truth; else of the prediction; else the centroid of the lung region (label ≥ 1) of the
    ground truth, else of the prediction; else the centre of the grid. The centroid is rounded to the
    nearest voxel (for a strongly non-convex tumour it may fall just outside the tumour; the slices
    still cut through its middle).

    Args:
        gt: ground-truth label map (0/1/2) or ``None``.
        pred: predicted label map on the same grid, or ``None``.
        shape: grid shape, needed only when both label maps are ``None``.

    Returns:
        :class:`Focus` with the source voxel index ``(i, j, k)`` and a human-readable reason.
    """
    candidates = [(v, name) for v, name in ((gt, "ground truth"), (pred, "prediction")) if v is not None]
    if gt is not None and pred is not None:
        _check_same_grid(gt, pred, "the prediction", "ground-truth")
    # Work in the display frame so that the same anatomy stored with flipped or permuted axes gets
    # exactly the same focus (rounding a centroid of x.5 would otherwise depend on the storage order).
    frames = [(display_frame(vol), name) for vol, name in candidates]
    for frame, name in frames:
        tumour = np.asarray(frame.array) == TUMOUR_LABEL
        if tumour.any():
            c = _largest_component_centroid(tumour)
            return Focus(frame.index_to_source(_round_index(c, tumour.shape)),
                         f"centroid of the largest {name} tumour component")
    for frame, name in frames:
        lungs = np.asarray(frame.array) >= 1
        if lungs.any():
            c = _centroid(lungs)
            return Focus(frame.index_to_source(_round_index(c, lungs.shape)), f"centre of the {name} lungs (no tumour)")
    if candidates:
        shape = candidates[0][0].shape
    if shape is None:
        raise InputError("choose_focus needs a ground truth, a prediction or a grid shape; none was given")
    return Focus(tuple(int(s) // 2 for s in shape), "centre of the volume (no labels)")  # type: ignore[arg-type]


def _round_index(c: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int]:
    r = np.clip(np.rint(c).astype(int), 0, np.asarray(shape) - 1)
    return int(r[0]), int(r[1]), int(r[2])


def display_box(masks: list[np.ndarray], frame: DisplayFrame, *, margin_mm: float,
                focus: tuple[int, int, int] | None = None) -> tuple[slice, slice, slice] | None:
    """Display-frame crop box around the union of ``masks`` (already in the display frame).

    The box is the bounding box of every non-zero voxel, grown by ``margin_mm`` on each side and
    clipped to the grid; it always contains ``focus`` (a display-frame index) when given. Returns
    ``None`` (no crop) when all masks are empty.
    """
    union = None
    for m in masks:
        union = m if union is None else (union | m)
    if union is None or not union.any():
        return None
    box = list(_bbox(union))
    shape = frame.array.shape
    for axis in range(3):
        grow = int(np.ceil(margin_mm / frame.spacing[axis]))
        lo, hi = box[axis].start - grow, box[axis].stop + grow
        if focus is not None:
            lo, hi = min(lo, focus[axis]), max(hi, focus[axis] + 1)
        box[axis] = slice(max(0, lo), min(shape[axis], hi))
    return box[0], box[1], box[2]


@dataclass(frozen=True)
class Plane:
    """One 2D slice in display order (row 0 at the top, column 0 at the left of the screen).

    Attributes:
        name: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        image: the 2D array, ``image[row, col]``.
        pixel_mm: ``(row_height, column_width)`` in mm; draw with this aspect ratio.
        edges: patient direction at the ``(left, right, top, bottom)`` edges, e.g. ``("R", "L", "A", "P")``.
        focus: ``(row, col)`` of the focus voxel in ``image``.
    """

    name: str
    image: np.ndarray
    pixel_mm: tuple[float, float]
    edges: tuple[str, str, str, str]
    focus: tuple[int, int]


def orthogonal_planes(frame: DisplayFrame, focus: tuple[int, int, int],
                      box: tuple[slice, slice, slice] | None = None) -> dict[str, Plane]:
    """Axial, coronal and sagittal planes through ``focus`` (a *display-frame* index).

    Args:
        frame: the volume in the display frame (:func:`display_frame`).
        focus: display-frame voxel ``(x, y, z)`` the three planes go through.
        box: optional display-frame crop (:func:`display_box`); must contain ``focus``.

    Returns:
        ``{"axial": Plane, "coronal": Plane, "sagittal": Plane}`` following the module's convention.
    """
    a = frame.array
    sx, sy, sz = frame.spacing
    if box is None:
        box = (slice(0, a.shape[0]), slice(0, a.shape[1]), slice(0, a.shape[2]))
    bx, by, bz = box
    fx, fy, fz = focus
    for f, b in zip(focus, box):
        if not b.start <= f < b.stop:
            raise InputError(f"focus {focus} lies outside the display crop box {box}")
    # Display-frame axes increase toward L, P, S. Axial: rows = y (anterior first), columns = x
    # (patient right first). Coronal/sagittal: rows = z reversed (superior first).
    axial = a[bx, by, fz].T
    coronal = a[bx, fy, bz].T[::-1]
    sagittal = a[fx, by, bz].T[::-1]
    zr = bz.stop - 1 - fz  # row of the focus once z is reversed
    return {
        "axial": Plane("axial", axial, (sy, sx), ("R", "L", "A", "P"), (fy - by.start, fx - bx.start)),
        "coronal": Plane("coronal", coronal, (sz, sx), ("R", "L", "S", "I"), (zr, fx - bx.start)),
        "sagittal": Plane("sagittal", sagittal, (sz, sy), ("A", "P", "S", "I"), (zr, fy - by.start)),
    }
