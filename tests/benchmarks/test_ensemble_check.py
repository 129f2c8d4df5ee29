"""benchmarks/ensemble_check.py: its arg-max rows score exactly as `rrcunet experiment postprocess`
does, an ensemble of one model with itself scores as the model alone, and a probability cut moves
the tumour as the rule says. (The Dice conventions are `score_thresholds`', tested in
tests/experiments/test_exp_postprocessing.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("ensemble_check", REPO / "benchmarks" / "ensemble_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chest_dataset(tmp_path_factory) -> Path:
    """Two validation cases of the analytic chest, as a prepared dataset."""
    from tests.inference.helpers import write_chest_dataset

    return write_chest_dataset(tmp_path_factory.mktemp("ens") / "ds")


def _voxels(cases) -> list[int]:
    return [int(c.voxels.sum()) for c in cases]


def test_argmax_rows_match_experiment_postprocess_and_a_self_ensemble(tmp_path: Path, chest_dataset: Path):
    from rrcunet.cli.main import main
    from rrcunet.experiments.postprocessing import score_thresholds
    from tests.inference.helpers import save_tiny_model

    bench = _load_benchmark()
    model = save_tiny_model(tmp_path / "m.safetensors", seed=1)
    thresholds = [0.0, 0.5, 5.0]
    alone = bench.score(str(chest_dataset), "val", [str(model)], [0.3])
    assert list(alone) == ["argmax", "p>=0.3"]
    assert any(_voxels(alone["argmax"]))  # some tumour predicted: the comparison means something

    out = tmp_path / "pp"
    assert main(["experiment", "postprocess", str(model), "--data", str(chest_dataset), "-o", str(out),
                 "--lung", "classical", "--candidates", "0.5", "5", "--no-progress"]) == 0
    rows = {r["min_tumour_ml"]: r for r in json.loads((out / "postprocess.json").read_text())["rows"]}
    for row in score_thresholds(alone["argmax"], thresholds):
        ml = row.min_tumour_ml
        assert row.dice_mean_of_cases == pytest.approx(rows[ml]["dice_mean_of_cases"], abs=1e-9)
        assert row.dice_mean_empty_as_1 == pytest.approx(rows[ml]["dice_mean_empty_as_1"], abs=1e-9)
        assert row.dice_pooled == pytest.approx(rows[ml]["dice_pooled"], abs=1e-9)

    twice = bench.score(str(chest_dataset), "val", [str(model), str(model)], [0.3])
    for rule in alone:
        assert score_thresholds(twice[rule], thresholds) == score_thresholds(alone[rule], thresholds)

    # The cut replaces the arg-max's tumour: at 0 every voxel is tumour (one component, touching the
    # lung, so kept), above 1 none is.
    from tests.inference.helpers import chest

    n_voxels = chest()[0].array.size
    extremes = bench.score(str(chest_dataset), "val", [str(model)], [0.0, 1.01])
    assert _voxels(extremes["p>=0"]) == [n_voxels, n_voxels]
    assert _voxels(extremes["p>=1.01"]) == [0, 0]

    other = save_tiny_model(tmp_path / "m2.safetensors", seed=2)
    mixed = bench.score(str(chest_dataset), "val", [str(model), str(other)], [])
    # a second, different model does change the result
    assert score_thresholds(mixed["argmax"], [0.0]) != score_thresholds(alone["argmax"], [0.0])
