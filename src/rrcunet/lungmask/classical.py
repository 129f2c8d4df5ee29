"""Classical (threshold + morphology) lung-region extractor: the default lung channel.

Owns :class:`ClassicalLungConfig` and :func:`extract_lungs_classical`. The paper obtains its lung
channel from a trained Coordinate-UNet (its ref. [31]); this extractor needs no weights, so the
package works out of the box, and it is written to keep what the network input needs: the
lung *region*, with tumours that touch the chest wall or the mediastinum filled in.

Steps (1–5 on a reduced grid of about ``working_mm`` voxels, all in the canonical LPS frame):

1. **Threshold** air-like voxels, ``HU < air_hu`` (−400, half-way between parenchyma ≈ −850 and
   soft tissue ≈ +40).
2. **Remove the air outside the body**: 3D air components touching the in-plane (left/right,
   anterior/posterior) faces of the volume, unless their median HU looks like lung
   (> ``outside_max_hu``) rather than room air, so a lung cut by a cropped field of view survives.
3. **Remove the trachea and main airways**: the trachea is found as a small air blob near the
   midline in the upper slices and grown in 3D with a strict threshold that is raised step by
   step until the grown volume "explodes" into the parenchyma (the adaptive region growing of
   Hu, Hoffman & Reinhardt, IEEE TMI 2001); the last non-leaking tree, dilated by one voxel for
   its wall, is removed.
4. **Select the lungs**: the largest air component and the second largest when it is at least
   ``min_second_fraction`` of it, plus smaller pieces that sit *above* lung (an apex cut off by
   scarring), not those below it (stomach and bowel gas).
5. **Fill holes and concavities** of each lung separately (a lung pair joined into one component
   is cut at the trachea's x): a 3D closing with a ball of ``fill_radius_mm``, restricted to the
   body, then 2D hole filling per axial slice. The closing fills the "bite" a solid tumour takes
   out of the lung where it touches the chest wall or the mediastinum (the paper's failure
   case) and the vessels; the wide cardiac and diaphragmatic concavities stay mostly open. The
   airway lumen is removed again afterwards.
6. **Back to the input grid**: nearest-neighbour expansion, then the boundary is refined on the
   full grid: one in-plane voxel is added where it is below ``boundary_hu`` (partial-volume lung
   at the pleura) or next to filled tissue (the tumour's last voxels against the wall); then the
   orientation is undone.

Measured on NSCLC-Radiomics LUNG1-001 (512×512×134): see docs/preprocessing.md.

Limitations: heavy emphysema (parenchyma < −950 HU) can stop the airway growing early (the
airways then stay in the mask); collapsed or consolidated lung is not air-like and is missed
unless it lies inside a closing's reach; tumours wider than about twice ``fill_radius_mm``
against the wall are only partly filled (about a quarter of the 360 mL tumour of the IBSI
phantom) — the trained Coordinate-UNet extractor is the remedy there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from rrcunet import heap
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.volume import Volume
from rrcunet.preprocessing.crop import bounding_box
from rrcunet.preprocessing.orientation import OrientationStep, orientation_step

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ClassicalLungConfig:
    """Options of the classical extractor (keyword-only; defaults tuned on physics, not on one scan).

    Args:
        air_hu: voxels below this HU are air-like (lung, airways, outside air). Default −400.
        outside_max_hu: a border-touching air component whose median HU is below this is
            outside air; otherwise it is kept as (cropped) lung. Default −950.
        working_mm: approximate voxel size (mm) of the reduced working grid, one value or one per
            axis of the LPS frame (default 2 mm in-plane, 3 mm along z); each axis is shrunk by the
            integer factor ``max(1, round(working_mm / spacing))``.
        fill_radius_mm: radius of the 3D closing that fills tumour bites and concavities. Default 15.
        trachea_max_area_cm2: largest axial cross-section accepted as the trachea seed. Default 6.
        airway_max_ml: an airway tree larger than this means the growing leaked. Default 300.
        min_second_fraction: keep the second-largest air component as the other lung when it is at
            least this fraction of the largest. Default 0.1.
        min_lung_ml: a main lung is at least this large. Default 50.
        min_piece_ml: smaller air pieces kept with a lung (see :func:`_select_lungs`) are at least
            this large. Default 2.
        remove_airways: set False to keep the trachea and bronchi in the mask.
        boundary_hu: full-resolution voxels next to the mask and below this HU are added back
            (partial-volume lung at the pleura). Default −200.
        boundary_steps: how many in-plane voxels that refinement may add. Default 1.
    """

    air_hu: float = -400.0
    outside_max_hu: float = -950.0
    working_mm: float | tuple[float, float, float] = (2.0, 2.0, 3.0)
    fill_radius_mm: float = 15.0
    trachea_max_area_cm2: float = 6.0
    airway_max_ml: float = 300.0
    min_second_fraction: float = 0.1
    min_lung_ml: float = 50.0
    min_piece_ml: float = 2.0
    remove_airways: bool = True
    boundary_hu: float = -200.0
    boundary_steps: int = 1

    def __post_init__(self) -> None:
        working = (self.working_mm,) * 3 if np.isscalar(self.working_mm) else tuple(self.working_mm)  # type: ignore[arg-type]
        if len(working) != 3 or not all(np.isfinite(w) and w > 0 for w in working):
            raise ConfigError(
                f"ClassicalLungConfig.working_mm must be one or three positive mm values, not {self.working_mm!r}"
            )
        object.__setattr__(self, "working_mm", tuple(float(w) for w in working))
        for name in ("fill_radius_mm", "trachea_max_area_cm2", "airway_max_ml"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"ClassicalLungConfig.{name} must be a positive number, not {value!r}")
        if not (isinstance(self.boundary_steps, int) and self.boundary_steps >= 0):
            raise ConfigError(f"boundary_steps must be a non-negative integer, not {self.boundary_steps!r}")
        if not 0 <= self.min_second_fraction <= 1:
            raise ConfigError(f"min_second_fraction must be in [0, 1], not {self.min_second_fraction}")


# --------------------------------------------------------------------------------------------
# grid helpers


#: Full-resolution slices per slab when the mask goes back to the full grid (:func:`_to_full_grid`).
SLAB_SLICES: int = 16


def _reduce(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block mean by integer ``factors`` (the last block may be partial), as float32 (X', Y', Z').

    Done in slabs along x, so an int16 512×512×600 scan never needs a full float32 copy.
    """
    rows = factors[0] * max(1, 4_000_000 // max(1, factors[0] * hu.shape[1] * hu.shape[2]))
    parts = []
    for x0 in range(0, hu.shape[0], rows):
        slab = torch.from_numpy(np.ascontiguousarray(hu[x0:x0 + rows], dtype=np.float32))
        if factors != (1, 1, 1):
            slab = F.avg_pool3d(slab[None, None], kernel_size=factors, stride=factors, ceil_mode=True)[0, 0]
        parts.append(slab.numpy())
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def _expand(mask: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a reduced mask back to the block grid of ``shape``.

    (For a binary mask and a factor of 2, trilinear interpolation thresholded at 0.5 gives exactly
    this, so nothing is gained by interpolating; the boundary is refined on the full grid.)
    """
    out = mask
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


def _dilate_inplane(mask: np.ndarray) -> np.ndarray:
    """3×3 in-plane (x, y) binary dilation by separable shifts (faster than ndimage on 35 M voxels)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _refine_boundary(mask: np.ndarray, filled: np.ndarray, hu: np.ndarray, boundary_hu: float,
                     steps: int) -> np.ndarray:
    """Restore on the full grid the boundary voxels that the reduced grid rounds away.

    Two in-plane growths, each by up to ``steps`` voxels: into voxels below ``boundary_hu``
    (partial-volume lung at the pleura), and around ``filled`` — the tissue the fill step added
    (a tumour against the wall), whatever its HU, since the tumour/wall interface is invisible
    and the reduced grid would otherwise cut the tumour's last full-resolution voxels. Only the
    bounding box of the mask (plus ``steps``) is touched.
    """
    if steps <= 0 or not mask.any():
        return mask
    box = _bbox_slices(mask, (steps, steps, 0))
    if box is None:
        return mask
    sub = mask[box]
    sub_filled = filled[box]
    low = hu[box] < boundary_hu
    for _ in range(steps):
        sub_filled = _dilate_inplane(sub_filled)
        sub = sub | (_dilate_inplane(sub) & low) | sub_filled
    out = mask.copy()
    out[box] = sub
    return out


def _to_full_grid(mask: np.ndarray, filled: np.ndarray, factors: tuple[int, int, int], hu_full: np.ndarray,
                  cfg: ClassicalLungConfig) -> np.ndarray:
    """The reduced lung ``mask`` on the full grid of ``hu_full``, boundary refined (:func:`_refine_boundary`).

    Every step after the expansion is in-plane, so the volume is done in slabs of whole reduced
    slices (at least :data:`SLAB_SLICES` full slices): the working arrays are a slab's, not the
    volume's, which matters when a cohort run prepares cases side by side (issue 21). The result
    is the same voxels as expanding and refining the whole volume at once (tested). Two threads
    take the slabs (each writes its own slices; NumPy releases the GIL in the array operations):
    ``python benchmarks/preprocess_speed.py --threads 2 --repeats 5 --slices 134``, alternating
    with one slab after the other, twice (2026-12-06, Intel Xeon with AMX-BF16, issue 23): the
    extraction on LUNG1-001 best 1.36 and 1.36 s against 1.41 and 1.41 s.
    """
    shape = hu_full.shape
    fz = factors[2]
    step = fz * max(1, -(-SLAB_SLICES // fz))
    out = np.empty(shape, dtype=bool)

    def slab(z0: int) -> None:
        z1 = min(shape[2], z0 + step)
        r0, r1 = z0 // fz, -(-z1 // fz)
        part = (shape[0], shape[1], z1 - z0)
        full = _expand(mask[:, :, r0:r1], factors, part)
        grown = _expand(filled[:, :, r0:r1], factors, part)
        out[:, :, z0:z1] = _refine_boundary(full, grown, hu_full[:, :, z0:z1], cfg.boundary_hu, cfg.boundary_steps)

    _in_two_threads(slab, list(range(0, shape[2], step)))
    return out


def _ball_closing(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm`` via two exact Euclidean distance transforms.

    Reimplemented (rather than ``ndi.binary_closing`` with a structuring element) because a
    20 mm ball is ~10⁴ voxels and the EDT form is one or two orders of magnitude faster. The
    volume is padded by the radius so the closing does not stick to the array edge. The distance
    transforms are SimpleITK's (Maurer's exact algorithm, squared distances against the squared
    radius) rather than ``scipy.ndimage.distance_transform_edt``, several times faster with the same
    voxels (issue 23; tested against SciPy's form; the extraction on LUNG1-001 in
    docs/preprocessing.md). Voxels at exactly the radius can only differ where the float32 squared
    distance rounds across it.
    """
    pad = [int(math.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad])
    r2 = radius_mm * radius_mm
    dilated = _squared_distance_to(padded, spacing) <= r2
    closed = _squared_distance_to(~dilated, spacing) > r2
    return closed[pad[0]:-pad[0], pad[1]:-pad[1], pad[2]:-pad[2]]


def _squared_distance_to(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Squared distance (mm², float32) of every voxel centre to the nearest voxel of ``mask`` (0 on
    it): ``scipy.ndimage.distance_transform_edt(~mask, sampling=spacing) ** 2``, by SimpleITK's
    ``SignedMaurerDistanceMap`` (whose outside distances are those; its inside ones are to the
    object's own boundary voxels, so they are not used)."""
    import SimpleITK as sitk  # the package's image I/O dependency; lazy like the readers'

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).view(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    signed = sitk.SignedMaurerDistanceMapImageFilter()
    signed.SetUseImageSpacing(True)
    signed.SetSquaredDistance(True)
    signed.SetInsideIsPositive(False)  # outside the mask positive
    signed.SetBackgroundValue(0)
    d = sitk.GetArrayFromImage(signed.Execute(image)).transpose(2, 1, 0)
    return np.maximum(d, 0.0)


def _working_grid(ct: Volume, cfg: ClassicalLungConfig) -> tuple[
        OrientationStep, np.ndarray, tuple[int, int, int], np.ndarray, tuple[float, float, float]]:
    """The CT in the canonical LPS frame (orientation step, full-resolution HU), the integer
    reduction factors, the reduced HU grid and its spacing (mm)."""
    orient = orientation_step(ct.geometry)
    hu_full = np.ascontiguousarray(orient.apply(np.asarray(ct.array)))
    geo = orient.output_geometry
    factors = tuple(max(1, int(round(w / s))) for w, s in zip(cfg.working_mm, geo.spacing))  # type: ignore[arg-type]
    hu = _reduce(hu_full, factors)  # type: ignore[arg-type]
    spacing = tuple(s * f for s, f in zip(geo.spacing, factors))
    return orient, hu_full, factors, hu, spacing  # type: ignore[return-value]


def _bbox_slices(mask: np.ndarray, pad: tuple[int, int, int]) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` grown by ``pad`` voxels per axis (clipped), None when empty:
    the preprocessing's :func:`~rrcunet.preprocessing.crop.bounding_box` (axis projections, several
    times faster than ``ndimage.find_objects`` on a uint8 copy; issue 23)."""
    box = bounding_box(mask)
    if box is None:
        return None
    return tuple(slice(max(0, a - p), min(n, b + p))  # type: ignore[return-value]
                 for a, b, p, n in zip(*box, pad, mask.shape))


def _dilated_once(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_dilation(mask, iterations=1)`` (6-connected) worked out on the mask's bounding box
    grown by one voxel, not on the whole grid: the same voxels."""
    box = _bbox_slices(mask, (1, 1, 1))
    if box is None:
        return mask.copy()
    out = np.zeros_like(mask)
    out[box] = ndi.binary_dilation(mask[box], iterations=1)
    return out


def _fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial (last-axis) slice."""
    out = mask.copy()
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        out[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    return out


# --------------------------------------------------------------------------------------------
# steps


def _outside_air(air: np.ndarray, hu: np.ndarray, cfg: ClassicalLungConfig) -> np.ndarray:
    """Air components touching the in-plane faces of the volume whose median HU is room air.

    The *median* (computed as "at least half the voxels below ``outside_max_hu``") and not the
    mean: a thin sliver of outside air in a cropped field of view has a large partial-volume rim
    at the skin and the table that pulls its mean up to lung-like values (−930 HU on the IBSI
    phantom), while its median stays at −1000; a lung cut by the field of view has a median near
    −850.
    """
    # labels as intp: the counts below (bincount) and the lookup would each convert an int32 copy
    labels, n = ndi.label(air, output=np.intp)
    if n == 0:
        return np.zeros_like(air)
    border = np.zeros(n + 1, dtype=bool)
    for face in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[np.unique(face)] = True
    border[0] = False
    if border.any():
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        # counted from the labels of the voxels below the threshold, not as bincount weights (those
        # would be a float64 copy of the whole grid)
        below = np.bincount(labels[hu < cfg.outside_max_hu], minlength=n + 1)
        border &= below >= 0.5 * counts
    return border[labels]


def _find_trachea_seed(candidate: np.ndarray, spacing: tuple[float, float, float],
                       cfg: ClassicalLungConfig) -> tuple[int, int, int] | None:
    """Voxel of a small, round, central air blob in the upper part of the chest (the trachea)."""
    zs = np.flatnonzero(candidate.any(axis=(0, 1)))
    if zs.size == 0:
        return None
    pixel_cm2 = spacing[0] * spacing[1] / 100.0
    x_any = np.flatnonzero(candidate.any(axis=(1, 2)))
    x_mid = 0.5 * (x_any[0] + x_any[-1])
    x_tol = max(3.0, 0.25 * (x_any[-1] - x_any[0] + 1))
    top, bottom = zs[-1], zs[0]
    # Search the upper 40 % of the air-containing slab, from the top down.
    for k in range(top, top - max(1, int(0.4 * (top - bottom + 1))), -1):
        labels, n = ndi.label(candidate[:, :, k])
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())[1:] * pixel_cm2
        centres = ndi.center_of_mass(candidate[:, :, k], labels, index=np.arange(1, n + 1))
        best = None
        for i, (area, (cx, cy)) in enumerate(zip(areas, centres)):
            if not 0.3 <= area <= cfg.trachea_max_area_cm2 or abs(cx - x_mid) > x_tol:
                continue
            score = abs(cx - x_mid)
            if best is None or score < best[0]:
                best = (score, i + 1)
        if best is not None:
            xs, ys = np.nonzero(labels == best[1])
            j = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
            return int(xs[j]), int(ys[j]), int(k)
    return None


def _grow_airways(hu: np.ndarray, candidate: np.ndarray, seed: tuple[int, int, int],
                  spacing: tuple[float, float, float], cfg: ClassicalLungConfig) -> np.ndarray | None:
    """Adaptive-threshold region growing of the airway tree from ``seed``.

    The threshold rises from −990 HU in 15 HU steps; the last tree that neither exceeds
    ``airway_max_ml`` nor more than doubles from one step to the next is returned (None when even
    the first one leaks). The growing is confined to a box around the seed (± 80 mm left-right
    and anterior-posterior, everything below it) to keep it fast; the main airways never leave it.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    reach = [int(math.ceil(80.0 / s)) for s in spacing[:2]]
    box = (slice(max(0, seed[0] - reach[0]), seed[0] + reach[0] + 1),
           slice(max(0, seed[1] - reach[1]), seed[1] + reach[1] + 1),
           slice(0, seed[2] + 1))
    import SimpleITK as sitk  # the package's image I/O dependency; lazy like the readers'

    # the candidate's HU, +inf elsewhere: the tree at a threshold is the seed's 6-connected region
    # below it, which SimpleITK's flood fill visits alone, rather than labelling the whole box at every
    # step as ndimage.label did (the same voxels, tested; issue 23)
    sub = np.where(candidate[box], hu[box], np.float32(np.inf)).astype(np.float32, copy=False)
    local_seed = (seed[0] - box[0].start, seed[1] - box[1].start, seed[2])
    image = sitk.GetImageFromArray(sub)  # sitk indices are the array's axes reversed
    flood = sitk.ConnectedThresholdImageFilter()
    flood.SetSeedList([tuple(int(i) for i in local_seed[::-1])])
    flood.SetConnectivity(flood.FaceConnectivity)
    flood.SetLower(-math.inf)
    flood.SetReplaceValue(1)
    best: np.ndarray | None = None
    previous = 0.0
    for threshold in np.arange(-990.0, cfg.air_hu, 15.0):
        if not sub[local_seed] < threshold:
            continue
        # HU < threshold, as the filter's inclusive upper bound: the float32 just below it
        flood.SetUpper(float(np.nextafter(np.float32(threshold), np.float32(-np.inf))))
        grown = sitk.GetArrayFromImage(flood.Execute(image)).view(bool)
        volume = grown.sum() * voxel_ml
        if volume > cfg.airway_max_ml or (previous > 5.0 and volume > 2.0 * previous):
            break
        best, previous = grown, volume
    if best is None:
        return None
    out = np.zeros_like(candidate)
    out[box] = best
    return out


def _select_lungs(mask: np.ndarray, voxel_ml: float, cfg: ClassicalLungConfig) -> list[np.ndarray]:
    """The one or two main lungs, each with the smaller air pieces that belong to it.

    The main lungs are the largest component and the second largest when it is at least
    ``min_second_fraction`` of the largest. A smaller piece (≥ ``min_piece_ml``) is kept, and
    joined to the nearer main lung, when most of its voxels have main-lung voxels *below* them in
    the same (x, y) column: an apex cut off by scarring or a lobe isolated by consolidation has
    lung below it, while gas in the stomach or colon only has lung above it (the diaphragm dome).
    """
    labels, n = ndi.label(mask, output=np.intp)  # intp: bincount takes it without a converted copy
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(-sizes)
    first = order[0]
    if sizes[first] * voxel_ml < cfg.min_lung_ml:
        return []
    mains = [int(first)]
    if n > 1:
        second = order[1]
        if sizes[second] >= cfg.min_second_fraction * sizes[first] and sizes[second] * voxel_ml >= cfg.min_lung_ml:
            mains.append(int(second))
    lungs = [labels == i for i in mains]
    main_union = np.logical_or.reduce(lungs)
    # lowest main-lung slice in each (x, y) column (Z when none)
    nz = main_union.shape[2]
    lowest = np.where(main_union.any(axis=2), np.argmax(main_union, axis=2), nz)
    centroids = [np.array([np.mean(ix) for ix in np.nonzero(m[::2, ::2, ::2])]) * 2 for m in lungs]
    objects = ndi.find_objects(labels)
    min_voxels = cfg.min_piece_ml / voxel_ml
    for i in order[len(mains):]:
        if sizes[i] < min_voxels:
            break
        box = objects[i - 1]
        xs, ys, zs = np.nonzero(labels[box] == i)
        xs, ys, zs = xs + box[0].start, ys + box[1].start, zs + box[2].start
        if np.mean(lowest[xs, ys] < zs) < 0.5:
            continue
        centre = np.array([xs.mean(), ys.mean(), zs.mean()])
        nearest = int(np.argmin([np.linalg.norm(centre - c) for c in centroids]))
        lungs[nearest][xs, ys, zs] = True
    return lungs


def _split_left_right(lung: np.ndarray, x_mid: int) -> list[np.ndarray]:
    """Cut one component into right (x < ``x_mid``) and left parts when it spans both sides.

    In LPS +x is the patient's left. A component with less than 20 % of its voxels on one side
    is a single lung (e.g. a cropped field of view) and is returned whole.
    """
    right = lung.copy()
    right[x_mid:] = False
    left = lung & ~right
    n_right, n_left = int(right.sum()), int(left.sum())
    if min(n_right, n_left) < 0.2 * (n_right + n_left):
        return [lung]
    return [right, left]


def _fill_lung(lung: np.ndarray, inside: np.ndarray, spacing: tuple[float, float, float],
               cfg: ClassicalLungConfig) -> np.ndarray:
    """Hole filling + bounded closing of one lung, on its bounding box for speed."""
    pad = tuple(int(math.ceil(cfg.fill_radius_mm / s)) + 1 for s in spacing)
    box = _bbox_slices(lung, pad)  # type: ignore[arg-type]
    if box is None:
        return lung
    sub = lung[box]
    closed = _ball_closing(sub, cfg.fill_radius_mm, spacing) & inside[box]
    closed = _fill_holes_2d(closed | sub)
    out = np.zeros_like(lung)
    out[box] = closed
    return out


def _map_sides(fill: Callable[[np.ndarray], np.ndarray], lungs: list[np.ndarray]) -> list[np.ndarray]:
    """``fill`` of each lung, the two lungs in two threads (:func:`_in_two_threads`): its distance
    maps (SimpleITK) and hole filling (SciPy) run in C and release the GIL for much of their time, so
    the second core works on the other lung (issue 23). Same voxels either way."""
    return _in_two_threads(fill, lungs)


def _in_two_threads(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``[fn(item) for item in items]``, in two threads when there are two items or more (the first
    error is raised here)."""
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="rrcunet-lung") as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------------------------
# entry point


def extract_lungs_classical(ct: Volume, config: ClassicalLungConfig | None = None) -> Volume:
    """Lung region of a chest CT (0/1 uint8 label Volume on ``ct``'s grid), tumours filled in.

    Args:
        ct: CT in HU (any orientation, spacing and dtype).
        config: :class:`ClassicalLungConfig`; defaults when None.

    Returns:
        ``Volume(kind="label")`` with exactly ``ct.geometry``; 1 = lung region, 0 elsewhere.
        An all-zero mask (logged as a warning) when no lung-like air is found. Its ``meta``
        holds ``body_air_ml``: the air-like volume inside the body (steps 1–2), see :func:`body_air_ml`.

    Raises:
        InputError: when ``ct`` is a label map.
    """
    cfg = config or ClassicalLungConfig()
    if ct.kind != "image":
        raise InputError(f"extract_lungs needs a CT image in HU, got a Volume of kind {ct.kind!r}")
    # The result is allocated before the working arrays and filled at the end. The working arrays
    # (tens of MB each, a hundred or more in all) are temporaries: they reuse freed heap memory
    # (rrcunet.heap.temporaries, the CLI's settings only) instead of fresh pages; the result, which
    # lives on, must not come from that kept heap (it fragmented it for the float32 network pass).
    out = np.zeros(ct.geometry.shape, dtype=np.uint8)
    with heap.temporaries():
        meta = _extract_into(out, ct, cfg)
    return Volume(out, ct.geometry, "label", meta)


def _extract_into(out: np.ndarray, ct: Volume, cfg: ClassicalLungConfig) -> dict:
    """Steps 1-6 of :func:`extract_lungs_classical`, the lung region written into ``out`` (zeros
    when none is found); returns the result's ``meta``."""
    source = ct.meta.get("source", "the CT")
    orient, hu_full, factors, hu, spacing = _working_grid(ct, cfg)
    voxel_ml = float(np.prod(spacing)) / 1000.0

    # 1-2. air, minus the air outside the body
    air = hu < cfg.air_hu
    outside = _outside_air(air, hu, cfg)
    candidate = air & ~outside
    inside_body = ~outside
    body_air_ml = float(np.count_nonzero(candidate)) * voxel_ml

    # 3. trachea and main airways
    airway = None
    seed = None
    if cfg.remove_airways:
        seed = _find_trachea_seed(candidate, spacing, cfg)  # type: ignore[arg-type]
        if seed is not None:
            airway = _grow_airways(hu, candidate, seed, spacing, cfg)  # type: ignore[arg-type]
        if airway is None:
            logger.info("no trachea found in %s; airways are kept in the lung mask", source)
        else:
            airway = _dilated_once(airway)
            candidate &= ~airway

    # 4. the lungs
    lungs = _select_lungs(candidate, voxel_ml, cfg)
    # body_air_ml: every air-like voxel inside the body (lungs, airways, gas), for the quality check
    # "lung mask much smaller than the body's air" (rrcunet.inference.quality)
    meta = {"derived_from": source, "lungmask_method": "classical", "body_air_ml": body_air_ml}
    if not lungs:
        logger.warning("no lung-like air found in %s; returning an empty lung mask", source)
        return meta

    # 5. holes and concavities, per lung
    if len(lungs) == 1 and seed is not None:
        lungs = _split_left_right(lungs[0], seed[0])
    mask = np.zeros_like(candidate)
    for filled in _map_sides(lambda side: _fill_lung(side, inside_body, spacing, cfg), lungs):  # type: ignore[arg-type]
        mask |= filled
    if airway is not None:
        # the closing must not put the airway lumen back (intrapulmonary bronchi in it are few mL)
        mask &= ~airway

    # 6. back to the input grid, refining the pleural boundary at full resolution
    full = _to_full_grid(mask, mask & ~air, factors, hu_full, cfg)
    out.view(bool)[...] = orient.invert(full)
    return meta


def body_air_ml(ct: Volume, config: ClassicalLungConfig | None = None) -> float:
    """Volume (mL) of the air-like voxels inside the body: steps 1–2 of :func:`extract_lungs_classical`
    (``HU < air_hu`` on the reduced grid, minus the room air touching the in-plane faces). The lungs
    are most of it; the airways and gas in the gut the rest. The extractor records the same figure
    in its output's ``meta``; this recomputes it for a lung mask made elsewhere."""
    cfg = config or ClassicalLungConfig()
    _, _, _, hu, spacing = _working_grid(ct, cfg)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    air = hu < cfg.air_hu
    return float(np.count_nonzero(air & ~_outside_air(air, hu, cfg))) * voxel_ml
