"""Measurements of a predicted tumour: lesions, volumes, centroids and the RECIST-style longest
axial diameter (what ``rrcunet predict`` writes into ``<case>.json``).

Owns :func:`tumour_components` (26-connected components of one label, computed on the label's
bounding box so the cost follows the tumour, not the scan), :func:`measure_lesions`,
:func:`feret_diameter_2d` and :class:`Lesion`.

Definitions (docs/inference.md, "Measurements"):

* **lesion**: a 26-connected component of the tumour label (voxels touching by a face, an edge or
  a corner belong to one lesion); lesions are numbered 1, 2, … by decreasing volume;
* **volume**: number of voxels × voxel volume (mL = cm³);
* **centroid**: mean of the lesion's voxel centres, as continuous voxel indices ``(i, j, k)`` of the
  input grid and in LPS mm (``Geometry.index_to_physical``);
* **longest axial diameter** (RECIST 1.1 style): the largest in-plane Feret diameter over the
  lesion's axial slices. "Axial" means the slices of the array axis closest to the patient's
  superior–inferior axis (the input is re-ordered to the canonical LPS frame by
  :func:`rrcunet.preprocessing.orientation_step` first, an exact permutation). On a slice each
  lesion pixel is the rectangle it covers (pixel-edge to pixel-edge, so a lesion ``n`` pixels wide
  measures ``n × spacing``); the Feret diameter is the largest distance between two points of
  the union of those rectangles, which is attained at two corners of its convex hull. It is
  computed exactly: the corners of the first and last pixel of every row (which span the hull),
  scaled by the in-plane spacing, go into :class:`scipy.spatial.ConvexHull`, and every pair of hull
  vertices is compared.

We compute the Feret diameter ourselves (rather than ``skimage.measure.regionprops``'
``feret_diameter_max``) because scikit-image measures between pixel *centres* on the marching-squares
contour and in pixel units, so it neither includes the pixel extent nor handles anisotropic pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from rrcunet.io.volume import Geometry
from rrcunet.preprocessing.orientation import orientation_step

#: 26-connectivity (face, edge and corner neighbours).
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Lesion:
    """One tumour component of a label map.

    Args:
        index: 1-based number, by decreasing volume.
        n_voxels: voxel count.
        volume_ml: volume in mL.
        centroid_voxel: mean voxel index ``(i, j, k)`` on the input grid (continuous).
        centroid_mm: the same point in LPS mm.
        longest_axial_diameter_mm: RECIST-style longest in-plane diameter over axial slices (mm).
        diameter_endpoints_mm: the two LPS points (mm) whose distance is that diameter (pixel corners).
        bbox_voxel: ``((i0, j0, k0), (i1, j1, k1))`` inclusive index bounds on the input grid.
        confidence: mean tumour probability over the lesion's voxels (set by the predictor,
            :func:`rrcunet.inference.quality.lesion_confidences`; ``None`` when not computed).
        fraction_in_lung: share of its voxels inside the lung region (the same).
        mean_uncertainty: mean voxel uncertainty over the lesion (``--uncertainty`` only).
    """

    index: int
    n_voxels: int
    volume_ml: float
    centroid_voxel: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    longest_axial_diameter_mm: float
    diameter_endpoints_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    bbox_voxel: tuple[tuple[int, int, int], tuple[int, int, int]]
    confidence: float | None = None
    fraction_in_lung: float | None = None
    mean_uncertainty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        extras = {k: getattr(self, k) for k in ("confidence", "fraction_in_lung", "mean_uncertainty")
                  if getattr(self, k) is not None}
        return {
            "index": self.index,
            "n_voxels": self.n_voxels,
            "volume_ml": self.volume_ml,
            "centroid_voxel": list(self.centroid_voxel),
            "centroid_mm_lps": list(self.centroid_mm),
            "longest_axial_diameter_mm": self.longest_axial_diameter_mm,
            "diameter_endpoints_mm_lps": [list(p) for p in self.diameter_endpoints_mm],
            "bbox_voxel": [list(self.bbox_voxel[0]), list(self.bbox_voxel[1])],
            **extras,
        }


@dataclass(frozen=True)
class Components:
    """Connected components of a mask, labelled on its bounding box.

    ``labels[box]`` of the full array equals :attr:`labels` (0 outside any component); component
    ``n`` (1-based, in scan order) has :attr:`sizes` ``[n - 1]`` voxels.
    """

    labels: np.ndarray
    offset: tuple[int, int, int]
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return int(self.sizes.size)

    @property
    def box(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, o + s) for o, s in zip(self.offset, self.labels.shape))  # type: ignore[return-value]

    def voxels(self) -> tuple[np.ndarray, np.ndarray]:
        """The labelled voxels: where they are on the box (boolean, ``labels.shape``) and their
        component numbers in scan order, for per-component sums with ``np.bincount`` (one pass over
        the labelled voxels rather than one call per component)."""
        where = self.labels != 0
        return where, self.labels[where]

    def without(self, drop: np.ndarray) -> Components:
        """The components left when those with ``drop[n]`` (boolean, indexed by component number,
        ``drop[0]`` ignored) are removed: what :func:`tumour_components` of the remaining mask gives,
        without labelling it again. Removing whole components leaves the others' connectivity, and
        their scan order, as it was; they are renumbered 1.. in that order on their own bounding box."""
        keep = ~np.asarray(drop, dtype=bool)
        keep[0] = False
        numbers = np.zeros(self.count + 1, dtype=np.int32)
        numbers[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        relabelled = numbers[self.labels]
        bounds = bounding_box(relabelled != 0)
        if bounds is None:
            return Components(np.zeros((0, 0, 0), dtype=np.int32), (0, 0, 0), np.zeros(0, dtype=np.int64))
        lo, hi = bounds
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        offset = tuple(int(o + a) for o, a in zip(self.offset, lo))
        return Components(np.ascontiguousarray(relabelled[box]), offset, self.sizes[keep[1:]])  # type: ignore[arg-type]


def component_centroids(components: Components, numbers: np.ndarray) -> np.ndarray:
    """Mean voxel index (indices of the full array) of each component in ``numbers`` (1-based), as
    ``(len(numbers), 3)``: one pass over the labelled voxels, instead of a :func:`centroid` per
    component on its own box (hundreds of calls when a random network leaves speckle; issue 23)."""
    numbers = np.asarray(numbers, dtype=np.intp)
    where, number = components.voxels()
    sums = np.stack([np.bincount(number, weights=index, minlength=components.count + 1)
                     for index in np.nonzero(where)], axis=1)
    return sums[numbers] / components.sizes[numbers - 1, None] + np.asarray(components.offset, dtype=np.float64)


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Inclusive ``(lo, hi)`` index bounds of the non-zero voxels of a 3D mask, or ``None`` if empty."""
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def tumour_components(mask: np.ndarray) -> Components:
    """26-connected components of a boolean 3D mask (``scipy.ndimage.label`` on its bounding box)."""
    mask = np.asarray(mask, dtype=bool)
    bounds = bounding_box(mask)
    if bounds is None:
        return Components(np.zeros((0, 0, 0), dtype=np.int32), (0, 0, 0), np.zeros(0, dtype=np.int64))
    lo, hi = bounds
    box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
    labels, n = ndimage.label(mask[box], structure=CONNECTIVITY_26)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return Components(labels.astype(np.int32, copy=False), lo, sizes)


