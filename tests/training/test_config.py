"""TrainConfig: JSON parsing with type checks, dotted overrides, packaged configs, resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrcunet.errors import ConfigError
from rrcunet.training.config import TrainConfig, load_config
from rrcunet.config import apply_overrides, config_from_dict, config_to_dict, config_to_json, packaged_configs
from rrcunet.training.trainer import check_resume_config, resolve_config


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 1e-4
    assert cfg.schedule.batch_size == 1 and cfg.schedule.epochs == 1000 and cfg.schedule.accumulate == "all"
    assert cfg.schedule.early_stopping and cfg.schedule.monitor == "val_loss"
    assert cfg.preprocess.target_shape == (256, 256, 48) and cfg.preprocess.clip == (-1200.0, 600.0)
    assert cfg.model.name == "rrcunet" and cfg.in_channels == 2 and cfg.out_channels == 3
    assert cfg.loss.gamma == 2.0 and cfg.loss.alpha == 1.0


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=1e-3", "model.base_filters=8", "preprocess.target_shape=96,96,32",
                             "schedule.accumulate=4", "runtime.channels_last=yes", "data.patch_size=[64,64,32]",
                             "loss.alpha=1,1,2", "task=lung", "data.max_train_cases=none",
                             "data.patch_sampling=lesion"])
    assert cfg.optim.lr == 1e-3
    assert cfg.model.kwargs == {"base_filters": 8}  # model.X is short for model.kwargs.X
    assert cfg.preprocess.target_shape == (96, 96, 32)
    assert cfg.schedule.accumulate == 4
    assert cfg.runtime.channels_last is True
    assert cfg.data.patch_size == (64, 64, 32) and cfg.data.patch_sampling == "lesion"
    assert cfg.loss.alpha == (1.0, 1.0, 2.0)
    assert cfg.task == "lung" and cfg.in_channels == 1 and cfg.out_channels == 2
    assert load_config(None, ["schedule.accumulate=ALL"]).schedule.accumulate == "all"


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", r"unknown config key 'optim.lrr'.*valid keys under 'optim': .*\blr\b"),
    ("nosection.x=1", r"unknown config key 'nosection'.*valid keys under 'config': .*optim"),
    ("optim.lr=fast", r"optim.lr must be a number, not 'fast'"),
    ("schedule.epochs=2.5", r"schedule.epochs must be an integer"),
    ("schedule.accumulate=some", r"schedule.accumulate must be int or 'all'"),
    ("runtime.amp=fp8", r"runtime.amp must be 'none' or 'bf16' or 'fp16'"),
    ("preprocess.target_shape=96,96", r"preprocess.target_shape must be list of 3 int"),
    ("optim.lr", r"not key=value"),
    ("optim.lr.x=1", r"optim.lr is not a section"),
    ("schedule.epochs=0", r"schedule.epochs must be >= 1"),
    ("augment.flip_prob=1.5", r"augment.flip_prob must be a probability"),
    ("augment.flip_axes=[0,3]", r"augment.flip_axes must list distinct axes among 0, 1, 2"),
    ("augment.intensity_prob=2", r"augment.intensity_prob must be a probability"),
    ("augment.noise_std=-1", r"augment.noise_std must be in \[0, 10\)"),
    ("augment.flip_axes=[0,0]", r"augment.flip_axes must list distinct axes among 0, 1, 2"),
    ("data.patch_sampling=blob", r"data.patch_sampling must be 'voxel' or 'lesion'"),
    ("model.kwargs.in_channels=5", r"contradicts task 'tumour'"),
])
def test_bad_overrides_raise(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_json_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"optim": {"lr": "x"}}')
    with pytest.raises(ConfigError, match=r"bad.json: optim.lr must be a number"):
        load_config(bad)
    bad.write_text('{"optimizer": {}}')
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer'"):
        load_config(bad)
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"neither a file nor a packaged config; packaged configs: .*paper"):
        load_config(tmp_path / "missing")


def test_json_round_trip_is_exact():
    cfg = load_config(None, ["model.base_filters=8", "data.patch_size=64,64,32", "loss.alpha=1,1,3"])
    back = config_from_dict(TrainConfig, json.loads(config_to_json(cfg)))
    assert back == cfg


@pytest.mark.parametrize("name", ["paper", "cpu_tumour", "cpu_tumour_real", "cpu_lung"])
def test_packaged_configs_load(name):
    assert name in packaged_configs()
    cfg = load_config(name)
    if name == "paper":
        assert cfg.model.name == "rrcunet" and cfg.preprocess.target_shape == (256, 256, 48)
        assert cfg.schedule.epochs == 1000 and cfg.schedule.accumulate == "all"
        assert cfg.model.kwargs.get("base_filters", 32) == 32
    if name == "cpu_lung":
        assert cfg.task == "lung" and cfg.model.name == "coordunet"


def test_resolve_fills_model_defaults_and_checks_options(tmp_path):
    cfg = load_config(None, [f"data.dataset={tmp_path}", "model.base_filters=8", "runtime.checkpointing=true"])
    res = resolve_config(cfg)
    assert res.model.kwargs["base_filters"] == 8
    assert res.model.kwargs["levels"] == 5 and res.model.kwargs["t"] == 2  # the model's defaults written out
    assert res.model.kwargs["in_channels"] == 2 and res.model.kwargs["checkpointing"] is True
    assert res.data.dataset == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match=r"model 'rrcunet' has no option\(s\) bogus: valid options are .*base_filters"):
        resolve_config(load_config(None, [f"data.dataset={tmp_path}", "model.bogus=1"]))
    with pytest.raises(ConfigError, match="data.dataset is not set"):
        resolve_config(TrainConfig())


def test_resume_refuses_changed_recipe(tmp_path):
    a = config_to_dict(load_config(None, ["optim.lr=1e-3"]))
    check_resume_config(a, config_to_dict(load_config(None, ["optim.lr=1e-3", "schedule.epochs=5"])), tmp_path)
    with pytest.raises(ConfigError, match=r"cannot resume with a different config \(optim.lr: 0.001 -> 0.01\)"):
        check_resume_config(a, config_to_dict(load_config(None, ["optim.lr=1e-2"])), tmp_path)


def test_resume_of_a_run_saved_before_an_option_existed(tmp_path):
    # a config.json written by an older rrcunet lacks the newer option: its default is what ran
    old = config_to_dict(load_config(None, ["optim.lr=1e-3"]))
    del old["data"]["patch_sampling"]
    check_resume_config(old, config_to_dict(load_config(None, ["optim.lr=1e-3"])), tmp_path)
    with pytest.raises(ConfigError, match=r"data.patch_sampling: None -> 'lesion'"):
        check_resume_config(old, config_to_dict(load_config(None, ["optim.lr=1e-3", "data.patch_sampling=lesion"])),
                            tmp_path)


def test_apply_overrides_leaves_input_untouched():
    data = {"optim": {"lr": 0.1}}
    out = apply_overrides(data, ["optim.lr=0.2"], cls=TrainConfig)
    assert data == {"optim": {"lr": 0.1}} and out == {"optim": {"lr": 0.2}}


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.json")),
                         ids=lambda p: p.name)
def test_repository_example_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from rrcunet.cli.main import main

    assert main(["train", "-o", str(tmp_path / "run"), "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key 'optim.lrr'" in err[0]
    assert main(["train", "optim.lr=1"]) == 2
    assert "missing -o RUN_DIR" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.json, so there is no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_shape_the_network_cannot_take_is_refused_when_the_config_is_loaded():
    # before any data is read: 4 levels need multiples of 8; the message gives the shape to use
    with pytest.raises(ConfigError, match=r"preprocess.target_shape \(80, 80, 44\) must be divisible by 8.*"
                                          r"use preprocess.target_shape=80,80,48"):
        load_config("cpu_tumour", ["preprocess.target_shape=80,80,44"])
    with pytest.raises(ConfigError, match=r"data.patch_size \(30, 32, 16\) must be divisible by 4"):
        load_config(None, ["model.levels=3", "data.patch_size=30,32,16"])
    assert load_config(None, ["model.levels=3", "data.patch_size=32,32,16"]).data.patch_size == (32, 32, 16)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=inf", "optim.lr must be a number, not 'inf'"),
    ("optim.lr=1e300", r"optim.lr must be in \(0, 10\]"),
    ("optim.weight_decay=nan", "optim.weight_decay must be a number, not 'nan'"),
    ("optim.eps=nan", "optim.eps must be a number, not 'nan'"),
    ("optim.eps=-1", r"optim.eps must be in \(0, 1\]"),
    ("optim.min_lr=nan", "optim.min_lr must be a number"),
    ("runtime.seed=1e23", "runtime.seed must be an integer"),
    ("model.kwargs.base_filters=1e9", "base_filters=1000000000.0 is invalid"),
    ("model.levels=50", "levels=50 is invalid: expected an integer <= 8"),
    ("runtime.num_threads=100000", r"runtime.num_threads must be in \[1, 1024\]"),
    ("data.patch_size=4096,4096,4096", "is larger than preprocess.target_shape"),
])
def test_values_that_would_break_the_run_are_refused_when_the_config_is_loaded(override, message):
    # issue 22: each of these passed validation and failed at run time, leaving a run folder behind
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
