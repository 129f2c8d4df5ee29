"""Tumour response between two scans of one patient (``rrcunet compare BASELINE FOLLOWUP -o OUT``).

Owns :func:`compare_scans` and the steps it chains, each usable alone:

1. :func:`load_time_point`: a prediction folder of ``rrcunet predict`` (one case), or a scan (file or
   DICOM folder) that is predicted first with the given :class:`~rrcunet.inference.Predictor`;
2. :func:`check_same_patient`: DICOM PatientIDs must agree (``force`` overrides);
3. :func:`register`: the follow-up CT onto the baseline CT with SimpleITK: centred on the lungs'
   moments, then rigid (Euler), then affine, Mattes mutual information restricted to the
   baseline's dilated lung region, on the scans averaged down to about 3 mm, two resolution levels. A result whose lungs overlap by a Dice
   below ``min_lung_dice`` is refused (:class:`RegistrationError`): different body regions, or a
   registration that failed, must not give a silent wrong answer;
4. :func:`match_lesions`: lesions (26-connected tumour components, measured on each scan's own
   grid) are linked when the follow-up lesion, carried onto the baseline grid, shares a voxel with
   the baseline lesion; linked lesions form one group (a split or a merge stays one lesion, its
   volumes and diameters summed, as RECIST 1.1 sums fragments). Baseline-only and follow-up-only
   groups whose centroids lie within ``match_distance_mm`` (after registration) are then paired,
   closest first. What is left is ``disappeared`` or ``new``;
5. :mod:`rrcunet.response.recist`: RECIST 1.1 and volumetric categories.

Writes ``OUT/response.json`` (schema ``rrcunet-response`` v1, docs/response.md),
``OUT/response.html`` with side-by-side slices of every lesion and a volume plot, and
``OUT/followup_on_baseline_seg.nii.gz`` (the follow-up mask on the baseline grid).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from rrcunet import __version__
from rrcunet.errors import InputError
from rrcunet.inference.measure import Lesion, measure_lesions, tumour_components
from rrcunet.io import read_image, write_volume
from rrcunet.io.atomic import atomic_write_text, json_safe
from rrcunet.io.volume import Volume
from rrcunet.preprocessing.orientation import orientation_step
from rrcunet.scores import overlap_scores
from rrcunet.response.recist import (
    ResponseRules,
    percent_change,
    recist_category,
    select_targets,
    volumetric_category,
)
from rrcunet.tasks import TUMOUR_LABEL

logger = logging.getLogger(__name__)

SCHEMA = "rrcunet-response"
SCHEMA_VERSION = 1


class RegistrationError(InputError):
    """The two scans could not be brought onto each other (different body regions, no lungs, or a
    registration that did not converge)."""


@dataclass
class TimePoint:
    """One scan with its prediction: CT, label map, lesions (largest first) and a map of lesion
    numbers (0 = none) on the CT grid."""

    name: str
    ct: Volume
    labels: Volume
    lesions: list[Lesion]
    lesion_map: np.ndarray
    ct_path: Path
    prediction_dir: Path
    patient_id: str | None = None
    prediction: dict[str, Any] = field(default_factory=dict)

    @property
    def slice_mm(self) -> float:
        return float(orientation_step(self.ct.geometry).output_geometry.spacing[2])


def lesion_map(labels: Volume, min_ml: float = 0.0) -> tuple[list[Lesion], np.ndarray]:
    """The lesions of a label map of at least ``min_ml`` and an int32 map of their numbers
    (:func:`measure_lesions` order, 0 elsewhere and on the smaller components)."""
    arr = np.asarray(labels.array)
    comps = tumour_components(arr == TUMOUR_LABEL)
    lesions = measure_lesions(arr, labels.geometry, components=comps)
    out = np.zeros(arr.shape, np.int32)
    if comps.count:
        rank = np.zeros(comps.count + 1, np.int32)
        rank[np.argsort(-comps.sizes, kind="stable") + 1] = np.arange(1, comps.count + 1, dtype=np.int32)
        kept = np.array([0] + [les.volume_ml >= min_ml for les in lesions], bool)
        rank[~kept[rank]] = 0  # components below min_ml: no number
        out[comps.box] = rank[comps.labels]
    return [les for les in lesions if les.volume_ml >= min_ml], out


def _prediction_docs(folder: Path) -> list[dict[str, Any]]:
    from rrcunet.inference.batch import read_prediction_json  # the batch module loads the predictor

    docs = []
    for path in sorted(folder.glob("*.json")):
        doc = read_prediction_json(path)
        if doc is not None and (doc.get("outputs") or {}).get("segmentation"):
            docs.append(doc)
    return docs


def load_time_point(arg: str | Path, name: str, work_dir: Path, *,
                    predict: Callable[[Path, Path], None] | None = None, min_lesion_ml: float = 0.0) -> TimePoint:
    """``arg`` as a time point: a ``rrcunet predict`` folder holding one case, or a scan (image file
    or DICOM folder) that ``predict(scan, work_dir / name)`` segments first. Tumour components
    below ``min_lesion_ml`` are not lesions."""
    path = Path(arg)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; expected a CT scan, a DICOM folder or a "
                         "`rrcunet predict` output folder")
    docs = _prediction_docs(path) if path.is_dir() else []
    if path.is_dir() and len(docs) > 1:
        raise InputError(f"{path}: a prediction folder with {len(docs)} cases "
                         f"({', '.join(str(d.get('case')) for d in docs[:5])}); compare takes one scan per time point: "
                         "pass that case's CT, or a folder holding only its prediction")
    if not docs:
        if predict is None:
            raise InputError(f"{path}: not a prediction folder and no predictor given")
        folder = work_dir / name
        predict(path, folder)
        docs = _prediction_docs(folder)
        if len(docs) != 1:
            raise InputError(f"{path}: predicting it gave {len(docs)} case(s) in {folder}; expected one scan")
        pred_dir = folder
    else:
        pred_dir = path
    doc = docs[0]
    ct_path = Path(doc["input"]["path"])
    if not ct_path.exists():
        raise InputError(f"{pred_dir / (str(doc['case']) + '.json')}: its CT {ct_path} is gone; compare needs the CT "
                         "where `rrcunet predict` read it (move it back, or pass the scan itself)")
    ct = read_image(ct_path)
    labels = read_image(pred_dir / doc["outputs"]["segmentation"], kind="label")
    if not labels.geometry.same_grid(ct.geometry):
        raise InputError(f"{pred_dir}: the segmentation is not on the grid of its CT {ct_path}; predict the scan again")
    lesions, lmap = lesion_map(labels, min_lesion_ml)
    info = ct.meta.get("dicom")
    patient = (getattr(info, "patient_id", "") or None) if info is not None else None
    return TimePoint(name=name, ct=ct, labels=labels, lesions=lesions, lesion_map=lmap, ct_path=ct_path,
                     prediction_dir=pred_dir, patient_id=patient, prediction=doc)


def check_same_patient(base: TimePoint, follow: TimePoint, *, force: bool = False) -> str | None:
    """Refuse two scans whose DICOM PatientIDs differ (unless ``force``); a note when one has none."""
    if base.patient_id and follow.patient_id and base.patient_id != follow.patient_id:
        if not force:
            raise InputError(f"baseline {base.ct_path} is patient {base.patient_id!r} but follow-up {follow.ct_path} is "
                             f"patient {follow.patient_id!r}: a response needs two scans of one patient. Pass --force "
                             "if the IDs differ for a known reason (e.g. re-anonymised)")
        return f"PatientIDs differ ({base.patient_id!r} vs {follow.patient_id!r}); compared anyway (--force)"
    if not (base.patient_id and follow.patient_id):
        return "no DICOM PatientID on one or both scans: that both are the same patient was not checked"
    return None


@dataclass(frozen=True)
class Registration:
    """The follow-up → baseline registration: ``transform`` maps baseline points (LPS mm) to follow-up
    points (SimpleITK's convention), so resampling the follow-up with it lands on the baseline grid."""

    transform: Any
    metric: float
    lung_dice: float
    seconds: float
    rigid_parameters: tuple[float, ...]
    affine_matrix: tuple[float, ...]
    affine_translation: tuple[float, ...]
    affine_center: tuple[float, ...] = (0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "SimpleITK: moments on the lungs, rigid (Euler3D), affine; Mattes MI in the baseline lungs",
                "metric": self.metric, "lung_dice_after": self.lung_dice, "seconds": self.seconds,
                "rigid_parameters": list(self.rigid_parameters), "affine_matrix": list(self.affine_matrix),
                "affine_translation_mm": list(self.affine_translation), "affine_center_mm": list(self.affine_center),
                "maps": "baseline LPS mm -> follow-up LPS mm: x' = A (x - c) + c + t"}

    def to_baseline(self, point_mm: Any) -> np.ndarray:
        """A follow-up point (LPS mm) in baseline coordinates."""
        return np.asarray(self.transform.GetInverse().TransformPoint(tuple(float(v) for v in point_mm)))


#: voxel size (mm) the registration works at: the scans are averaged down to about this first, so a
#: 512×512×300 scan registers as fast as a small one (lung-scale alignment needs no finer grid)
REGISTRATION_MM = 3.0


def _factors(image: Any) -> list[int]:
    return [max(1, int(round(REGISTRATION_MM / s))) for s in image.GetSpacing()]


def _lung_image(tp: TimePoint) -> Any:
    """The predicted lung ∪ tumour of ``tp`` on the registration grid (uint8 0/1)."""
    mask = sitk.Cast(tp.labels.with_array((np.asarray(tp.labels.array) > 0).astype(np.uint8)).to_sitk(),
                     sitk.sitkFloat32)
    return sitk.BinaryThreshold(sitk.BinShrink(mask, _factors(mask)), 0.5, 2.0, 1, 0)


def _ct_image(tp: TimePoint) -> Any:
    """The CT of ``tp``, clamped to −1024…600 HU, averaged down to the registration grid (float32)."""
    img = sitk.Clamp(sitk.Cast(tp.ct.to_sitk(), sitk.sitkFloat32), sitk.sitkFloat32, -1024.0, 600.0)
    return sitk.BinShrink(img, _factors(img))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    tp = int(np.count_nonzero(a & b))
    return overlap_scores(tp, int(np.count_nonzero(a)) - tp, int(np.count_nonzero(b)) - tp)[0]


def register(base: TimePoint, follow: TimePoint, *, min_lung_dice: float = 0.5, min_lung_ml: float = 200.0,
             seed: int = 0) -> Registration:
    """Register ``follow`` onto ``base`` (module docstring); raise :class:`RegistrationError` when it fails."""
    t0 = time.perf_counter()
    for tp in (base, follow):
        ml = float(np.count_nonzero(np.asarray(tp.labels.array))) * tp.labels.geometry.voxel_volume_ml
        if ml < min_lung_ml:
            raise RegistrationError(f"{tp.ct_path}: its prediction holds {ml:.0f} mL of lung (below {min_lung_ml:.0f} "
                                    "mL), so it cannot be registered on the lungs; is it a chest CT?")
    fixed, moving = _ct_image(base), _ct_image(follow)
    fixed_lung, moving_lung = _lung_image(base), _lung_image(follow)
    mask = sitk.BinaryDilate(fixed_lung, [2, 2, 1])
    init = sitk.CenteredTransformInitializer(sitk.Cast(fixed_lung, sitk.sitkFloat32),
                                             sitk.Cast(moving_lung, sitk.sitkFloat32), sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    rigid = sitk.Euler3DTransform(init)

    def method(iterations: int) -> Any:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.1, seed)
        r.SetMetricFixedMask(mask)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                   relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([2, 1])
        r.SetSmoothingSigmasPerLevel([2.0, 0.0])
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return r

    r = method(100)
    r.SetInitialTransform(rigid, inPlace=True)
    r.Execute(fixed, moving)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    r = method(60)
    r.SetInitialTransform(affine, inPlace=True)
    r.Execute(fixed, moving)
    metric = float(r.GetMetricValue())
    warped = sitk.Resample(moving_lung, fixed_lung, affine, sitk.sitkNearestNeighbor, 0)
    dice = _dice(sitk.GetArrayViewFromImage(warped) > 0, sitk.GetArrayViewFromImage(fixed_lung) > 0)
    reg = Registration(transform=affine, metric=metric, lung_dice=dice, seconds=time.perf_counter() - t0,
                       rigid_parameters=tuple(rigid.GetParameters()), affine_matrix=tuple(affine.GetMatrix()),
                       affine_translation=tuple(affine.GetTranslation()), affine_center=tuple(affine.GetCenter()))
    if dice < min_lung_dice:
        raise RegistrationError(
            f"registering follow-up {follow.ct_path} onto baseline {base.ct_path} failed: their lungs overlap by a "
            f"Dice of {dice:.2f} afterwards (at least {min_lung_dice} expected). The scans may cover different body "
            "regions or be of different patients; check both are chest CTs of this patient")
    return reg


def resample_onto(tp: TimePoint, array: np.ndarray, ref: TimePoint, reg: Registration, *, linear: bool = False,
                  fill: float = 0.0) -> np.ndarray:
    """``array`` (on ``tp``'s grid) carried onto ``ref``'s grid through ``reg``."""
    img = tp.ct.with_array(array, kind="image" if linear else "label").to_sitk()
    out = sitk.Resample(img, ref.ct.to_sitk() if linear else ref.labels.to_sitk(), reg.transform,
                        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, fill, img.GetPixelID())
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


@dataclass
class LesionChange:
    """One lesion across the two time points (a group of linked components on each side)."""

    number: int
    status: str
    baseline: list[int]
    followup: list[int]
    volume_baseline_ml: float
    volume_followup_ml: float
    diameter_baseline_mm: float
    diameter_followup_mm: float
    centroid_baseline_mm: tuple[float, float, float]
    matched_by: str | None
    target: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"lesion": self.number, "status": self.status, "target": self.target, "matched_by": self.matched_by,
                "baseline_lesions": self.baseline, "followup_lesions": self.followup,
                "volume_baseline_ml": self.volume_baseline_ml, "volume_followup_ml": self.volume_followup_ml,
                "volume_change_pct": percent_change(self.volume_baseline_ml, self.volume_followup_ml),
                "diameter_baseline_mm": self.diameter_baseline_mm, "diameter_followup_mm": self.diameter_followup_mm,
                "diameter_change_pct": percent_change(self.diameter_baseline_mm, self.diameter_followup_mm),
                "centroid_baseline_mm_lps": list(self.centroid_baseline_mm)}


