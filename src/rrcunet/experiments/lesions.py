"""Per-lesion tumour Dice and its grouping by tumour size and location.

Owns :func:`ground_truth_lesions` (which ground-truth voxels form one lesion, and its phantom
facts), :func:`lesion_scores` (the Dice of each lesion), :class:`LesionScore`, the size and
location classes (:func:`size_bin_labels`, :func:`size_bin`, :func:`location_class`) and the
group statistics (:func:`group_lesions`, :class:`GroupStats`).

Why per lesion. A scan often holds a large primary tumour and small nodules; the per-case tumour
Dice is dominated by the largest one, so it cannot say how small or juxta-pleural tumours fare.
The paper (§4.4, Figure 8) only remarks that large tumours at the lung wall are hard. We score
every lesion on its own.

Definitions (docs/reproduction.md, "Tumour Dice by size and location"):

* **Ground-truth lesion.** The tumour label (2) is split into 26-connected components. With
  phantom facts (each case's manifest ``source["tumours"]``, one entry per rendered tumour, with
  its voxel bounding box), each component is assigned to the tumour whose bounding box holds
  most of its voxels, and the components assigned to one tumour form **one lesion** (a spicule
  cut off from its tumour stays part of it). A component inside no tumour's box, and every
  component when the case records no facts (real data), is a lesion of its own with location
  ``"unknown"``. Two tumours whose masks touch form one component, which goes to the tumour with
  the larger overlap; ``n_tumours`` of a lesion counts the tumours merged into it.
* **Predicted voxels of a lesion.** A predicted tumour component (26-connected) that overlaps
  exactly one ground-truth lesion belongs wholly to it. One that overlaps several is split: each
  of its voxels goes to the nearest of those lesions (Euclidean distance in mm to the lesion's
  nearest voxel; ties to the lower lesion number). A predicted component that overlaps no lesion
  is a false-positive component of the case (counted, not part of any lesion's Dice).
* **Lesion Dice** = 2·|P ∩ G| / (|P| + |G|), G the lesion's voxels, P its predicted voxels. A
  missed lesion scores 0. **Detected** = the prediction overlaps it (|P ∩ G| > 0).
* **Size** = the ground-truth lesion volume in mL (voxels × voxel volume).
* **Location** (from the facts' ``touches_chest_wall`` / ``touches_mediastinum``, measured on the
  phantom masks): ``"chest wall"`` (touches the chest wall only), ``"mediastinum"`` (only the
  mediastinum), ``"chest wall + mediastinum"``, ``"neither"`` (intrapulmonary), ``"unknown"``.
  A lesion of several merged tumours touches what any of them touches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from rrcunet.errors import InputError

#: 26-connectivity, as :func:`rrcunet.inference.tumour_components` uses.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)

LOCATION_CLASSES: tuple[str, ...] = ("chest wall", "mediastinum", "chest wall + mediastinum", "neither", "unknown")


@dataclass(frozen=True)
class LesionScore:
    """One ground-truth lesion and how well it was segmented.

    Args:
        case_id: the case.
        lesion: 1-based lesion number in the case, by decreasing ground-truth volume.
        n_voxels_gt: |G|.
        n_voxels_pred: |P|, the predicted voxels assigned to the lesion.
        intersection: |P ∩ G|.
        dice: 2|P ∩ G| / (|P| + |G|).
        volume_ml: |G| × voxel volume, mL.
        detected: |P ∩ G| > 0.
        location: one of :data:`LOCATION_CLASSES`.
        touches_chest_wall, touches_mediastinum: the facts (``None`` when unknown).
        kind: tumour kind from the facts (``None`` when unknown; kinds joined by ``+`` when merged).
        n_tumours: phantom tumours merged into this lesion (0 without facts).
    """

    case_id: str
    lesion: int
    n_voxels_gt: int
    n_voxels_pred: int
    intersection: int
    dice: float
    volume_ml: float
    detected: bool
    location: str
    touches_chest_wall: bool | None
    touches_mediastinum: bool | None
    kind: str | None
    n_tumours: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CaseLesions:
    """The lesions of one case and its false-positive predicted components."""

    case_id: str
    lesions: list[LesionScore]
    n_false_positive_components: int
    false_positive_voxels: int
    false_positive_ml: float
    largest_false_positive_ml: float = 0.0


def location_class(touches_chest_wall: bool | None, touches_mediastinum: bool | None) -> str:
    """The location class of :data:`LOCATION_CLASSES` for the two contact flags (``None`` = unknown)."""
    if touches_chest_wall is None or touches_mediastinum is None:
        return "unknown"
    if touches_chest_wall and touches_mediastinum:
        return "chest wall + mediastinum"
    if touches_chest_wall:
        return "chest wall"
    if touches_mediastinum:
        return "mediastinum"
    return "neither"


def _bbox_slices(bbox: object, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Slices of a fact's ``bbox_voxel`` ``[[lo...], [hi...]]`` (hi exclusive), clipped; None if empty."""
    try:
        lo, hi = bbox  # type: ignore[misc]
        sl = tuple(slice(max(0, int(a)), min(int(s), int(b))) for a, b, s in zip(lo, hi, shape))
    except (TypeError, ValueError):
        return None
    if len(sl) != len(shape) or any(s.stop <= s.start for s in sl):
        return None
    return sl


