"""The GPU recipe files in configs/paper/ cannot rot: each one loads and runs end to end for one tiny
step on phantoms (sizes shrunk with key=value overrides), and the commands of docs/reproduction.md
parse with the CLI."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.experiments.conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.json"))


def _is_experiment(path: Path) -> bool:
    return "train" in json.loads(path.read_text())


def test_there_are_paper_configs():
    names = {p.name for p in PAPER_CONFIGS}
    assert {"rrcunet.json", "ablation.json"} <= names


def test_train_recipe_is_the_papers():
    from rrcunet.training import load_config

    cfg = load_config(REPO / "configs" / "paper" / "rrcunet.json")
    assert cfg.preprocess.target_shape == (256, 256, 48) and cfg.preprocess.clip == (-1200.0, 600.0)
    assert cfg.model.name == "rrcunet" and cfg.model.kwargs["base_filters"] == 32 and cfg.model.kwargs["levels"] == 5
    assert (cfg.schedule.epochs, cfg.schedule.accumulate, cfg.schedule.batch_size) == (1000, "all", 1)
    assert cfg.schedule.early_stopping and cfg.schedule.monitor == "val_loss"
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 3e-4, 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in PAPER_CONFIGS if not _is_experiment(p)], ids=lambda p: p.name)
@pytest.mark.parametrize("switches", [(), ("runtime.amp=bf16", "runtime.checkpointing=true")],
                         ids=["fp32", "bf16+checkpointing"])
def test_train_config_runs_one_tiny_step(path: Path, switches: tuple[str, ...], tiny_benchmark: Path, tmp_path: Path):
    from rrcunet.training import load_config, train
    from rrcunet.models.model_file import load_model

    cfg = load_config(path, [f"data.dataset={tiny_benchmark}", *TINY_TRAIN, *switches])
    result = train(cfg, tmp_path / "run")
    assert result.epochs_completed == 1
    _, meta = load_model(tmp_path / "run" / "best.safetensors")
    assert meta.model_name == cfg.model.name
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["runtime"]["checkpointing"] == saved["model"]["kwargs"]["checkpointing"] == bool(switches)
    assert saved["runtime"]["amp"] == ("bf16" if switches else "none")


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in PAPER_CONFIGS if _is_experiment(p)], ids=lambda p: p.name)
def test_experiment_config_runs_one_tiny_step(path: Path, tiny_benchmark: Path, tmp_path: Path):
    from rrcunet.experiments import load_experiment_config, run_ablation

    cfg = load_experiment_config(path, [f"dataset={tiny_benchmark}", *TINY_TRAIN, "variants=rrcunet", "seeds=0",
                                        "evaluation.device=cpu"])
    result = run_ablation(cfg, tmp_path / "exp")
    assert [r.epochs_completed for r in result.runs] == [1]
    assert result.files["markdown"].is_file() and (tmp_path / "exp" / "analysis" / "rrcunet-seed0").is_dir()


def _doc_commands() -> list[str]:
    text = (REPO / "docs" / "reproduction.md").read_text(encoding="utf-8")
    commands, in_block, current = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = line.split(" #", 1)[0].rstrip()
        current = f"{current} {line.rstrip(chr(92)).strip()}" if current else line.rstrip(chr(92)).strip()
        if line.endswith("\\"):
            continue
        if current.startswith("rrcunet "):
            commands.append(current)
        current = ""
    return commands


def test_reproduction_doc_commands_parse():
    from rrcunet.cli.main import build_parser

    commands = _doc_commands()
    assert len(commands) >= 8
    parser = build_parser()
    for cmd in commands:
        try:
            args = parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit as exc:  # argparse reports the problem on stderr
            raise AssertionError(f"docs/reproduction.md: command does not parse: {cmd}") from exc
        assert getattr(args, "func", None) is not None, cmd
