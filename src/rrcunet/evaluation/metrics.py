"""Segmentation metrics of the paper (§4.3–4.4) plus tumour HD95 and surface Dice, and their aggregation.

This module owns:

* the per-case evaluation :func:`evaluate_case` (and :func:`evaluate_volumes` for two
  :class:`~rrcunet.io.volume.Volume`), returning a frozen :class:`CaseMetrics`: Dice, IoU and F1
  over the three labels (macro and micro averaged) and for the tumour alone, tumour HD95 (mm) and
  tumour surface Dice at a tolerance (2 mm by default), all spacing-aware;
* the two aggregations, named explicitly because they differ by 0.1 or more on lung tumours and the
  paper does not say which it used: :func:`aggregate_mean_of_cases` (the mean of per-case scores)
  and :func:`aggregate_voxel_pooled` (TP/FP/FN summed over cases first); :func:`summarize` gives both;
* the building blocks: :func:`surface_distances`, :func:`hd95`, :func:`surface_dice`
  (:func:`confusion_counts`, :func:`overlap_scores` and the Figure 7 histogram
  :func:`dice_histogram` are :mod:`rrcunet.scores`', re-exported here).

Conventions (see ``docs/metrics.md``):

* Arrays are integer label maps indexed ``[x, y, z]``; ``spacing`` is mm per axis in the same order.
  Labels: 0 background, 1 lung, 2 tumour.
* A class absent from both prediction and ground truth scores Dice = IoU = F1 = 1, HD95 = 0 mm and
  surface Dice = 1, and the case is flagged (:attr:`CaseMetrics.tumour_absent_in_both`). Present in
  exactly one of them: Dice = IoU = F1 = 0, surface Dice = 0 and HD95 = +inf.
* Surfaces are the voxels of a mask that have a 6-neighbour outside it (the image border counts as
  outside): ``mask & ~binary_erosion(mask)``, as :func:`monai.metrics.utils.get_mask_edges` without
  sub-voxel areas. Distances are Euclidean in mm between surface-voxel centres.
* HD95 is MONAI's: ``max(P95(d(pred→gt)), P95(d(gt→pred)))`` with linear interpolation between
  order statistics. Surface Dice is MONAI's (Nikolov et al. 2021 with voxel counts instead of
  surfel areas): ``(#pred surface within τ + #gt surface within τ) / (#pred surface + #gt surface)``,
  "within" meaning ``d <= τ``.

Why not call MONAI's metrics directly: they take one-hot torch tensors of the whole volume (for
3 classes at 512×512×134 that is ~100M floats per call), compute the surfaces of every class, and
mark empty cases NaN; here the overlap counts are 3 boolean passes over the label map and the
surfaces are taken on each mask's own bounding box, so a 512×512×134 case takes about a second.
The test-suite checks these functions against MONAI's DiceMetric, MeanIoU,
compute_hausdorff_distance and compute_surface_dice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from rrcunet.errors import InputError
# re-exported: part of this module's API
from rrcunet.scores import DICE_HISTOGRAM_EDGES, DiceHistogram, confusion_counts, dice_histogram, overlap_scores
from rrcunet.tasks import CLASS_NAMES, TUMOUR_LABEL

__all__ = [
    "CLASS_NAMES",
    "DICE_HISTOGRAM_EDGES",
    "TUMOUR_LABEL",
    "CaseMetrics",
    "DiceHistogram",
    "EvaluationSummary",
    "MeanOfCases",
    "VoxelPooled",
    "aggregate_mean_of_cases",
    "aggregate_voxel_pooled",
    "confusion_counts",
    "dice_histogram",
    "evaluate_case",
    "evaluate_volumes",
    "hd95",
    "overlap_scores",
    "surface_dice",
    "surface_distances",
    "summarize",
]



# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------
def _as_label_array(a: Any, name: str, class_names: Sequence[str], case: str) -> np.ndarray:
    """Return ``a`` as an integer numpy array with values in [0, len(class_names)-1], or raise InputError."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor (MONAI MetaTensor included)
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{case}{name} holds non-integer values (dtype {arr.dtype}); expected an integer label map "
                             "(labels resampled with nearest neighbour)")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{case}{name} must be an integer label map, not dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{case}{name} is empty (shape {arr.shape})")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > len(class_names) - 1:
        named = ", ".join(f"{i} {c}" for i, c in enumerate(class_names))
        raise InputError(f"{case}{name} holds labels in [{lo}, {hi}]; expected labels 0..{len(class_names) - 1} "
                         f"({named})")
    return arr