def match_lesions(base: TimePoint, follow: TimePoint, reg: Registration, follow_map_on_base: np.ndarray, *,
                  match_distance_mm: float = 15.0) -> list[LesionChange]:
    """Group the lesions of the two time points (module docstring, step 4)."""
    nb, nf = len(base.lesions), len(follow.lesions)
    parent = list(range(nb + nf))  # union-find over baseline lesions 0..nb-1 and follow-up lesions nb..

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    both = (base.lesion_map > 0) & (follow_map_on_base > 0)
    pairs = set(zip(base.lesion_map[both].tolist(), follow_map_on_base[both].tolist()))
    for b, f in pairs:
        parent[find(b - 1)] = find(nb + f - 1)
    groups: dict[int, list[int]] = {}
    for i in range(nb + nf):
        groups.setdefault(find(i), []).append(i)
    members = [([i + 1 for i in g if i < nb], [i - nb + 1 for i in g if i >= nb]) for g in groups.values()]
    how: dict[int, str | None] = {k: ("overlap" if b and f else None) for k, (b, f) in enumerate(members)}

    def centre(bs: list[int], fs: list[int]) -> np.ndarray:
        if bs:
            les = [base.lesions[i - 1] for i in bs]
            return np.average([x.centroid_mm for x in les], axis=0, weights=[x.volume_ml for x in les])
        les = [follow.lesions[i - 1] for i in fs]
        c = np.average([x.centroid_mm for x in les], axis=0, weights=[x.volume_ml for x in les])
        return reg.to_baseline(c)

    only_b = [k for k, (b, f) in enumerate(members) if b and not f]
    only_f = [k for k, (b, f) in enumerate(members) if f and not b]
    cand = sorted((float(np.linalg.norm(centre(*members[i]) - centre(*members[j]))), i, j)
                  for i in only_b for j in only_f)
    used: set[int] = set()
    merged: dict[int, int] = {}
    for d, i, j in cand:
        if d > match_distance_mm or i in used or j in used:
            continue
        used.update((i, j))
        merged[j] = i
        how[i] = "distance"
    for j, i in merged.items():
        members[i] = (members[i][0], members[j][1])
    keep = [k for k in range(len(members)) if k not in merged]
    changes = []
    for k in keep:
        bs, fs = members[k]
        vb = float(sum(base.lesions[i - 1].volume_ml for i in bs))
        vf = float(sum(follow.lesions[i - 1].volume_ml for i in fs))
        db = float(sum(base.lesions[i - 1].longest_axial_diameter_mm for i in bs))
        df = float(sum(follow.lesions[i - 1].longest_axial_diameter_mm for i in fs))
        status = "matched" if bs and fs else ("disappeared" if bs else "new")
        changes.append(LesionChange(0, status, bs, fs, vb, vf, db, df,
                                    tuple(float(v) for v in centre(bs, fs)), how[k]))  # type: ignore[arg-type]
    changes.sort(key=lambda c: (-max(c.volume_baseline_ml, 0.0), -c.volume_followup_ml))
    for n, c in enumerate(changes, start=1):
        c.number = n
    return changes


