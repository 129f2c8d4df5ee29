"""Choosing a model's postprocessing on validation data, as nnU-Net does after training: the
smallest-tumour volume (:attr:`rrcunet.inference.PostprocessConfig.min_tumour_ml`) that gives
the best mean of per-case tumour Dice on a labelled split.

Owns :func:`case_components` (each predicted tumour component's volume and true-positive voxels,
once per case), :func:`score_thresholds` (every candidate threshold scored from those, without
relabelling), :func:`select_postprocessing` (predict, score, choose, write) and the table it
writes. The choice can be written into a copy of the model file
(:func:`rrcunet.training.checkpoint.with_postprocess`), where ``rrcunet predict`` applies it by
default and records it in every prediction's JSON.

The predictions are made as ``rrcunet predict`` makes them by default (tumour components with no
voxel in the lung region dropped) but with no volume threshold, then each candidate is applied
on the original CT grids, so thresholds are true mL.

Output folder::

    OUT/postprocess.md      the candidates' scores and the choice, with the definitions
    OUT/postprocess.json    the same as data (rows, chosen, model SHA-256, dataset, split, cases)
    OUT/predictions/        the unthresholded predictions (cached, see rrcunet.experiments.scoring)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import InputError
from rrcunet.experiments.config import EvaluationConfig
from rrcunet.experiments.scoring import predict_split, split_case_ids
from rrcunet.formatting import table
from rrcunet.io import read_image
from rrcunet.io.atomic import atomic_write_text, json_safe

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
TUMOUR = 2


@dataclass(frozen=True)
class CaseComponents:
    """One case's predicted tumour components against its ground truth.

    Args:
        case_id: the case.
        volume_ml: each predicted component's volume (mL).
        true_voxels: each component's voxels that are tumour in the ground truth.
        voxels: each component's voxels.
        truth_voxels: the ground truth's tumour voxels.
    """

    case_id: str
    volume_ml: np.ndarray
    true_voxels: np.ndarray
    voxels: np.ndarray
    truth_voxels: int


@dataclass(frozen=True)
class ThresholdScore:
    """The scores of one candidate ``min_tumour_ml`` over a split.

    Args:
        min_tumour_ml: the threshold (components below it are dropped).
        dice_mean_of_cases: mean per-case tumour Dice, cases with tumour in neither mask left out
            (``rrcunet evaluate``'s convention).
        dice_mean_empty_as_1: the same with such cases scored 1 (the trainer's validation convention).
        dice_pooled: 2ΣTP / (ΣP + ΣT) over all voxels of all cases.
        removed_components: predicted components dropped.
        removed_true_components: dropped components that touch true tumour.
        false_alarm_cases: cases without tumour in the ground truth that still have predicted tumour.
        missed_cases: cases with tumour in the ground truth and none kept in the prediction.
        cases: cases scored.
    """

    min_tumour_ml: float
    dice_mean_of_cases: float
    dice_mean_empty_as_1: float
    dice_pooled: float
    removed_components: int
    removed_true_components: int
    false_alarm_cases: int
    missed_cases: int
    cases: int


def case_components(pred: np.ndarray, truth: np.ndarray, voxel_ml: float, case_id: str = "") -> CaseComponents:
    """Per-component volume and overlap of the predicted tumour (label 2) of one case.

    Components are 26-connected, as in :func:`rrcunet.inference.postprocess.postprocess_labels`.
    """
    # lazy: rrcunet.inference imports torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.inference.measure import tumour_components

    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise InputError(f"case {case_id}: prediction shape {pred.shape} differs from the ground truth's {truth.shape}")
    gt = truth == TUMOUR
    comps = tumour_components(pred == TUMOUR)
    if comps.count:
        true_voxels = np.bincount(comps.labels[gt[comps.box]], minlength=comps.count + 1)[1:]
    else:
        true_voxels = np.zeros(0, dtype=np.int64)
    sizes = comps.sizes.astype(np.int64)
    return CaseComponents(case_id, sizes * float(voxel_ml), true_voxels.astype(np.int64), sizes,
                          int(np.count_nonzero(gt)))


def score_thresholds(cases: Sequence[CaseComponents], candidates_ml: Sequence[float]) -> list[ThresholdScore]:
    """Score each candidate threshold: the kept components of each case give its Dice directly
    (TP and predicted voxels are sums over kept components)."""
    if not cases:
        raise InputError("no case to score")
    rows = []
    for threshold in candidates_ml:
        dices, dices_1 = [], []
        tp_all = pred_all = truth_all = 0
        removed = removed_true = false_alarm = missed = 0
        for c in cases:
            keep = c.volume_ml >= threshold
            tp, pred = int(c.true_voxels[keep].sum()), int(c.voxels[keep].sum())
            removed += int((~keep).sum())
            removed_true += int(((~keep) & (c.true_voxels > 0)).sum())
            tp_all, pred_all, truth_all = tp_all + tp, pred_all + pred, truth_all + c.truth_voxels
            if pred + c.truth_voxels == 0:
                dices_1.append(1.0)
                continue
            dice = 2.0 * tp / (pred + c.truth_voxels)
            dices.append(dice)
            dices_1.append(dice)
            false_alarm += int(c.truth_voxels == 0)
            missed += int(pred == 0)
        total = pred_all + truth_all
        rows.append(ThresholdScore(
            min_tumour_ml=float(threshold),
            dice_mean_of_cases=float(np.mean(dices)) if dices else math.nan,
            dice_mean_empty_as_1=float(np.mean(dices_1)),
            dice_pooled=2.0 * tp_all / total if total else 1.0,
            removed_components=removed, removed_true_components=removed_true,
            false_alarm_cases=false_alarm, missed_cases=missed, cases=len(cases)))
    return rows


def choose(rows: Sequence[ThresholdScore]) -> ThresholdScore:
    """The row with the best mean of cases; on a tie, the smallest threshold (the least removed)."""
    valid = [r for r in rows if not math.isnan(r.dice_mean_of_cases)]
    if not valid:
        return min(rows, key=lambda r: r.min_tumour_ml)
    best = max(r.dice_mean_of_cases for r in valid)
    return min((r for r in valid if r.dice_mean_of_cases >= best - 1e-12), key=lambda r: r.min_tumour_ml)


def none_row(rows: Sequence[ThresholdScore]) -> ThresholdScore:
    """The row of threshold 0 (nothing removed)."""
    return next(r for r in rows if r.min_tumour_ml == 0.0)


def check_candidates(candidates_ml: Sequence[float]) -> tuple[float, ...]:
    """Sorted unique candidates with 0 (no threshold) included; refused unless finite and >= 0."""
    values = set()
    for v in candidates_ml:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"candidate thresholds must be numbers of mL >= 0, not {v!r}")
        values.add(float(v))
    return tuple(sorted(values | {0.0}))


@dataclass(frozen=True)
class PostprocessSelection:
    """What :func:`select_postprocessing` chose and wrote.

    Args:
        rows: every candidate's :class:`ThresholdScore`, by threshold.
        chosen: the chosen row.
        out_dir: the output folder.
        model_out: the model file written with the choice, if requested.
    """

    rows: list[ThresholdScore]
    chosen: ThresholdScore
    out_dir: Path
    model_out: Path | None


def selection_markdown(rows: Sequence[ThresholdScore], chosen: ThresholdScore, *, model: str, dataset: str,
                       subset: str) -> str:
    body = [{"min tumour mL": f"{r.min_tumour_ml:g}" + (" **(chosen)**" if r is chosen else ""),
             "Dice, mean of cases": r.dice_mean_of_cases, "mean, tumour-free cases as 1": r.dice_mean_empty_as_1,
             "Dice, pooled": r.dice_pooled, "removed components": r.removed_components,
             "of which touch tumour": r.removed_true_components, "tumour-free cases with tumour": r.false_alarm_cases,
             "tumour cases missed": r.missed_cases} for r in rows]
    lines = [f"# Postprocessing chosen for {model}", "",
             f"Predicted with tumour outside the lung region dropped (as `rrcunet predict`), then scored on the "
             f"`{subset}` split of `{dataset}` ({chosen.cases} cases) for each smallest-tumour volume: "
             "predicted tumour components below it are dropped.", "",
             table(body, digits=3, right=body[0]),  # every column right-aligned (rows hold threshold 0 at least)
             "Chosen: the best mean of cases (cases with tumour in neither mask left out, as in "
             "`rrcunet evaluate`); on a tie, the smallest threshold. The choice is made on these cases, so "
             "its score here is optimistic: judge it on cases it was not chosen on.", ""]
    return "\n".join(lines)


def select_postprocessing(source: str | Path, dataset_dir: str | Path, out_dir: str | Path, *, subset: str = "val",
                          candidates_ml: Sequence[float] = DEFAULT_CANDIDATES_ML,
                          evaluation: EvaluationConfig = EvaluationConfig(), write_model: str | Path | None = None,
                          progress: bool = False) -> PostprocessSelection:
    """``rrcunet experiment postprocess``: choose ``min_tumour_ml`` for a model on a labelled split.

    Args:
        source: a model file or a run folder (its ``best.safetensors``).
        dataset_dir: the prepared dataset with the ground truth.
        out_dir: ``OUT`` (layout in the module docstring).
        subset: the manifest split to choose on (``"val"``: the model's validation cases).
        candidates_ml: thresholds to try (0, no threshold, is always tried).
        evaluation: lung source, device and bf16 of the predictions.
        write_model: write a copy of the model file with the choice recorded
            (:func:`rrcunet.training.checkpoint.with_postprocess`); refused if the file exists.
        progress: progress bars.

    Raises:
        InputError: not a model, a missing split or label, a prediction off its label's grid, or
            ``write_model`` exists.
    """
    # lazy: rrcunet.inference and rrcunet.models import torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.inference import file_sha256
    from rrcunet.models.model_file import CHECKPOINT_FORMAT, MODEL_FORMAT, read_model_meta, with_postprocess

    src = Path(source)
    model = src / "best.safetensors" if src.is_dir() else src
    if not model.is_file():
        raise InputError(f"{src}: expected a model file (.safetensors) or a run folder with best.safetensors")
    if write_model is not None and Path(write_model).exists():
        raise InputError(f"{write_model}: already exists; choose a new file name for the model with its postprocessing")
    # a readable rrcunet model file before any work (its header only); to copy it, not a training checkpoint
    read_model_meta(model, formats=(MODEL_FORMAT,) if write_model is not None else (MODEL_FORMAT, CHECKPOINT_FORMAT))
    candidates = check_candidates(candidates_ml)
    out = Path(out_dir)
    case_ids = split_case_ids(dataset_dir, subset)
    pred_dir = predict_split(model, dataset_dir, case_ids, out / "predictions", evaluation=evaluation,
                             drop_outside_lung=True, progress=progress)
    manifest = DatasetManifest.load(dataset_dir)
    cases = []
    for cid in case_ids:
        pred = read_image(pred_dir / f"{cid}_seg.nii.gz", kind="label")
        truth = read_image(manifest.resolve(dataset_dir, manifest.case(cid).label), kind="label")
        if not pred.geometry.same_grid(truth.geometry):
            raise InputError(f"{pred_dir / (cid + '_seg.nii.gz')}: on grid {pred.geometry.describe()}, but the ground "
                             f"truth is on {truth.geometry.describe()}")
        cases.append(case_components(pred.array, truth.array, pred.geometry.voxel_volume_ml, cid))
    rows = score_thresholds(cases, candidates)
    chosen = choose(rows)
    sha = file_sha256(model)
    doc = {"model": str(model), "model_sha256": sha, "dataset": str(Path(dataset_dir).resolve()), "subset": subset,
           "cases": case_ids, "candidates_ml": list(candidates), "rows": [asdict(r) for r in rows],
           "chosen": asdict(chosen), "lung": evaluation.lung}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "postprocess.json", json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "postprocess.md", selection_markdown(rows, chosen, model=str(model),
                                                                 dataset=str(dataset_dir), subset=subset))
    model_out = None
    if write_model is not None:
        none = none_row(rows)
        model_out = with_postprocess(model, write_model, {
            "min_tumour_ml": chosen.min_tumour_ml,
            "selected_on": {"dataset": Path(dataset_dir).resolve().name, "subset": subset, "cases": len(case_ids),
                            "rule": "best mean of per-case tumour Dice (tumour-free-in-both cases left out)",
                            "candidates_ml": list(candidates), "source_model_sha256": sha,
                            "dice_mean_of_cases": {"none": none.dice_mean_of_cases,
                                                   "chosen": chosen.dice_mean_of_cases},
                            "dice_mean_empty_as_1": {"none": none.dice_mean_empty_as_1,
                                                     "chosen": chosen.dice_mean_empty_as_1},
                            "dice_pooled": {"none": none.dice_pooled, "chosen": chosen.dice_pooled}}})
    logger.info("chose min_tumour_ml=%g on %d %s cases: Dice mean of cases %.3f (none: %.3f)", chosen.min_tumour_ml,
                len(case_ids), subset, chosen.dice_mean_of_cases, none_row(rows).dice_mean_of_cases)
    return PostprocessSelection(rows, chosen, out, model_out)
