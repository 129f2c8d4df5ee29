"""``rrcunet experiment ablation`` end to end on 4 tiny phantoms (2 train / 1 val / 1 test), 2 variants ×
1 epoch × a base-2, 2-level network: the generated data, the Table 5 report, parameter counts, the
size/location analysis, and resume (finished runs skipped, an unfinished one continued)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.experiments.conftest import TINY_GENERATOR, TINY_TRAIN

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "ablation_cpu.json"
TINY = [*TINY_GENERATOR, *TINY_TRAIN, "phantoms.n_train=2", "phantoms.n_val=1", "phantoms.n_test=1",
        "evaluation.device=cpu"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CLI run of the benchmark config, shrunk by overrides (the overrides after --seeds test the
    argument routing)."""
    import torch

    from rrcunet.cli.main import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ablation") / "exp"
    argv = ["experiment", "ablation", "--config", str(CONFIG), "-o", str(out), "--variants", "rrcunet,cgpd",
            "--no-progress", "--seeds", "0", *TINY]
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_ablation_writes_table5_with_both_aggregations(experiment: Path):
    out = experiment
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert [len(manifest["split"][k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert manifest["split"]["test"] == ["phantom_0003"]  # the held-out list = the last case
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["cgpd-seed0", "rrcunet-seed0"]
    md = (out / "ablation.md").read_text()
    header = "| block | IoU 3 labels | F1 3 labels | Dice tumour | IoU tumour |"
    for section in ("## Table 5, mean of cases", "## Table 5, voxel-pooled"):
        table = md.split(section, 1)[1].split("##", 1)[0]
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        assert lines[0] == header
        assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["RRc block (RRc-UNet 3D)", "CGPD block"]
        assert all(len(ln.split("|")) == 7 for ln in lines)
    assert "## Cost" in md and "One seed" in md
    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert list(rows) == ["rrcunet", "cgpd"]
    for variant, row in rows.items():
        summary = json.loads((out / "eval" / f"{variant}-seed0" / "report" / "summary.json").read_text())
        for section in ("mean_of_cases", "voxel_pooled"):
            for key in ("iou_micro", "f1_micro", "tumour_dice", "tumour_iou"):
                value, ref = float(row[f"{section}/{key}"]), summary[section][key]
                assert (math.isnan(value) and ref is None) or value == pytest.approx(ref)
        assert row["mean_of_cases/tumour_dice_sd"] == "nan"  # one seed: no spread
        assert 0 < float(row["wall_time_min"]) and float(row["epochs"]) == 1.0
    doc = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in doc["runs"]] == ["rrcunet", "cgpd"]


@pytest.mark.slow
def test_parameter_counts_match_build_model(experiment: Path):
    from rrcunet.models import build_model

    rows = {r["variant"]: r for r in csv.DictReader((experiment / "ablation.csv").open())}
    for variant in ("rrcunet", "cgpd"):
        net = build_model(variant, in_channels=2, out_channels=3, base_filters=2, levels=2, norm_groups=1, t=2,
                          dropout=0.0)
        assert int(rows[variant]["parameters"]) == sum(p.numel() for p in net.parameters())
    assert rows["rrcunet"]["parameters"] != rows["cgpd"]["parameters"]


@pytest.mark.slow
def test_analysis_of_the_rrc_model_is_written(experiment: Path):
    folder = experiment / "analysis" / "rrcunet-seed0"
    for name in ("analysis.md", "lesions.csv", "by_size.csv", "by_location.csv", "size_location.png"):
        assert (folder / name).is_file(), name
    md = (folder / "analysis.md").read_text()
    assert "## Tables 3 and 4 (analogues)" in md and "## Tumour Dice by location" in md
    facts = json.loads((experiment / "data" / "manifest.json").read_text())["cases"][3]["source"]["tumours"]
    lesions = list(csv.DictReader((folder / "lesions.csv").open()))
    assert 1 <= len(lesions) <= len(facts)  # one lesion per tumour, fewer when masks touch
    assert all(r["location"] != "unknown" for r in lesions)
    assert (experiment / "eval" / "rrcunet-seed0" / "report" / "dice_histogram.png").is_file()  # Figure 7


@pytest.mark.slow
def test_resume_skips_finished_runs_and_continues_unfinished_ones(experiment: Path):
    from rrcunet.errors import InputError
    from rrcunet.experiments import load_experiment_config, run_ablation
    from rrcunet.training import train

    config = load_experiment_config(CONFIG, [*TINY, "variants=rrcunet,cgpd", "seeds=0"])
    with pytest.raises(InputError, match="already holds an experiment"):
        run_ablation(config, experiment)
    calls: list[tuple[str, bool]] = []

    def spy(cfg, run_dir, *, resume=False):
        calls.append((Path(run_dir).name, resume))
        return train(cfg, run_dir, resume=resume)

    before = (experiment / "eval" / "rrcunet-seed0" / "report" / "summary.json").stat().st_mtime_ns
    result = run_ablation(config, experiment, resume=True, train_fn=spy)
    assert calls == [] and not any(r.trained_now for r in result.runs)
    assert (experiment / "eval" / "rrcunet-seed0" / "report" / "summary.json").stat().st_mtime_ns == before  # cached

    (experiment / "runs" / "cgpd-seed0" / "experiment_done.json").unlink()  # as if killed before it finished
    result = run_ablation(config, experiment, resume=True, train_fn=spy)
    assert calls == [("cgpd-seed0", True)]
    assert [r.trained_now for r in result.runs] == [False, True]
    assert (experiment / "runs" / "cgpd-seed0" / "experiment_done.json").is_file()

    changed = load_experiment_config(CONFIG, [*TINY, "variants=rrcunet", "seeds=0", "optim.lr=0.5"])
    from rrcunet.errors import ConfigError

    saved = (experiment / "experiment.json").read_text()
    with pytest.raises(ConfigError, match="cannot resume with a different config"):
        run_ablation(changed, experiment, resume=True, train_fn=spy)
    assert (experiment / "experiment.json").read_text() == saved and len(calls) == 1

    # the CLI resumes from the saved experiment.json alone: everything is finished, nothing is trained
    from rrcunet.cli.main import main

    assert main(["experiment", "ablation", "-o", str(experiment), "--resume", "--no-progress"]) == 0
    assert {r["variant"] for r in csv.DictReader((experiment / "ablation.csv").open())} == {"rrcunet", "cgpd"}


def test_experiment_overrides_are_routed_and_checked():
    from rrcunet.errors import ConfigError
    from rrcunet.experiments import load_experiment_config

    cfg = load_experiment_config(CONFIG, ["phantoms.n_test=3", "schedule.max_minutes=5", "train.optim.lr=0.01",
                                          "evaluation.subset=val", "phantoms.generator.matrix=96"])
    assert cfg.phantoms.n_test == 3 and cfg.evaluation.subset == "val"
    assert cfg.train["schedule"]["max_minutes"] == 5.0 and cfg.train["optim"]["lr"] == 0.01
    assert cfg.phantoms.phantom_config().matrix == 96
    assert cfg.variants == ("rrcunet", "cgpd", "residual", "recurrent", "unet")
    with pytest.raises(ConfigError, match="unknown variant 'coordunet'"):
        load_experiment_config(CONFIG, ["variants=rrcunet,coordunet"])
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_experiment_config(CONFIG, ["bogus.x=1"])
    with pytest.raises(ConfigError, match="model 'rrcunet' has no option"):  # at load time, not after training
        load_experiment_config(CONFIG, ["model.nonsense=3"])
    with pytest.raises(ConfigError, match="phantoms.generator.wrong is not a phantom option"):
        load_experiment_config(CONFIG, ["phantoms.generator.wrong=1"]).phantoms.phantom_config()
