"""Choosing a model's smallest-tumour volume on labelled cases: the shortcut scores (component sums,
no relabelling) against the product's own rule applied and scored voxel by voxel, the choice rule,
and the command end to end with a model file that then carries its choice into `rrcunet predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rrcunet.errors import InputError
from rrcunet.experiments.postprocessing import (
    ThresholdScore,
    case_components,
    check_candidates,
    choose,
    score_thresholds,
)
from rrcunet.inference import PostprocessConfig, postprocess_labels
from rrcunet.io import Geometry, Volume

GEOM = Geometry((24, 24, 12), (2.0, 2.0, 2.5))  # 10 mm³ = 0.01 mL per voxel


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, truth) label maps: partial hits, small true and false components, a tumour-free
    case with a false alarm, a missed tumour, and a case empty in both."""
    rng = np.random.default_rng(5)
    lung = np.ones(GEOM.shape, np.uint8)
    out = []
    truth = lung.copy()
    truth[2:10, 2:10, 2:8] = 2                       # 384 voxels
    truth[15:17, 15:17, 1:3] = 2                     # a small true lesion, 8 voxels
    pred = lung.copy()
    pred[3:11, 2:10, 2:8] = 2                        # 336 of 384 found, 48 extra
    pred[15:17, 15:17, 2:4] = 2                      # 8 voxels, 4 of them on the small lesion
    pred[20, 3, 9] = 2                               # a 1-voxel false alarm
    pred[20:23, 20:22, 5:7] = 2                      # a 12-voxel false alarm
    out.append((pred, truth))
    truth = lung.copy()                              # tumour-free, a 6-voxel false alarm
    pred = lung.copy()
    pred[5:8, 5:7, 5] = 2
    out.append((pred, truth))
    truth = lung.copy()                              # missed tumour
    truth[4:9, 4:9, 4:9] = 2
    out.append((lung.copy(), truth))
    out.append((lung.copy(), lung.copy()))           # empty in both
    truth = lung.copy()                              # random blobs
    truth[rng.random(GEOM.shape) < 0.02] = 2
    pred = lung.copy()
    pred[rng.random(GEOM.shape) < 0.02] = 2
    pred[10:14, 10:14, 3:7] = 2
    out.append((pred, truth))
    return out


def _reference(cases, threshold: float) -> tuple[float, float, float]:
    """The product's rule (postprocess_labels) applied, then Dice counted voxel by voxel."""
    dices, dices_1, tp_all, total_all = [], [], 0, 0
    for pred, truth in cases:
        kept, _ = postprocess_labels(Volume(pred, GEOM, "label"), None,
                                     PostprocessConfig(min_tumour_ml=threshold, keep_outside_lung=True))
        p, t = np.asarray(kept.array) == 2, truth == 2
        tp, total = int((p & t).sum()), int(p.sum() + t.sum())
        tp_all, total_all = tp_all + tp, total_all + total
        if total == 0:
            dices_1.append(1.0)
            continue
        dices.append(2 * tp / total)
        dices_1.append(2 * tp / total)
    return float(np.mean(dices)), float(np.mean(dices_1)), 2 * tp_all / total_all


@pytest.mark.parametrize("threshold", [0.0, 0.005, 0.02, 0.07, 0.1, 0.5, 10.0])
def test_component_sums_equal_the_rule_applied_voxel_by_voxel(threshold):
    cases = _cases()
    comps = [case_components(p, t, GEOM.voxel_volume_ml, str(i)) for i, (p, t) in enumerate(cases)]
    (row,) = score_thresholds(comps, [threshold])
    mean, mean_1, pooled = _reference(cases, threshold)
    assert row.dice_mean_of_cases == pytest.approx(mean)
    assert row.dice_mean_empty_as_1 == pytest.approx(mean_1)
    assert row.dice_pooled == pytest.approx(pooled)
    assert row.cases == 5


def test_counts_of_removed_components_and_cases():
    comps = [case_components(p, t, GEOM.voxel_volume_ml) for p, t in _cases()[:4]]
    none, small = score_thresholds(comps, [0.0, 0.09])
    assert (none.removed_components, none.false_alarm_cases, none.missed_cases) == (0, 1, 1)
    # below 9 voxels: the 1-voxel and 6-voxel false alarms, and the 8-voxel half-found small lesion
    assert (small.removed_components, small.removed_true_components) == (3, 1)
    assert (small.false_alarm_cases, small.missed_cases) == (0, 1)
    assert small.dice_mean_empty_as_1 > none.dice_mean_empty_as_1


def _row(ml: float, mean: float) -> ThresholdScore:
    return ThresholdScore(ml, mean, mean, 0.5, 0, 0, 0, 0, 3)


def test_choice_is_the_best_mean_and_the_smallest_threshold_on_a_tie():
    assert choose([_row(0.0, 0.7), _row(0.5, 0.8), _row(1.0, 0.8), _row(2.0, 0.75)]).min_tumour_ml == 0.5
    assert choose([_row(0.0, 0.8), _row(0.5, 0.8)]).min_tumour_ml == 0.0
    assert choose([_row(0.0, float("nan")), _row(0.5, float("nan"))]).min_tumour_ml == 0.0


