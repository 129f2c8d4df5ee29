"""benchmarks/ensemble_check.py: its arg-max rows score exactly as `rrcunet experiment postprocess`
does, an ensemble of one model with itself scores as the model alone, and a probability cut moves
the tumour as the rule says."""

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


def test_argmax_rows_match_experiment_postprocess_and_a_self_ensemble(tmp_path: Path, chest_dataset: Path):
    from rrcunet.cli.main import main
    from tests.inference.helpers import save_tiny_model

    bench = _load_benchmark()
    model = save_tiny_model(tmp_path / "m.safetensors", seed=1)
    thresholds = [0.0, 0.5, 5.0]
    rules, alone = bench.score(str(chest_dataset), "val", [str(model)], [0.3], thresholds)
    assert rules == ["argmax", "p>=0.3"]
    assert any(p for _, p, _ in alone[("argmax", 0.0)])  # some tumour predicted: the comparison means something

    out = tmp_path / "pp"
    assert main(["experiment", "postprocess", str(model), "--data", str(chest_dataset), "-o", str(out),
                 "--lung", "classical", "--candidates", "0.5", "5", "--no-progress"]) == 0
    rows = {r["min_tumour_ml"]: r for r in json.loads((out / "postprocess.json").read_text())["rows"]}
    for ml in thresholds:
        mean, as_one, pooled = bench.summary(alone[("argmax", ml)])
        assert mean == pytest.approx(rows[ml]["dice_mean_of_cases"], abs=1e-9)
        assert as_one == pytest.approx(rows[ml]["dice_mean_empty_as_1"], abs=1e-9)
        assert pooled == pytest.approx(rows[ml]["dice_pooled"], abs=1e-9)

    _, twice = bench.score(str(chest_dataset), "val", [str(model), str(model)], [0.3], thresholds)
    assert twice == alone

    # The cut replaces the arg-max's tumour: at 0 every voxel is tumour (one component, touching the
    # lung, so kept), above 1 none is.
    from tests.inference.helpers import chest

    n_voxels = chest()[0].array.size
    _, extremes = bench.score(str(chest_dataset), "val", [str(model)], [0.0, 1.01], [0.0])
    assert [p for _, p, _ in extremes[("p>=0", 0.0)]] == [n_voxels, n_voxels]
    assert [p for _, p, _ in extremes[("p>=1.01", 0.0)]] == [0, 0]

    other = save_tiny_model(tmp_path / "m2.safetensors", seed=2)
    _, mixed = bench.score(str(chest_dataset), "val", [str(model), str(other)], [], [0.0])
    assert mixed[("argmax", 0.0)] != alone[("argmax", 0.0)]  # a second, different model does change the result


def test_summary_conventions():
    bench = _load_benchmark()
    # (intersection, predicted, true) per case: a hit, a miss, a tumour-free case with nothing predicted.
    mean, as_one, pooled = bench.summary([(3, 4, 4), (0, 0, 2), (0, 0, 0)])
    assert mean == pytest.approx((0.75 + 0.0) / 2)
    assert as_one == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert pooled == pytest.approx(6 / 10)