def ground_truth_lesions(gt_tumour: np.ndarray, facts: Sequence[Mapping[str, object]] | None = None
                         ) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Label the ground-truth lesions (rule in the module docstring).

    Args:
        gt_tumour: boolean tumour mask ``[x, y, z]``.
        facts: the case's phantom tumour facts (``bbox_voxel`` with exclusive upper bounds,
            ``touches_chest_wall``, ``touches_mediastinum``, ``kind``), or ``None``.

    Returns:
        ``(lesion_map, info)``: an int32 map with lesions numbered 1..N by decreasing volume (0
        elsewhere), and one dict per lesion (``touches_chest_wall``, ``touches_mediastinum``,
        ``kind``, ``n_tumours``; ``None`` values when unknown).
    """
    gt = np.asarray(gt_tumour, dtype=bool)
    comps, n = ndimage.label(gt, structure=CONNECTIVITY_26)
    if n == 0:
        return np.zeros(gt.shape, dtype=np.int32), []
    facts = [f for f in (facts or []) if int(f.get("n_voxels", 1) or 0) > 0]  # type: ignore[arg-type]
    # overlap[f, c] = voxels of component c inside the bounding box of tumour f
    overlap = np.zeros((len(facts), n + 1), dtype=np.int64)
    for i, f in enumerate(facts):
        sl = _bbox_slices(f.get("bbox_voxel"), gt.shape)
        if sl is not None:
            overlap[i] = np.bincount(comps[sl].ravel(), minlength=n + 1)[: n + 1]
    overlap[:, 0] = 0
    groups: dict[tuple[str, int], list[int]] = {}
    for c in range(1, n + 1):
        if facts and overlap[:, c].max() > 0:
            key = ("fact", int(np.argmax(overlap[:, c])))  # argmax: ties to the first tumour
        else:
            key = ("component", c)
        groups.setdefault(key, []).append(c)
    # every tumour whose best component went to another tumour's lesion is "merged" into that lesion
    merged_into: dict[tuple[str, int], list[int]] = {k: ([k[1]] if k[0] == "fact" else []) for k in groups}
    for i in range(len(facts)):
        if ("fact", i) in groups or overlap[i].max() == 0:
            continue
        best_c = int(np.argmax(overlap[i]))
        owner = next(k for k, cs in groups.items() if best_c in cs)
        merged_into[owner].append(i)
    sizes = np.bincount(comps.ravel(), minlength=n + 1)
    ordered = sorted(groups, key=lambda k: (-int(sizes[groups[k]].sum()), min(groups[k])))
    lut = np.zeros(n + 1, dtype=np.int32)
    info: list[dict[str, object]] = []
    for number, key in enumerate(ordered, start=1):
        lut[groups[key]] = number
        members = [facts[i] for i in merged_into[key]]
        if members:
            wall = any(bool(m.get("touches_chest_wall")) for m in members)
            med = any(bool(m.get("touches_mediastinum")) for m in members)
            kinds = "+".join(sorted({str(m.get("kind")) for m in members if m.get("kind") is not None})) or None
            info.append({"touches_chest_wall": wall, "touches_mediastinum": med, "kind": kinds,
                         "n_tumours": len(members)})
        else:
            info.append({"touches_chest_wall": None, "touches_mediastinum": None, "kind": None, "n_tumours": 0})
    return lut[comps], info


def _split_by_nearest(component: np.ndarray, lesion_map: np.ndarray, lesion_ids: Sequence[int],
                      spacing: Sequence[float]) -> np.ndarray:
    """Lesion id of each voxel of ``component`` (bool mask): the nearest of ``lesion_ids`` (in mm)."""
    sel = component | np.isin(lesion_map, lesion_ids)
    idx = np.nonzero(sel)
    sl = tuple(slice(int(a.min()), int(a.max()) + 1) for a in idx)
    sub_map = lesion_map[sl]
    best = np.full(sub_map.shape, np.inf)
    owner = np.zeros(sub_map.shape, dtype=np.int32)
    for lid in sorted(lesion_ids):  # strict '<' keeps ties with the lower lesion number
        dist = ndimage.distance_transform_edt(sub_map != lid, sampling=spacing)
        closer = dist < best
        best[closer] = dist[closer]
        owner[closer] = lid
    out = np.zeros(lesion_map.shape, dtype=np.int32)
    out[sl] = np.where(component[sl], owner, 0)
    return out


def lesion_scores(pred_tumour: np.ndarray, gt_tumour: np.ndarray, spacing: Sequence[float] | float, *,
                  case_id: str = "", facts: Sequence[Mapping[str, object]] | None = None) -> CaseLesions:
    """Score every ground-truth lesion of one case (definitions in the module docstring).

    Args:
        pred_tumour: boolean predicted tumour mask ``[x, y, z]``.
        gt_tumour: boolean ground-truth tumour mask, same shape.
        spacing: voxel size in mm along the array axes (one number = isotropic).
        case_id: carried into the results.
        facts: the case's phantom tumour facts, or ``None``.

    Returns:
        a :class:`CaseLesions`.

    Raises:
        InputError: the masks differ in shape, or the spacing is not positive.

    Example::

        >>> gt = np.zeros((10, 10, 10), bool); gt[1:3, 1:3, 1:3] = True
        >>> pred = np.zeros_like(gt); pred[1:3, 1:3, 1:2] = True
        >>> lesion_scores(pred, gt, 1.0).lesions[0].dice   # 2*4 / (4 + 8)
        0.6666666666666666
    """
    pred = np.asarray(pred_tumour, dtype=bool)
    gt = np.asarray(gt_tumour, dtype=bool)
    if pred.shape != gt.shape:
        raise InputError(f"case {case_id}: predicted tumour mask shape {pred.shape} differs from the ground truth's "
                         f"{gt.shape}; resample the prediction onto the ground-truth grid first")
    sp = (float(spacing),) * gt.ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(sp) != gt.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"case {case_id}: spacing must be {gt.ndim} positive numbers (mm), not {spacing!r}")
    voxel_ml = float(np.prod(sp)) / 1000.0
    lesion_map, info = ground_truth_lesions(gt, facts)
    n_lesions = len(info)
    assigned = np.zeros(gt.shape, dtype=np.int32)  # lesion id of each predicted voxel (0 = false positive)
    pcomps, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    n_fp = fp_vox = largest_fp = 0
    if n_pred:
        both = (pcomps > 0) & (lesion_map > 0)
        pairs = np.unique(np.stack([pcomps[both], lesion_map[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
        hit: dict[int, list[int]] = {}
        for p, lid in pairs.T:
            hit.setdefault(int(p), []).append(int(lid))
        objects = ndimage.find_objects(pcomps)
        for p in range(1, n_pred + 1):
            sl = objects[p - 1]
            comp = pcomps[sl] == p
            lids = hit.get(p, [])
            if not lids:
                n_fp += 1
                size = int(comp.sum())
                fp_vox += size
                largest_fp = max(largest_fp, size)
            elif len(lids) == 1:
                assigned[sl][comp] = lids[0]
            else:
                full = np.zeros(gt.shape, dtype=bool)
                full[sl] = comp
                split = _split_by_nearest(full, lesion_map, lids, sp)
                assigned[full] = split[full]
    n_gt = np.bincount(lesion_map.ravel(), minlength=n_lesions + 1)
    n_p = np.bincount(assigned.ravel(), minlength=n_lesions + 1)
    inter = np.bincount(lesion_map[(assigned == lesion_map) & (lesion_map > 0)].ravel(), minlength=n_lesions + 1)
    lesions = []
    for lid in range(1, n_lesions + 1):
        g, p, i = int(n_gt[lid]), int(n_p[lid]), int(inter[lid])
        facts_l = info[lid - 1]
        wall, med = facts_l["touches_chest_wall"], facts_l["touches_mediastinum"]
        lesions.append(LesionScore(
            case_id=case_id, lesion=lid, n_voxels_gt=g, n_voxels_pred=p, intersection=i,
            dice=2.0 * i / (g + p), volume_ml=g * voxel_ml, detected=i > 0,
            location=location_class(wall, med),  # type: ignore[arg-type]
            touches_chest_wall=wall, touches_mediastinum=med,  # type: ignore[arg-type]
            kind=facts_l["kind"], n_tumours=int(facts_l["n_tumours"]),  # type: ignore[arg-type]
        ))
    return CaseLesions(case_id=case_id, lesions=lesions, n_false_positive_components=n_fp,
                       false_positive_voxels=fp_vox, false_positive_ml=fp_vox * voxel_ml,
                       largest_false_positive_ml=largest_fp * voxel_ml)


# ---------------------------------------------------------------------------------------------
# groups


def size_bin_labels(edges: Sequence[float]) -> list[str]:
    """Names of the size bins of inner ``edges`` (mL): ``(1, 5)`` → ``["< 1 mL", "1–5 mL", "≥ 5 mL"]``."""
    e = [float(x) for x in edges]
    return [f"< {e[0]:g} mL", *(f"{a:g}–{b:g} mL" for a, b in zip(e, e[1:])), f"≥ {e[-1]:g} mL"]


def size_bin(volume_ml: float, edges: Sequence[float]) -> str:
    """The bin of ``volume_ml``: bins hold their lower edge (``[a, b)``), the last is ``≥`` its edge."""
    k = int(np.searchsorted(np.asarray(edges, dtype=float), float(volume_ml), side="right"))
    return size_bin_labels(edges)[k]


@dataclass(frozen=True)
class GroupStats:
    """Lesion Dice statistics of one group.

    Args:
        group: the group's name.
        n: lesions.
        n_detected: lesions the prediction overlaps.
        dice_mean: mean lesion Dice (NaN when ``n == 0``).
        dice_sd: population standard deviation (ddof = 0).
        dice_median: median lesion Dice.
        dice_pooled: 2 Σ|P∩G| / Σ(|P| + |G|) over the group's lesions (large lesions weigh more).
        volume_ml_median: median ground-truth volume.
    """

    group: str
    n: int
    n_detected: int
    dice_mean: float
    dice_sd: float
    dice_median: float
    dice_pooled: float
    volume_ml_median: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def group_stats(name: str, lesions: Sequence[LesionScore]) -> GroupStats:
    """:class:`GroupStats` of ``lesions``."""
    if not lesions:
        nan = math.nan
        return GroupStats(name, 0, 0, nan, nan, nan, nan, nan)
    d = np.array([s.dice for s in lesions], dtype=float)
    inter = sum(s.intersection for s in lesions)
    denom = sum(s.n_voxels_gt + s.n_voxels_pred for s in lesions)
    return GroupStats(
        group=name, n=len(lesions), n_detected=sum(s.detected for s in lesions), dice_mean=float(d.mean()),
        dice_sd=float(d.std()), dice_median=float(np.median(d)), dice_pooled=2.0 * inter / denom,
        volume_ml_median=float(np.median([s.volume_ml for s in lesions])),
    )


def group_lesions(lesions: Iterable[LesionScore], *, by: str, size_bins_ml: Sequence[float]) -> list[GroupStats]:
    """Statistics per size bin (``by="size"``, every bin listed) or location class (``by="location"``;
    ``"unknown"`` listed only when some lesion has it)."""
    lesions = list(lesions)
    if by == "size":
        names = size_bin_labels(size_bins_ml)
        key = {id(s): size_bin(s.volume_ml, size_bins_ml) for s in lesions}
    elif by == "location":
        names = [c for c in LOCATION_CLASSES if c != "unknown" or any(s.location == "unknown" for s in lesions)]
        key = {id(s): s.location for s in lesions}
    else:
        raise InputError(f"group by 'size' or 'location', not {by!r}")
    return [group_stats(n, [s for s in lesions if key[id(s)] == n]) for n in names]


def cross_table(lesions: Iterable[LesionScore], *, size_bins_ml: Sequence[float]) -> dict[str, dict[str, GroupStats]]:
    """``{location: {size bin: GroupStats}}`` for the size × location table."""
    lesions = list(lesions)
    locs = [c for c in LOCATION_CLASSES if any(s.location == c for s in lesions)]
    bins = size_bin_labels(size_bins_ml)
    return {loc: {b: group_stats(f"{loc}, {b}", [s for s in lesions if s.location == loc
                                                 and size_bin(s.volume_ml, size_bins_ml) == b]) for b in bins}
            for loc in locs}