def test_candidates_always_include_no_threshold_and_are_checked():
    assert check_candidates([1, 0.5, 0.5]) == (0.0, 0.5, 1.0)
    for bad in (-0.1, float("nan"), "1", True):
        with pytest.raises(InputError, match="candidate thresholds"):
            check_candidates([bad])


def test_shapes_must_match():
    with pytest.raises(InputError, match="case x: prediction shape"):
        case_components(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 0.01, "x")


@pytest.fixture(scope="module")
def chest_dataset(tmp_path_factory) -> Path:
    """Two validation cases of the analytic chest (its lungs, two tumours), written as a prepared dataset."""
    from tests.inference.helpers import write_chest_dataset

    return write_chest_dataset(tmp_path_factory.mktemp("pp") / "ds")


def test_command_writes_the_choice_into_a_new_model_file_that_predict_applies(
        tmp_path: Path, chest_dataset: Path, capsys: pytest.CaptureFixture[str]):
    from rrcunet.cli.main import main
    from rrcunet.models.model_file import read_model_meta, read_safetensors
    from tests.inference.helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "m.safetensors", seed=1)
    before = model.read_bytes()
    out, new = tmp_path / "sel", tmp_path / "m_pp.safetensors"
    assert main(["experiment", "postprocess", str(model), "--data", str(chest_dataset), "-o", str(out),
                 "--lung", "dataset", "--candidates", "0.5", "5", "50", "--write-model", str(new),
                 "--no-progress"]) == 0
    doc = json.loads((out / "postprocess.json").read_text())
    assert [r["min_tumour_ml"] for r in doc["rows"]] == [0.0, 0.5, 5.0, 50.0]
    assert doc["cases"] == ["c1", "c2"] and doc["subset"] == "val"
    best = max(r["dice_mean_of_cases"] for r in doc["rows"] if r["dice_mean_of_cases"] is not None)
    assert doc["chosen"]["dice_mean_of_cases"] == pytest.approx(best)
    assert "**(chosen)**" in (out / "postprocess.md").read_text()
    assert f"chosen: min_tumour_ml={doc['chosen']['min_tumour_ml']:g}" in capsys.readouterr().out

    meta = read_model_meta(new)
    assert meta.postprocess.min_tumour_ml == doc["chosen"]["min_tumour_ml"]
    assert meta.postprocess.selected_on["cases"] == 2
    old_t, _ = read_safetensors(model, expect=("rrcunet-model",))
    new_t, _ = read_safetensors(new, expect=("rrcunet-model",))
    assert old_t.keys() == new_t.keys() and all(torch.equal(old_t[k], new_t[k]) for k in old_t)
    assert model.read_bytes() == before                               # the input is never touched

    # an existing --write-model file is refused before any work
    assert main(["experiment", "postprocess", str(model), "--data", str(chest_dataset), "-o", str(tmp_path / "x"),
                 "--write-model", str(new), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # so is a training checkpoint as the model to copy (it is not a model file)
    from rrcunet.models.model_file import CHECKPOINT_FORMAT, write_safetensors

    ckpt = write_safetensors(tmp_path / "last.safetensors", {"model.w": torch.zeros(1)},
                  {"model_meta": read_model_meta(model).to_dict()}, CHECKPOINT_FORMAT)
    assert main(["experiment", "postprocess", str(ckpt), "--data", str(chest_dataset), "-o", str(tmp_path / "y"),
                 "--write-model", str(tmp_path / "new.safetensors"), "--no-progress"]) == 2
    assert "expected 'rrcunet-model'" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_predictor_applies_the_model_files_choice_unless_an_option_is_given(tmp_path: Path):
    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.models.model_file import with_postprocess
    from tests.inference.helpers import save_tiny_model

    plain = save_tiny_model(tmp_path / "m.safetensors")
    chosen = with_postprocess(plain, tmp_path / "pp.safetensors", {"min_tumour_ml": 0.7})
    p = Predictor.from_file(chosen)
    assert (p.config.postprocess.min_tumour_ml, p.postprocess_source) == (0.7, "model file")
    p = Predictor.from_file(chosen, config=InferenceConfig(postprocess=PostprocessConfig(min_tumour_ml=0)))
    assert (p.config.postprocess.min_tumour_ml, p.postprocess_source) == (0.0, "option")
    p = Predictor.from_file(plain)
    assert (p.config.postprocess.min_tumour_ml, p.postprocess_source) == (0.0, "default")


def test_a_malformed_postprocess_entry_is_refused(tmp_path: Path):
    from rrcunet.models.model_file import read_model_meta, with_postprocess
    from tests.inference.helpers import save_tiny_model

    plain = save_tiny_model(tmp_path / "m.safetensors")
    for i, bad in enumerate(({"min_tumour_ml": -1}, {"min_tumour_ml": "0.5"}, {"other": 1})):
        with pytest.raises(InputError, match="postprocess entry"):
            with_postprocess(plain, tmp_path / f"bad{i}.safetensors", bad)
        assert not (tmp_path / f"bad{i}.safetensors").exists()
    with pytest.raises(InputError, match="already exists"):
        with_postprocess(plain, plain, {"min_tumour_ml": 1})
    assert read_model_meta(plain).postprocess is None
