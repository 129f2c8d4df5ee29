"""The real-CT benchmark: a model file on every real chest in ``../shared/realdata/``.

Owns the catalogue of real cases (:data:`REAL_CASES`, :func:`load_real_case`), the per-case
scoring (:func:`score_real_case`, :class:`RealCaseScore`) and the run over all of them
(:func:`run_real_benchmark`). ``benchmarks/real_ct.py`` is its command line.

What is scored, per case (definitions of lesions and false-positive components are those of
:func:`rrcunet.experiments.lesions.lesion_scores`: 26-connected components):

* **tumour Dice** against the reference tumour (LUNG1-001 and IBSI: ``GTV-1``; LIDC-IDRI-0001: the
  nodule outlined by at least 2 of its 4 readers, the usual 50 % consensus);
* **lesions found / missed**: a reference lesion is found when any predicted tumour voxel lies in it;
* **false positives**: predicted tumour components that touch no reference lesion, their number,
  total and largest volume (mL). On an unlabelled chest every predicted component is one;
* **lung Dice** where the lungs are known (LUNG1-001: ``Lung-Left`` ∪ ``Lung-Right`` ∪ ``GTV-1``, the
  radiotherapy lung contours exclude the tumour; LIDC-IDRI-0001: the automatic lobes 10–14 ∪ the
  nodule) against the predicted lung region (lung ∪ tumour);
* **predicted tumour volume** (mL) on every case.

A real case that training or tuning saw no longer measures real-world accuracy
(``../shared/realdata/README.md``): the caller names those cases (``trained_on``) and they are
reported apart, never in the held-out mean.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.errors import InputError
from rrcunet.experiments.lesions import lesion_scores
from rrcunet.io import Volume, read_image, read_rtstruct
from rrcunet.scores import overlap_scores

LIDC_LOBES = (10, 11, 12, 13, 14)  # TotalSegmentator lung lobes (anatomy_structures.csv)
LIDC_MIN_READERS = 2


@dataclass(frozen=True)
class RealCase:
    """A real chest CT and what is known about it (``None``: not known)."""

    name: str
    ct: Volume
    tumour: np.ndarray | None
    lungs: np.ndarray | None
    note: str


def _lung1(folder: Path, name: str) -> RealCase:
    ct = read_image(folder / "image")
    rois = read_rtstruct(folder / "mask_rtstruct" / "1-1.dcm", ct, rois=["GTV-1", "Lung-Left", "Lung-Right"])
    gtv = np.asarray(rois["GTV-1"].array) > 0
    lungs = (np.asarray(rois["Lung-Left"].array) > 0) | (np.asarray(rois["Lung-Right"].array) > 0) | gtv
    return RealCase(name, ct, gtv, lungs, "NSCLC GTV-1 at the hilum (RTSTRUCT)")


def _ibsi(folder: Path, name: str) -> RealCase:
    ct = read_image(next((folder / "nifti" / "image").glob("*.nii*")))
    mask = read_image(next((folder / "nifti" / "mask").glob("*.nii*")), kind="label")
    if not mask.geometry.same_grid(ct.geometry):
        raise InputError(f"{folder}: the reference mask's grid differs from the CT's")
    return RealCase(name, ct, np.asarray(mask.array) > 0, None, "cropped NSCLC GTV-1 on the chest wall")


def _lidc(folder: Path, name: str) -> RealCase:
    ct = read_image(folder / "ct.nii.gz")
    readers = read_image(folder / "nodule_readers.nii.gz", kind="label")
    anatomy = read_image(folder / "anatomy_totalsegmentator.nii.gz", kind="label")
    for other, file in ((readers, "nodule_readers"), (anatomy, "anatomy_totalsegmentator")):
        if not other.geometry.same_grid(ct.geometry):
            raise InputError(f"{folder / file}: grid differs from ct.nii.gz's")
    nodule = np.asarray(readers.array) >= LIDC_MIN_READERS
    lungs = np.isin(np.asarray(anatomy.array), LIDC_LOBES) | nodule
    return RealCase(name, ct, nodule, lungs, f"nodule of >= {LIDC_MIN_READERS} of 4 readers")


def _unlabelled(file: str, note: str) -> Callable[[Path, str], RealCase]:
    def load(folder: Path, name: str) -> RealCase:
        return RealCase(name, read_image(folder / file), None, None, note)
    return load


# folder → (short name, loader), in the order the benchmark prints them
REAL_CASES: dict[str, tuple[str, Callable[[Path, str], RealCase]]] = {
    "nsclc-radiomics-lung1-001": ("lung1-001", _lung1),
    "lidc-idri-0001": ("lidc-0001", _lidc),
    "ibsi-ct-radiomics-phantom": ("ibsi", _ibsi),
    "popi-4dct-phase00": ("popi-phase00", _unlabelled("ct.nii.gz", "unlabelled whole chest")),
    "totalseg-chest-cta-crop": ("cta-crop", _unlabelled("ct.nii.gz", "unlabelled contrast CTA crop")),
}
LABELLED = ("lung1-001", "lidc-0001", "ibsi")


def real_case_names() -> list[str]:
    """The short names of :data:`REAL_CASES` (what ``trained_on`` takes)."""
    return [name for name, _ in REAL_CASES.values()]


def load_real_case(realdata: str | os.PathLike[str], folder: str) -> RealCase:
    """Read one real case of :data:`REAL_CASES` from the realdata folder."""
    if folder not in REAL_CASES:
        raise InputError(f"unknown real case {folder!r}; choose one of {sorted(REAL_CASES)}")
    path = Path(realdata) / folder
    if not path.is_dir():
        raise InputError(f"real case folder {path} not found; pass the shared realdata folder (realdata=PATH in "
                         "Python; benchmarks/real_ct.py takes it as an option)")
    name, load = REAL_CASES[folder]
    return load(path, name)


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    tp = int(np.count_nonzero(pred & ref))
    return overlap_scores(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp)[0]


@dataclass(frozen=True)
class RealCaseScore:
    """The scores of one real case (``nan`` where the reference does not say)."""

    case: str
    tumour_dice: float
    lesions: int
    lesions_found: int
    fp_components: int
    fp_ml: float
    largest_fp_ml: float
    lung_dice: float
    pred_tumour_ml: float
    ref_tumour_ml: float
    trained_on: bool = False

    @property
    def all_found(self) -> bool:
        return self.lesions_found == self.lesions

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_real_case(case: str, labels: np.ndarray, spacing: Sequence[float], *, tumour: np.ndarray | None,
                    lungs: np.ndarray | None, tumour_label: int = 2, trained_on: bool = False) -> RealCaseScore:
    """Score a predicted label map (0 background, 1 lung, 2 tumour) against what is known of a case.

    Args:
        case: the case's name (carried into the result).
        labels: predicted label map on the reference grid.
        spacing: voxel size in mm along the array axes.
        tumour: reference tumour mask, or ``None`` (unlabelled: every predicted component is a
            false positive and Dice is ``nan``).
        lungs: reference lung region (lung ∪ tumour), or ``None``.
        tumour_label: the tumour class of ``labels``.
        trained_on: training or tuning saw this case (it is reported apart).

    Example::

        >>> pred = np.zeros((20, 20, 20), np.uint8); pred[2:6, 2:6, 2:6] = 2; pred[12:14, 12:14, 12:14] = 2
        >>> ref = np.zeros((20, 20, 20), bool); ref[2:6, 2:6, 2:6] = True
        >>> s = score_real_case("x", pred, (1, 1, 1), tumour=ref, lungs=None)
        >>> (round(s.tumour_dice, 3), s.lesions_found, s.fp_components, s.largest_fp_ml)
        (0.941, 1, 1, 0.008)
    """
    labels = np.asarray(labels)
    pred_t = labels == tumour_label
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    ref_t = np.zeros(labels.shape, bool) if tumour is None else np.asarray(tumour, bool)
    if ref_t.shape != labels.shape:
        raise InputError(f"case {case}: reference shape {ref_t.shape} differs from the prediction's {labels.shape}")
    scored = lesion_scores(pred_t, ref_t, spacing, case_id=case)
    lung_dice = math.nan
    if lungs is not None:
        lung_dice = _dice(labels > 0, np.asarray(lungs, bool))
    tumour_dice = _dice(pred_t, ref_t) if tumour is not None else math.nan
    return RealCaseScore(
        case=case, tumour_dice=float(tumour_dice), lesions=len(scored.lesions),
        lesions_found=sum(1 for lesion in scored.lesions if lesion.detected),
        fp_components=scored.n_false_positive_components, fp_ml=scored.false_positive_ml,
        largest_fp_ml=scored.largest_false_positive_ml, lung_dice=float(lung_dice), pred_tumour_ml=float(pred_t.sum()) * voxel_ml,
        ref_tumour_ml=float(ref_t.sum()) * voxel_ml, trained_on=trained_on)


@dataclass(frozen=True)
class RealBenchmark:
    """All real cases' scores and the summary over the held-out labelled ones."""

    scores: list[RealCaseScore]

    @property
    def held_out_labelled(self) -> list[RealCaseScore]:
        return [s for s in self.scores if s.case in LABELLED and not s.trained_on]

    @property
    def mean_tumour_dice(self) -> float:
        held = self.held_out_labelled
        return float(np.mean([s.tumour_dice for s in held])) if held else math.nan

    @property
    def largest_fp_ml(self) -> float:
        return max((s.largest_fp_ml for s in self.scores if not s.trained_on), default=0.0)

    def goal_met(self, *, min_dice: float = 0.65, max_fp_ml: float = 2.0) -> bool:
        """The goal of issue 17: held-out mean Dice, every lesion found, no false positive above 2 mL."""
        held = self.held_out_labelled
        return (bool(held) and self.mean_tumour_dice >= min_dice and all(s.all_found for s in held)
                and self.largest_fp_ml <= max_fp_ml)


