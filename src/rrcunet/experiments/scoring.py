"""Scoring a trained model on a dataset split: predict the cases, then evaluate them, with caches.

Owns :func:`predict_split` (a model file → ``<case>_seg.nii.gz`` for every case of a manifest
split, on each CT's own grid) and :func:`score_model` (that, then
:func:`rrcunet.evaluation.evaluate.evaluate_folder`). Both are resumable: a stamp records the
model's SHA-256 and the options, predictions already made with the same stamp are kept, and a
finished report with the same stamp and cases is read back instead of recomputed.

The lung channel is the dataset's ``lungs/`` mask (``lung="dataset"``, what the model was trained
with) or the classical extractor's (``lung="classical"``). No postprocessing is applied (the
paper uses none): every predicted tumour component is scored (:func:`predict_split` can drop
those outside the lung region, for :mod:`rrcunet.experiments.postprocessing`).

Layout::

    OUT/predictions/<case>_seg.nii.gz   label maps (0/1/2) on the CT grid
    OUT/predictions/stamp.json          model SHA-256 + options the predictions were made with
    OUT/report/                         evaluate_folder's report (summary.json, per_case.csv, ...)
    OUT/report/stamp.json               the stamp + case list of that report
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import InputError
from rrcunet.evaluation.evaluate import evaluate_folder
from rrcunet.experiments.config import EvaluationConfig
from rrcunet.io import read_image, write_volume
from rrcunet.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

STAMP = "stamp.json"


@dataclass(frozen=True)
class ModelScore:
    """What :func:`score_model` produced.

    Args:
        pred_dir: the predictions folder.
        report_dir: the evaluation report folder.
        summary: the report's ``summary.json`` (``mean_of_cases``, ``voxel_pooled``, ``summary`` rows, ...).
        case_ids: the scored cases.
        cached: True when the report was read back, not recomputed.
    """

    pred_dir: Path
    report_dir: Path
    summary: dict[str, Any]
    case_ids: list[str]
    cached: bool


def split_case_ids(dataset_dir: str | Path, subset: str) -> list[str]:
    """Case ids of a manifest split (``"test"``, ``"val"``, ``"train"``, ``"all"``) that have a label.

    Raises:
        InputError: the split is empty or no case in it has a label.
    """
    manifest = DatasetManifest.load(dataset_dir)
    cases = [c for c in manifest.subset(subset) if c.label is not None]
    if not cases:
        hint = (" (hold cases out with `rrcunet import --test-list FILE`, `rrcunet experiment merge-datasets "
                "--test-list FILE`, or score the validation split: evaluation.subset=val / --subset val)"
                if subset == "test" else "")
        raise InputError(f"{dataset_dir}: the manifest's {subset!r} split has no labelled case{hint}")
    return [c.case_id for c in cases]


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def predict_split(model_path: str | Path, dataset_dir: str | Path, case_ids: list[str], pred_dir: str | Path, *,
                  evaluation: EvaluationConfig = EvaluationConfig(), drop_outside_lung: bool = False,
                  progress: bool = False) -> Path:
    """Predict ``case_ids`` of a prepared dataset with a model file into ``pred_dir`` (resumable).

    No postprocessing is applied, unless ``drop_outside_lung``: then tumour components with no
    voxel in the lung region are dropped, as ``rrcunet predict`` does by default. No volume
    threshold is ever applied (not even the model file's own).

    Returns:
        ``pred_dir``.

    Raises:
        InputError: unreadable model or case files.
    """
    # lazy: rrcunet.inference and rrcunet.models import torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.inference import InferenceConfig, PostprocessConfig, Predictor, file_sha256
    from rrcunet.models.model_file import load_model

    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"{model_path}: model file not found; a finished run folder holds best.safetensors")
    out = Path(pred_dir)
    stamp = {"model_sha256": file_sha256(model_path), "lung": evaluation.lung, "bf16": evaluation.bf16,
             "dataset": str(Path(dataset_dir).resolve()), "drop_outside_lung": drop_outside_lung}
    if out.is_dir() and _read_stamp(out / STAMP) != stamp:
        for p in out.glob("*_seg.nii.gz"):  # made by another model or with other options
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c}_seg.nii.gz" for c in case_ids}
    for p in out.glob("*_seg.nii.gz"):  # the report scores every prediction in the folder: keep only these cases
        if p.name not in wanted:
            p.unlink()
    atomic_write_text(out / STAMP, json.dumps(stamp, indent=2) + "\n")
    todo = [c for c in case_ids if not (out / f"{c}_seg.nii.gz").is_file()]
    if not todo:
        return out
    manifest = DatasetManifest.load(dataset_dir)
    config = InferenceConfig(device=evaluation.device, bf16=evaluation.bf16,
                             postprocess=PostprocessConfig(min_tumour_ml=0.0, keep_outside_lung=not drop_outside_lung))
    model, meta = load_model(model_path, device="cpu")
    predictor = Predictor(model=model, meta=meta, config=config, model_path=model_path,
                          model_sha256=stamp["model_sha256"])
    for cid in tqdm(todo, desc=f"predict {model_path.parent.name}", unit="case", disable=None if progress else True):
        entry = manifest.case(cid)
        ct = read_image(manifest.resolve(dataset_dir, entry.image))
        lung = None
        if evaluation.lung == "dataset":
            if entry.lung is None:
                raise InputError(f"{dataset_dir}: case {cid} has no lung mask in the manifest; score with "
                                 "evaluation.lung=classical (--lung classical)")
            lung = read_image(manifest.resolve(dataset_dir, entry.lung), kind="label")
            lung = lung.with_array((lung.array > 0).astype("uint8"))
        result = predictor.predict_volume(ct, lung=lung)
        labels = result.labels.with_array(result.labels.array.astype("uint8"))
        write_volume(labels, out / f"{cid}_seg.nii.gz", overwrite=True)
    return out


def score_model(model_path: str | Path, dataset_dir: str | Path, out_dir: str | Path, *, subset: str = "test",
                evaluation: EvaluationConfig = EvaluationConfig(), figures: bool = False,
                progress: bool = False, title: str | None = None) -> ModelScore:
    """Predict a split with a model file and write the evaluation report (both cached).

    Args:
        model_path: a model file (``RUN/best.safetensors``).
        dataset_dir: the prepared dataset.
        out_dir: ``OUT`` (layout in the module docstring).
        subset: the manifest split to score.
        evaluation: lung source, device, bf16, surface tolerance.
        figures: per-case slice and 3D figures in the report.
        progress: progress bars.
        title: report title.

    Returns:
        a :class:`ModelScore`.
    """
    # lazy: rrcunet.inference imports torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.inference import file_sha256

    out = Path(out_dir)
    case_ids = split_case_ids(dataset_dir, subset)
    pred_dir = predict_split(model_path, dataset_dir, case_ids, out / "predictions", evaluation=evaluation,
                             progress=progress)
    report = out / "report"
    stamp = {"model_sha256": file_sha256(model_path), "evaluation": {
        "lung": evaluation.lung, "bf16": evaluation.bf16, "tolerance_mm": evaluation.tolerance_mm},
        "subset": subset, "cases": case_ids, "figures": figures}
    if _read_stamp(report / STAMP) == stamp and (report / "summary.json").is_file():
        summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
        return ModelScore(pred_dir, report, summary, case_ids, cached=True)
    (report / STAMP).unlink(missing_ok=True)
    evaluate_folder(pred_dir, dataset_dir, report, tolerance_mm=evaluation.tolerance_mm, figures=figures,
                    overwrite=True, progress=progress, title=title or f"{Path(model_path).parent.name} on {subset}")
    atomic_write_text(report / STAMP, json.dumps(stamp, indent=2) + "\n")
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    return ModelScore(pred_dir, report, summary, case_ids, cached=False)