def _as_spacing(spacing: Any, ndim: int, case: str = "") -> tuple[float, ...]:
    try:
        sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=np.float64)))
    except (TypeError, ValueError):
        raise InputError(f"{case}spacing must be {ndim} positive numbers in mm, not {spacing!r}") from None
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"{case}spacing must be {ndim} positive finite numbers in mm (one per array axis, "
                         f"[x, y, z] order), not {spacing!r}")
    return sp


def _as_mask_pair(pred: Any, gt: Any, spacing: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    p = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred).astype(bool, copy=False)
    g = np.asarray(gt.detach().cpu().numpy() if hasattr(gt, "detach") else gt).astype(bool, copy=False)
    if p.shape != g.shape:
        raise InputError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}; "
                         "resample the prediction onto the ground-truth grid first")
    return p, g, _as_spacing(spacing, p.ndim)


# --------------------------------------------------------------------------------------------------
# overlap scores
# --------------------------------------------------------------------------------------------------
def _scores_from_counts(counts: np.ndarray) -> dict[str, Any]:
    """Macro, micro and per-class scores from an ``(n_classes, 3)`` TP/FP/FN array (ints or mm³)."""
    per_class = [overlap_scores(*row) for row in counts]
    dice = tuple(d for d, _ in per_class)
    iou = tuple(j for _, j in per_class)
    micro_dice, micro_iou = overlap_scores(*counts.sum(axis=0))
    return {
        "dice_per_class": dice,
        "iou_per_class": iou,
        "dice_macro": float(np.mean(dice)),
        "iou_macro": float(np.mean(iou)),
        "f1_macro": float(np.mean(dice)),
        "dice_micro": micro_dice,
        "iou_micro": micro_iou,
        "f1_micro": micro_dice,
    }


# --------------------------------------------------------------------------------------------------
# surface distances
# --------------------------------------------------------------------------------------------------
def _surface_points(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Physical coordinates (mm, ``(n, ndim)``) of the surface voxels of a boolean mask.

    The surface is taken on the mask's bounding box padded by one empty voxel, so the cost depends
    on the object, not on the volume, and the image border counts as outside (as in MONAI).
    """
    if not mask.any():
        return np.zeros((0, mask.ndim), dtype=np.float64)
    lo = []
    slices = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(int(idx[0]))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    box = np.pad(mask[tuple(slices)], 1, mode="constant", constant_values=False)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    surface = box & ~ndimage.binary_erosion(box, structure=structure, border_value=0)
    idx = np.argwhere(surface).astype(np.float64)
    idx += np.asarray(lo, dtype=np.float64) - 1.0  # undo the crop and the 1-voxel pad
    return idx * np.asarray(spacing, dtype=np.float64)


def surface_distances(pred: Any, gt: Any, spacing: Sequence[float] | float) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction surface voxel to the ground-truth surface, and back.

    Args:
        pred, gt: boolean masks (or 0/1 arrays) of one shape, ``[x, y, z]``.
        spacing: voxel size in mm per axis (same order), or one number for isotropic voxels.

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``, 1-D float arrays. If the *other* surface is empty, every
        distance is ``+inf``; an empty mask gives an empty array.
    """
    p, g, sp = _as_mask_pair(pred, gt, spacing)
    return _surface_distances(p, g, sp)


def _surface_distances(p: np.ndarray, g: np.ndarray, sp: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    # Surfaces are sparse (a tumour has ~1e4 surface voxels in a 3.5e7-voxel CT), so a k-d tree
    # over surface points is exact and far cheaper than a full-volume distance transform.
    pts_p = _surface_points(p, sp)
    pts_g = _surface_points(g, sp)

    def directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if len(a) == 0:
            return np.zeros(0, dtype=np.float64)
        if len(b) == 0:
            return np.full(len(a), np.inf)
        return cKDTree(b).query(a, k=1)[0]

    return directed(pts_p, pts_g), directed(pts_g, pts_p)


def _hd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, percentile: float) -> float:
    if len(d_pg) == 0 and len(d_gp) == 0:
        return 0.0  # both empty: convention
    if len(d_pg) == 0 or len(d_gp) == 0:
        return math.inf  # exactly one empty
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def _sd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, tolerance_mm: float) -> float:
    total = len(d_pg) + len(d_gp)
    if total == 0:
        return 1.0  # both empty: convention
    return float((np.count_nonzero(d_pg <= tolerance_mm) + np.count_nonzero(d_gp <= tolerance_mm)) / total)