def assess(changes: list[LesionChange], slice_mm: float, rules: ResponseRules) -> dict[str, Any]:
    """The patient-level RECIST 1.1 and volumetric responses of a list of lesion changes (marks the targets)."""
    present = [c for c in changes if c.baseline]
    targets = [present[i] for i in select_targets([c.diameter_baseline_mm for c in present], slice_mm, rules)]
    for c in targets:
        c.target = True
    new = [c for c in changes if c.status == "new" and c.volume_followup_ml >= rules.min_new_lesion_ml]
    sum_b = float(sum(c.diameter_baseline_mm for c in targets))
    sum_f = float(sum(c.diameter_followup_mm for c in targets))
    vol_b = float(sum(c.volume_baseline_ml for c in changes))
    vol_f = float(sum(c.volume_followup_ml for c in changes))
    return {
        "recist": {"targets": [c.number for c in targets], "sum_diameters_baseline_mm": sum_b,
                   "sum_diameters_followup_mm": sum_f, "change_pct": percent_change(sum_b, sum_f),
                   "new_lesions": [c.number for c in new], "category": recist_category(sum_b, sum_f, len(new), rules)},
        "volumetric": {"volume_baseline_ml": vol_b, "volume_followup_ml": vol_f,
                       "change_pct": percent_change(vol_b, vol_f), "new_lesions": [c.number for c in new],
                       "category": volumetric_category(vol_b, vol_f, len(new), rules)},
    }