def _row_extreme_corners(mask2d: np.ndarray) -> np.ndarray:
    """Corners (index units) of the first and last pixel of every non-empty row of a 2D mask.

    The convex hull of the union of the pixel squares is the hull of these points: every pixel of a
    row lies between that row's first and last pixel.
    """
    rows = np.flatnonzero(mask2d.any(axis=1))
    sub = mask2d[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    a = rows.astype(np.float64)
    pts = [np.column_stack([a + da, b + db]) for b, db in ((first, -0.5), (last, 0.5)) for da in (-0.5, 0.5)]
    return np.concatenate(pts)


def feret_diameter_2d(mask2d: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray]:
    """Largest distance (mm) between two points of the union of a 2D mask's pixel rectangles.

    Args:
        mask2d: boolean ``(X, Y)`` mask; pixel ``(a, b)`` covers ``[a - 0.5, a + 0.5] × [b - 0.5, b + 0.5]``
            in index units.
        spacing: pixel size in mm along the two axes (they are orthogonal).

    Returns:
        ``(diameter_mm, endpoints)`` with ``endpoints`` a ``(2, 2)`` array of the two hull corners in
        continuous index units. An empty mask gives ``(0.0, zeros)``.

    Example::

        >>> m = np.zeros((20, 20), bool); m[2:12, 5:9] = True     # 10 × 4 pixels
        >>> round(feret_diameter_2d(m, (0.8, 1.5))[0], 6)            # hypot(10·0.8, 4·1.5)
        10.0
    """
    mask2d = np.asarray(mask2d, dtype=bool)
    if not mask2d.any():
        return 0.0, np.zeros((2, 2))
    scale = np.asarray(spacing, dtype=np.float64)
    pts = _row_extreme_corners(mask2d) * scale
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:  # unreachable for pixel rectangles (never collinear); keep every point
        hull = pts
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return float(np.sqrt(d2[a, b])), np.stack([hull[a], hull[b]]) / scale


def centroid(mask: np.ndarray) -> np.ndarray:
    """Mean voxel index of a non-empty boolean 3D mask (from its three axis projections, no index arrays)."""
    n = float(np.count_nonzero(mask))
    out = np.empty(3)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(mask, axis=other)
        out[axis] = float(np.dot(counts, np.arange(counts.size))) / n
    return out


def _longest_axial_diameter(mask: np.ndarray, geometry: Geometry) -> tuple[float, np.ndarray]:
    """Longest axial Feret diameter of a 3D mask and its endpoints as continuous input indices ``(2, 3)``."""
    step = orientation_step(geometry)
    oriented = step.apply(mask)
    sp = step.output_geometry.spacing
    best, best_pts = 0.0, np.zeros((2, 3))
    for k in np.flatnonzero(oriented.any(axis=(0, 1))):
        d, pts = feret_diameter_2d(oriented[:, :, k], (sp[0], sp[1]))
        if d > best:
            best = d
            best_pts = np.column_stack([pts, np.full(2, float(k))])
    # Oriented continuous index -> input continuous index: undo the flips, then the permutation.
    out_shape = np.asarray(step.output_geometry.shape, dtype=np.float64)
    idx = best_pts.copy()
    for n, flipped in enumerate(step.flips):
        if flipped:
            idx[:, n] = out_shape[n] - 1 - idx[:, n]
    original = np.empty_like(idx)
    for n, axis in enumerate(step.permutation):
        original[:, axis] = idx[:, n]
    return best, original


def measure_lesions(labels: np.ndarray, geometry: Geometry, *, tumour_label: int = 2,
                    components: Components | None = None) -> list[Lesion]:
    """Measure every tumour lesion of a label map (definitions in the module docstring).

    Args:
        labels: integer label map ``[x, y, z]`` on ``geometry``.
        geometry: its grid (spacing, origin, direction).
        tumour_label: the label measured.
        components: precomputed :func:`tumour_components` of ``labels == tumour_label``.

    Returns:
        The lesions, largest first.

    Example::

        >>> lab = np.zeros((40, 40, 10), np.uint8); lab[5:15, 5:9, 2:4] = 2
        >>> les = measure_lesions(lab, Geometry((40, 40, 10), (0.8, 1.5, 3.0)))
        >>> len(les), les[0].n_voxels, round(les[0].longest_axial_diameter_mm, 6)
        (1, 80, 10.0)
    """
    if components is None:
        components = tumour_components(np.asarray(labels) == tumour_label)
    if components.count == 0:
        return []
    voxel_ml = geometry.voxel_volume_ml
    order = np.argsort(-components.sizes, kind="stable")
    off = np.asarray(components.offset)
    boxes = ndimage.find_objects(components.labels)
    lesions = []
    for rank, c in enumerate(order, start=1):
        sl = boxes[c]
        sub = components.labels[sl] == c + 1
        sub_off = np.asarray([s.start for s in sl]) + off
        sub_geom = Geometry(sub.shape, geometry.spacing, tuple(geometry.index_to_physical(sub_off)),
                            geometry.direction)
        diameter, ends = _longest_axial_diameter(sub, sub_geom)
        ends_mm = sub_geom.index_to_physical(ends)
        center = centroid(sub) + sub_off
        lesions.append(Lesion(
            index=rank,
            n_voxels=int(components.sizes[c]),
            volume_ml=float(components.sizes[c]) * voxel_ml,
            centroid_voxel=tuple(float(v) for v in center),  # type: ignore[arg-type]
            centroid_mm=tuple(float(v) for v in geometry.index_to_physical(center)),  # type: ignore[arg-type]
            longest_axial_diameter_mm=diameter,
            diameter_endpoints_mm=(tuple(float(v) for v in ends_mm[0]),  # type: ignore[arg-type]
                                   tuple(float(v) for v in ends_mm[1])),
            bbox_voxel=(tuple(int(v) for v in sub_off),  # type: ignore[arg-type]
                        tuple(int(v) for v in sub_off + np.asarray(sub.shape) - 1)),
        ))
    return lesions