def hd95(pred: Any, gt: Any, spacing: Sequence[float] | float, *, percentile: float = 95.0) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the surfaces of two masks.

    ``max(P(d_pred→gt), P(d_gt→pred))`` with ``P`` the ``percentile``-th percentile (linear
    interpolation, as ``torch.quantile`` in MONAI). Both masks empty → 0.0; exactly one empty → ``inf``.

    Example::

        >>> import numpy as np
        >>> a = np.zeros((3, 3, 3), bool); a[1, 1, 0] = True
        >>> b = np.zeros((3, 3, 3), bool); b[1, 1, 2] = True
        >>> hd95(a, b, spacing=(0.7, 0.7, 2.5))   # two slices apart at 2.5 mm
        5.0
    """
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], not {percentile}")
    p, g, sp = _as_mask_pair(pred, gt, spacing)
    return _hd_from_distances(*_surface_distances(p, g, sp), percentile)


def surface_dice(pred: Any, gt: Any, spacing: Sequence[float] | float, *, tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice at ``tolerance_mm``: the share of both surfaces within the tolerance of the other.

    ``(#{pred surface: d <= τ} + #{gt surface: d <= τ}) / (#pred surface + #gt surface)``, counting
    surface voxels (MONAI's ``compute_surface_dice`` with ``use_subvoxels=False``). Both masks empty
    → 1.0; exactly one empty → 0.0.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise InputError(f"tolerance_mm must be a finite number >= 0, not {tolerance_mm}")
    p, g, sp = _as_mask_pair(pred, gt, spacing)
    return _sd_from_distances(*_surface_distances(p, g, sp), tolerance_mm)


# --------------------------------------------------------------------------------------------------
# per case
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseMetrics:
    """All scores of one case (prediction vs ground truth). Immutable; :meth:`as_dict` flattens it.

    "3 labels" scores (background, lung, tumour):

    * ``*_macro``: the mean over the classes of the per-class score;
    * ``*_micro``: the score of TP/FP/FN summed over the classes. For hard label maps every wrong
      voxel is one FP (of the predicted class) and one FN (of the true class), so
      ``dice_micro == f1_micro == voxel accuracy`` and ``iou_micro == acc / (2 - acc)``.

    F1 (paper Eq. 7, ``2TP / (2TP + FP + FN)``) equals Dice (Eq. 5) for hard labels; the ``f1_*``
    fields exist so each paper column has a name.

    Empty-mask conventions: see the module docstring; ``tumour_absent_in_both``,
    ``tumour_missed`` and ``tumour_false_alarm`` flag those cases.
    """

    case_id: str | None
    spacing: tuple[float, ...]
    class_names: tuple[str, ...]
    tumour_label: int
    counts: tuple[tuple[int, int, int], ...]
    """Per class ``(TP, FP, FN)`` in voxels; what :func:`aggregate_voxel_pooled` sums."""
    dice_per_class: tuple[float, ...]
    iou_per_class: tuple[float, ...]
    dice_macro: float
    iou_macro: float
    f1_macro: float
    dice_micro: float
    iou_micro: float
    f1_micro: float
    tumour_dice: float
    tumour_iou: float
    tumour_f1: float
    tumour_hd95_mm: float
    """``inf`` when exactly one of prediction/ground truth has tumour; 0.0 when neither has."""
    tumour_surface_dice: float
    surface_tolerance_mm: float
    tumour_voxels_gt: int
    tumour_voxels_pred: int

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def tumour_volume_gt_ml(self) -> float:
        return self.tumour_voxels_gt * self.voxel_volume_mm3 / 1000.0

    @property
    def tumour_volume_pred_ml(self) -> float:
        return self.tumour_voxels_pred * self.voxel_volume_mm3 / 1000.0

    @property
    def tumour_absent_in_both(self) -> bool:
        """No tumour in ground truth nor prediction (scores set by convention, see module doc)."""
        return self.tumour_voxels_gt == 0 and self.tumour_voxels_pred == 0

    @property
    def tumour_missed(self) -> bool:
        """Tumour in the ground truth, none predicted (Dice 0, HD95 inf)."""
        return self.tumour_voxels_gt > 0 and self.tumour_voxels_pred == 0

    @property
    def tumour_false_alarm(self) -> bool:
        """Tumour predicted, none in the ground truth (Dice 0, HD95 inf)."""
        return self.tumour_voxels_gt == 0 and self.tumour_voxels_pred > 0

    def as_dict(self) -> dict[str, Any]:
        """Flat ``{name: value}``: scalars as they are, per-class tuples as ``dice_<class>``/``iou_<class>``."""
        out: dict[str, Any] = {"case_id": self.case_id}
        for f in dataclasses.fields(self):
            if f.name in ("case_id", "counts", "class_names", "spacing", "dice_per_class", "iou_per_class"):
                continue
            out[f.name] = getattr(self, f.name)
        for name, d, j in zip(self.class_names, self.dice_per_class, self.iou_per_class):
            out[f"dice_{name}"] = d
            out[f"iou_{name}"] = j
        out["spacing"] = list(self.spacing)
        for prop in ("tumour_volume_gt_ml", "tumour_volume_pred_ml", "tumour_absent_in_both", "tumour_missed",
                     "tumour_false_alarm"):
            out[prop] = getattr(self, prop)
        return out


def evaluate_case(
    pred: Any,
    gt: Any,
    spacing: Sequence[float] | float,
    *,
    case_id: str | None = None,
    tolerance_mm: float = 2.0,
    class_names: Sequence[str] = CLASS_NAMES,
    tumour_label: int = TUMOUR_LABEL,
    percentile: float = 95.0,
) -> CaseMetrics:
    """Score one predicted label map against its ground truth.

    Args:
        pred: integer label map ``[x, y, z]`` (numpy array or torch tensor), values ``0..C-1``.
        gt: ground-truth label map of the same shape and label set.
        spacing: voxel size in mm per axis, ``[x, y, z]`` order (one number = isotropic).
        case_id: carried into the result and error messages.
        tolerance_mm: surface-Dice tolerance τ (mm; paper's companion metric: 2 mm).
        class_names: one name per label (C = its length); default background, lung, tumour.
        tumour_label: the label scored alone (Table 4) and for HD95/surface Dice.
        percentile: of the Hausdorff distance (95 → HD95).

    Returns:
        a :class:`CaseMetrics`.

    Example::

        >>> import numpy as np
        >>> gt = np.zeros((8, 8, 4), np.uint8); gt[1:7, 1:7] = 1; gt[3:5, 3:5, 1:3] = 2
        >>> m = evaluate_case(gt, gt, (0.8, 0.8, 2.5))
        >>> m.tumour_dice, m.tumour_hd95_mm, m.dice_macro
        (1.0, 0.0, 1.0)
    """
    case = f"case {case_id}: " if case_id is not None else ""
    class_names = tuple(class_names)
    n_classes = len(class_names)
    if n_classes < 2:
        raise InputError(f"class_names must name at least 2 labels, not {class_names}")
    if not 0 <= tumour_label < n_classes:
        raise InputError(f"tumour_label {tumour_label} is not one of the labels 0..{n_classes - 1}")
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise InputError(f"tolerance_mm must be a finite number >= 0, not {tolerance_mm}")
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], not {percentile}")
    p = _as_label_array(pred, "prediction", class_names, case)
    g = _as_label_array(gt, "ground truth", class_names, case)
    if p.shape != g.shape:
        raise InputError(f"{case}prediction shape {p.shape} differs from ground-truth shape {g.shape}; "
                         "resample the prediction onto the ground-truth grid (nearest neighbour) first")
    sp = _as_spacing(spacing, p.ndim, case)

    counts = confusion_counts(p, g, n_classes)
    scores = _scores_from_counts(counts)
    t_dice = scores["dice_per_class"][tumour_label]
    t_iou = scores["iou_per_class"][tumour_label]

    tp_mask = p == tumour_label
    tg_mask = g == tumour_label
    d_pg, d_gp = _surface_distances(tp_mask, tg_mask, sp)
    tp_, fp_, fn_ = (int(v) for v in counts[tumour_label])
    return CaseMetrics(
        case_id=case_id,
        spacing=sp,
        class_names=class_names,
        tumour_label=int(tumour_label),
        counts=tuple(tuple(int(v) for v in row) for row in counts),
        tumour_dice=t_dice,
        tumour_iou=t_iou,
        tumour_f1=t_dice,
        tumour_hd95_mm=_hd_from_distances(d_pg, d_gp, percentile),
        tumour_surface_dice=_sd_from_distances(d_pg, d_gp, tolerance_mm),
        surface_tolerance_mm=float(tolerance_mm),
        tumour_voxels_gt=tp_ + fn_,
        tumour_voxels_pred=tp_ + fp_,
        **scores,
    )


def evaluate_volumes(pred: Any, gt: Any, **kwargs: Any) -> CaseMetrics:
    """:func:`evaluate_case` for two :class:`~rrcunet.io.volume.Volume` label maps on the same grid.

    The spacing is the ground truth's. Raises :class:`~rrcunet.errors.InputError` if the grids differ.
    """
    case = f"case {kwargs['case_id']}: " if kwargs.get("case_id") is not None else ""
    if not pred.geometry.same_grid(gt.geometry):
        raise InputError(f"{case}prediction grid ({pred.geometry.describe()}) differs from ground-truth grid "
                         f"({gt.geometry.describe()}); resample the prediction onto the ground truth "
                         "(nearest neighbour) first")
    return evaluate_case(pred.array, gt.array, gt.geometry.spacing, **kwargs)


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


@dataclass(frozen=True)
class MeanOfCases:
    """The mean over cases of per-case scores (each case weighs the same).

    * 3-label scores: mean over all cases.
    * tumour Dice/IoU/F1/surface Dice: mean over cases, where a case with no tumour in either
      prediction or ground truth is excluded (``both_empty="exclude"``, default) or counts with its
      conventional score 1.0 (``"include"``). ``n_tumour_scored`` says how many were averaged.
    * tumour HD95: mean and median over the scored cases whose HD95 is finite; cases with an infinite
      HD95 (tumour missed or false alarm) are left out and counted in ``n_hd95_infinite``.
    * NaN when nothing is left to average.
    """

    n_cases: int
    both_empty: str
    n_tumour_scored: int
    n_tumour_absent_in_both: int
    n_tumour_missed: int
    n_tumour_false_alarm: int
    n_hd95_infinite: int
    class_names: tuple[str, ...]
    dice_per_class: tuple[float, ...]
    iou_per_class: tuple[float, ...]
    dice_macro: float
    iou_macro: float
    f1_macro: float
    dice_micro: float
    iou_micro: float
    f1_micro: float
    tumour_dice: float
    tumour_dice_std: float
    tumour_dice_median: float
    tumour_iou: float
    tumour_f1: float
    tumour_hd95_mm: float
    tumour_hd95_mm_median: float
    tumour_surface_dice: float

    def as_dict(self) -> dict[str, Any]:
        return _flatten(self)


@dataclass(frozen=True)
class VoxelPooled:
    """Scores of TP/FP/FN summed over all cases first (large tumours weigh more).

    ``weighting="voxels"`` sums voxel counts; ``"mm3"`` sums physical volumes (counts × voxel volume),
    which matters only when cases have different spacings. No surface metrics: they do not pool.
    A class absent from every case in both prediction and ground truth scores 1.0.
    """

    n_cases: int
    weighting: str
    class_names: tuple[str, ...]
    dice_per_class: tuple[float, ...]
    iou_per_class: tuple[float, ...]
    dice_macro: float
    iou_macro: float
    f1_macro: float
    dice_micro: float
    iou_micro: float
    f1_micro: float
    tumour_dice: float
    tumour_iou: float
    tumour_f1: float

    def as_dict(self) -> dict[str, Any]:
        return _flatten(self)


@dataclass(frozen=True)
class EvaluationSummary:
    """Both aggregations of one set of cases, side by side."""

    mean_of_cases: MeanOfCases
    voxel_pooled: VoxelPooled

    def as_dict(self) -> dict[str, Any]:
        """Flat dict with keys ``mean_of_cases/<name>`` and ``voxel_pooled/<name>``."""
        out = {f"mean_of_cases/{k}": v for k, v in self.mean_of_cases.as_dict().items()}
        out.update({f"voxel_pooled/{k}": v for k, v in self.voxel_pooled.as_dict().items()})
        return out


def _flatten(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = obj.class_names
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name == "class_names":
            continue
        if f.name in ("dice_per_class", "iou_per_class"):
            prefix = f.name.split("_")[0]
            out.update({f"{prefix}_{n}": x for n, x in zip(names, v)})
        else:
            out[f.name] = v
    return out


def _check_cases(cases: Iterable[CaseMetrics]) -> list[CaseMetrics]:
    cases = list(cases)
    if not cases:
        raise InputError("no cases to aggregate: pass at least one CaseMetrics")
    for c in cases:
        if not isinstance(c, CaseMetrics):
            raise InputError(f"aggregation takes CaseMetrics (from evaluate_case), got {type(c).__name__}")
    names = cases[0].class_names
    labels = cases[0].tumour_label
    for c in cases[1:]:
        if c.class_names != names or c.tumour_label != labels:
            raise InputError(f"case {c.case_id} has labels {c.class_names} (tumour {c.tumour_label}) but case "
                             f"{cases[0].case_id} has {names} (tumour {labels}); evaluate all cases with one label set")
    return cases


def aggregate_mean_of_cases(
    cases: Iterable[CaseMetrics], *, both_empty: Literal["exclude", "include"] = "exclude"
) -> MeanOfCases:
    """Average per-case scores over cases (see :class:`MeanOfCases` for what is left out and counted)."""
    if both_empty not in ("exclude", "include"):
        raise InputError(f"both_empty must be 'exclude' or 'include', not {both_empty!r}")
    cases = _check_cases(cases)
    scored = [c for c in cases if both_empty == "include" or not c.tumour_absent_in_both]
    t_dice = [c.tumour_dice for c in scored]
    hd = [c.tumour_hd95_mm for c in scored]
    hd_finite = [h for h in hd if math.isfinite(h)]
    n_cls = len(cases[0].class_names)
    return MeanOfCases(
        n_cases=len(cases),
        both_empty=both_empty,
        n_tumour_scored=len(scored),
        n_tumour_absent_in_both=sum(c.tumour_absent_in_both for c in cases),
        n_tumour_missed=sum(c.tumour_missed for c in cases),
        n_tumour_false_alarm=sum(c.tumour_false_alarm for c in cases),
        n_hd95_infinite=len(hd) - len(hd_finite),
        class_names=cases[0].class_names,
        dice_per_class=tuple(_mean([c.dice_per_class[k] for c in cases]) for k in range(n_cls)),
        iou_per_class=tuple(_mean([c.iou_per_class[k] for c in cases]) for k in range(n_cls)),
        dice_macro=_mean([c.dice_macro for c in cases]),
        iou_macro=_mean([c.iou_macro for c in cases]),
        f1_macro=_mean([c.f1_macro for c in cases]),
        dice_micro=_mean([c.dice_micro for c in cases]),
        iou_micro=_mean([c.iou_micro for c in cases]),
        f1_micro=_mean([c.f1_micro for c in cases]),
        tumour_dice=_mean(t_dice),
        tumour_dice_std=float(np.std(t_dice)) if t_dice else math.nan,  # population SD (ddof=0)
        tumour_dice_median=float(np.median(t_dice)) if t_dice else math.nan,
        tumour_iou=_mean([c.tumour_iou for c in scored]),
        tumour_f1=_mean([c.tumour_f1 for c in scored]),
        tumour_hd95_mm=_mean(hd_finite),
        tumour_hd95_mm_median=float(np.median(hd_finite)) if hd_finite else math.nan,
        tumour_surface_dice=_mean([c.tumour_surface_dice for c in scored]),
    )


def aggregate_voxel_pooled(
    cases: Iterable[CaseMetrics], *, weighting: Literal["voxels", "mm3"] = "voxels"
) -> VoxelPooled:
    """Sum TP/FP/FN over cases (and, for the micro scores, over classes) before taking the ratios."""
    if weighting not in ("voxels", "mm3"):
        raise InputError(f"weighting must be 'voxels' or 'mm3', not {weighting!r}")
    cases = _check_cases(cases)
    total = np.zeros((len(cases[0].class_names), 3), dtype=np.float64)
    for c in cases:
        total += np.asarray(c.counts, dtype=np.float64) * (c.voxel_volume_mm3 if weighting == "mm3" else 1.0)
    scores = _scores_from_counts(total)
    t = cases[0].tumour_label
    return VoxelPooled(
        n_cases=len(cases),
        weighting=weighting,
        class_names=cases[0].class_names,
        tumour_dice=scores["dice_per_class"][t],
        tumour_iou=scores["iou_per_class"][t],
        tumour_f1=scores["dice_per_class"][t],
        **scores,
    )


def summarize(
    cases: Iterable[CaseMetrics],
    *,
    both_empty: Literal["exclude", "include"] = "exclude",
    weighting: Literal["voxels", "mm3"] = "voxels",
) -> EvaluationSummary:
    """Both aggregations of the same cases: :func:`aggregate_mean_of_cases` and :func:`aggregate_voxel_pooled`."""
    cases = list(cases)
    return EvaluationSummary(
        mean_of_cases=aggregate_mean_of_cases(cases, both_empty=both_empty),
        voxel_pooled=aggregate_voxel_pooled(cases, weighting=weighting),
    )


# --------------------------------------------------------------------------------------------------
# Figure 7
# --------------------------------------------------------------------------------------------------