def _time_point_dict(tp: TimePoint) -> dict[str, Any]:
    return {"ct": str(tp.ct_path), "prediction": str(tp.prediction_dir), "case": tp.prediction.get("case"),
            "patient_id": tp.patient_id, "shape": list(tp.ct.shape), "spacing_mm": list(tp.ct.geometry.spacing),
            "n_lesions": len(tp.lesions), "tumour_ml": float(sum(x.volume_ml for x in tp.lesions)),
            "quality_flags": [f.get("code") for f in (tp.prediction.get("quality") or {}).get("flags", [])]}


def compare_scans(baseline: str | Path, followup: str | Path, out_dir: str | Path, *,
                  predict: Callable[[Path, Path], None] | None = None, force: bool = False,
                  rules: ResponseRules = ResponseRules(), match_distance_mm: float = 15.0,
                  min_lung_dice: float = 0.5, min_lesion_ml: float = 0.1, html: bool = True) -> dict[str, Any]:
    """Everything of ``rrcunet compare`` (module docstring); returns the ``response.json`` document.
    Tumour components below ``min_lesion_ml`` (default 0.1 mL, a few voxels: nothing RECIST could
    measure) are left out at both time points."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose a folder for -o")
    out.mkdir(parents=True, exist_ok=True)
    base = load_time_point(baseline, "baseline", out, predict=predict, min_lesion_ml=min_lesion_ml)
    follow = load_time_point(followup, "followup", out, predict=predict, min_lesion_ml=min_lesion_ml)
    if base.ct_path.resolve() == follow.ct_path.resolve() and not force:
        raise InputError(f"baseline and follow-up are the same scan ({base.ct_path}); pass two time points")
    notes = [n for n in [check_same_patient(base, follow, force=force)] if n]
    t_load = time.perf_counter() - t0
    reg = register(base, follow, min_lung_dice=min_lung_dice)
    t = time.perf_counter()
    follow_map = resample_onto(follow, follow.lesion_map, base, reg)
    follow_labels = resample_onto(follow, np.asarray(follow.labels.array, np.uint8), base, reg).astype(np.uint8)
    changes = match_lesions(base, follow, reg, follow_map, match_distance_mm=match_distance_mm)
    response = assess(changes, base.slice_mm, rules)
    seg_name = "followup_on_baseline_seg.nii.gz"
    write_volume(base.labels.with_array(follow_labels), out / seg_name, overwrite=True)
    t_match = time.perf_counter() - t
    doc: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "baseline": _time_point_dict(base), "followup": _time_point_dict(follow),
        "registration": reg.to_dict(),
        "matching": {"rule": "overlap on the baseline grid after registration, then centroid distance",
                     "match_distance_mm": match_distance_mm, "min_lesion_ml": min_lesion_ml},
        "lesions": [c.to_dict() for c in changes],
        **response,
        "rules": rules.to_dict(),
        "notes": notes + ["RECIST targets are the model's lesions (the largest measurable, at most "
                          f"{min(rules.max_targets, rules.max_per_organ)} with the lungs as one organ), "
                          "not a radiologist's choice"],
        "outputs": {"followup_on_baseline": seg_name, "json": "response.json"},
        "runtime_s": {"load": t_load, "register": reg.seconds, "match": t_match},
        "rrcunet_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if html:
        from rrcunet.response.report import write_response_html  # matplotlib: only the page needs it

        t = time.perf_counter()
        follow_ct = resample_onto(follow, np.asarray(follow.ct.array, np.float32), base, reg, linear=True, fill=-1024.0)
        doc["outputs"]["html"] = write_response_html(out, doc, base, follow_ct, follow_labels).name
        doc["runtime_s"]["html"] = time.perf_counter() - t
    doc["runtime_s"]["total"] = time.perf_counter() - t0
    doc = json_safe(doc)
    atomic_write_text(out / "response.json", json.dumps(doc, indent=2) + "\n")
    return doc