def run_real_benchmark(predictor: Any, realdata: str | os.PathLike[str], *, trained_on: Sequence[str] = (),
                       figures: str | os.PathLike[str] | None = None, figure_prefix: str = "",
                       cases: Sequence[str] | None = None,
                       on_case: Callable[[RealCaseScore, float], None] | None = None) -> RealBenchmark:
    """Predict and score every real case found under ``realdata``.

    Args:
        predictor: a :class:`rrcunet.inference.Predictor` (anything with ``predict_volume``).
        realdata: the shared realdata folder; cases whose folder is missing are skipped.
        trained_on: short names (:func:`real_case_names`) of cases training or tuning saw.
        figures: write ``<figure_prefix><case>.png`` here (CT with reference and prediction outlines).
        cases: only these folders of :data:`REAL_CASES`.
        on_case: called with each score and the prediction's seconds as it is done.
    """
    unknown = sorted(set(trained_on) - set(real_case_names()))
    if unknown:
        raise InputError(f"trained_on {unknown}: not real case names; choose from {real_case_names()}")
    scores = []
    for folder in cases or list(REAL_CASES):
        if not (Path(realdata) / folder).is_dir():
            continue
        case = load_real_case(realdata, folder)
        t0 = time.perf_counter()
        result = predictor.predict_volume(case.ct)
        seconds = time.perf_counter() - t0
        labels = np.asarray(result.labels.array)
        score = score_real_case(case.name, labels, case.ct.spacing, tumour=case.tumour, lungs=case.lungs,
                                trained_on=case.name in trained_on)
        scores.append(score)
        if figures is not None:
            from rrcunet.visualization.slices import case_figure  # local: matplotlib only when figures are asked

            ref = None
            if case.tumour is not None or case.lungs is not None:
                ref_arr = np.zeros(labels.shape, np.uint8)
                if case.lungs is not None:
                    ref_arr[case.lungs] = 1
                if case.tumour is not None:
                    ref_arr[case.tumour] = 2
                ref = case.ct.with_array(ref_arr, kind="label")
            Path(figures).mkdir(parents=True, exist_ok=True)
            case_figure(case.ct, ref, result.labels, Path(figures) / f"{figure_prefix}{case.name}.png",
                        title=f"{case.name}: {case.note}",
                        dice=None if math.isnan(score.tumour_dice) else score.tumour_dice)
        if on_case is not None:
            on_case(score, seconds)
    return RealBenchmark(scores)
