"""The training loop: accumulation, early stopping, end-to-end run / resume / load, determinism."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from rrcunet.errors import ConfigError, InputError
from rrcunet.losses import DeepSupervision, build_loss
from rrcunet.models import build_model
from rrcunet.training import load_config, train
from rrcunet.models.model_file import load_model
from rrcunet.training.trainer import accumulation_groups, train_one_epoch, trained_mirror_axes
from tests.training.conftest import tiny_overrides, write_tiny_dataset

SMALL = {"base_filters": 2, "levels": 2, "norm_groups": 1, "dropout": 0.0}


def test_accumulation_groups():
    assert accumulation_groups(5, 2) == [2, 2, 1]
    assert accumulation_groups(4, None) == [4]
    assert accumulation_groups(3, 10) == [3]
    assert accumulation_groups(0, 1) == []


@pytest.mark.parametrize("per_step", [None, 2])
def test_accumulation_equals_step_on_mean_loss(per_step):
    """K batches accumulated == one step on the mean of their K losses (one graph)."""
    torch.manual_seed(0)
    net_a = build_model("rrcunet", **SMALL)
    net_b = copy.deepcopy(net_a)
    gen = torch.Generator().manual_seed(1)
    batches = [{"image": torch.randn(1, 2, 8, 8, 4, generator=gen),
                "label": torch.randint(0, 3, (1, 1, 8, 8, 4), generator=gen)} for _ in range(4)]
    loss_fn = build_loss()
    opt_a = torch.optim.Adam(net_a.parameters(), lr=1e-2, weight_decay=1e-4, foreach=False)
    opt_b = torch.optim.Adam(net_b.parameters(), lr=1e-2, weight_decay=1e-4, foreach=False)
    loss_sum, seen = train_one_epoch(model=net_a, batches=batches, n_batches=4, loss_fn=loss_fn, optimizer=opt_a,
                                     device=torch.device("cpu"), per_step=per_step)
    assert seen == 4
    k = 4 if per_step is None else per_step
    net_b.train()
    manual_sum = 0.0
    for start in range(0, 4, k):
        group = batches[start:start + k]
        losses = [loss_fn(net_b(b["image"]), b["label"]) for b in group]
        manual_sum += sum(float(v.detach()) for v in losses)
        opt_b.zero_grad()
        (sum(losses) / len(group)).backward()
        opt_b.step()
    assert loss_sum == pytest.approx(manual_sum, rel=1e-5)
    start = build_model("rrcunet", **SMALL)
    moved = False
    for (name, a), b in zip(net_a.named_parameters(), net_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for a, s in zip(net_a.parameters(), start.parameters()):
        moved |= not torch.equal(a, s)
    assert moved


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_end_to_end_train_resume_load(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=2, extra=("runtime.tensorboard=true",)))
    result = train(cfg, run)
    assert result.epochs_completed == 2 and not result.stopped_early
    for name in ("config.json", "metrics.csv", "best.safetensors", "best.json", "checkpoints/last.safetensors",
                 "train.log"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) >= {"train_loss", "val_loss", "val_dice_tumour", "val_dice_lung", "lr", "epoch_time_s"}
    assert float(rows[0]["lr"]) == 3e-4
    # the saved config alone reproduces the run: it lists every model option
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["kwargs"]["t"] == 2 and saved["model"]["kwargs"]["base_filters"] == 4
    # refuse to overwrite; resume with more epochs
    with pytest.raises(InputError, match="already holds a run"):
        train(cfg, run)
    more = load_config(run / "config.json", ["schedule.epochs=3"])
    result = train(more, run, resume=True)
    assert result.epochs_completed == 3
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3"]
    with pytest.raises(ConfigError, match="cannot resume with a different config"):
        train(load_config(run / "config.json", ["optim.lr=0.1"]), run, resume=True)
    # the best model is self-describing
    model, meta = load_model(run / "best.safetensors")
    assert meta.task == "tumour" and meta.preprocess.target_shape == (32, 32, 16)
    assert meta.extra["epoch"] == json.loads((run / "best.json").read_text())["epoch"]
    # ... down to the axes its samples were flipped along, for test-time mirroring
    assert meta.mirror_axes == trained_mirror_axes(cfg)
    assert load_model(run / "checkpoints" / "last.safetensors")[1].mirror_axes == meta.mirror_axes
    with torch.no_grad():
        out = model(torch.zeros(1, 2, 32, 32, 16))
    assert out.shape == (1, 3, 32, 32, 16)


def _weights(path):
    model, _ = load_model(path)
    return model.state_dict()


@pytest.mark.slow
def test_resume_is_exact_and_seed_determines_run(tiny_dataset, tmp_path):
    """2 epochs + resume to 3 == 3 epochs straight (augmentation and dropout on); same seed → same
    weights; another seed → other weights."""
    extra = ("augment.flip_prob=0.5", "augment.affine_prob=0.5", "augment.elastic_prob=0.5", "model.dropout=0.2",
             "schedule.accumulate=1")
    straight = load_config(None, tiny_overrides(tiny_dataset, epochs=3, extra=extra))
    train(straight, tmp_path / "a")
    train(straight, tmp_path / "b")
    train(load_config(None, tiny_overrides(tiny_dataset, epochs=2, extra=extra)), tmp_path / "c")
    train(load_config(tmp_path / "c" / "config.json", ["schedule.epochs=3"]), tmp_path / "c", resume=True)
    train(load_config(None, tiny_overrides(tiny_dataset, epochs=3, extra=extra + ("runtime.seed=1",))),
          tmp_path / "d")
    last = "checkpoints/last.safetensors"
    a, b, c, d = (_weights(tmp_path / x / last) for x in "abcd")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)
    assert _rows(tmp_path / "a")[-1]["train_loss"] == _rows(tmp_path / "c")[-1]["train_loss"]


def test_channels_last_bf16_run_is_deterministic(tiny_dataset, tmp_path):
    """The CPU recipe's runtime (bf16 autocast, channels-last with LayoutGroupNorm): same seed, same
    weights, all finite."""
    extra = ("runtime.amp=bf16", "runtime.channels_last=true", "augment.flip_prob=0.5", "schedule.accumulate=1")
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=2, extra=extra))
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    last = "checkpoints/last.safetensors"
    a, b = _weights(tmp_path / "a" / last), _weights(tmp_path / "b" / last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values())


def test_early_stopping_triggers(tiny_dataset, tmp_path):
    # min_delta huge: no validation after the first counts as better, so with patience 2 the run
    # stops after epoch 1 (best) + 2 epochs without improvement = epoch 3 of 10.
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=10, extra=(
        "schedule.patience=2", "schedule.min_delta=1e9")))
    result = train(cfg, tmp_path / "run")
    assert result.stopped_early and result.epochs_completed == 3 and result.best_epoch == 1
    assert json.loads((tmp_path / "run" / "best.json").read_text())["epoch"] == 1
    # resuming with patience 5 continues: bad count 2 after epoch 3, then 3, 4, 5 -> stops at epoch 6
    more = load_config(tmp_path / "run" / "config.json", ["schedule.patience=5"])
    result = train(more, tmp_path / "run", resume=True)
    assert result.stopped_early and result.epochs_completed == 6 and result.best_epoch == 1
    assert result.stopped_by == "early stopping"


def test_time_budget_stops_the_run(tiny_dataset, tmp_path):
    # A budget far below one epoch's duration: the run stops after its first epoch, and that epoch
    # is complete (checkpoint and metrics written).
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=5, extra=("schedule.max_minutes=1e-6",)))
    result = train(cfg, tmp_path / "run")
    assert result.stopped_early and result.epochs_completed == 1 and result.stopped_by == "time budget"
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
    with pytest.raises(ConfigError, match="max_minutes must be > 0"):
        load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=("schedule.max_minutes=0",)))


def test_lung_task_and_patch_training(tiny_dataset, tmp_path):
    lung = load_config("cpu_lung", tiny_overrides(tiny_dataset, epochs=1) + ["model.levels=2"])
    result = train(lung, tmp_path / "lung")
    assert "val_dice_lung" in result.history[0] and "val_dice_tumour" not in result.history[0]
    model, meta = load_model(tmp_path / "lung" / "best.safetensors")
    assert meta.task == "lung" and meta.model_name == "coordunet" and meta.labels == {0: "background", 1: "lung"}
    assert model(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)
    patch = load_config(None, tiny_overrides(tiny_dataset, epochs=1,
                                             extra=("data.patch_size=16,16,8", "data.patch_sampling=lesion")))
    result = train(patch, tmp_path / "patch")
    assert result.epochs_completed == 1 and 0.0 <= result.history[0]["val_dice_tumour"] <= 1.0
    # the model file tells the predictor to slide windows of the training patch size
    _, meta = load_model(tmp_path / "patch" / "best.safetensors")
    assert meta.train_patch_size == (16, 16, 8)


def test_deep_supervision_step_trains_the_auxiliary_heads():
    """With DeepSupervision the auxiliary heads get gradients (Adam moves only parameters that do)."""
    torch.manual_seed(0)
    net = build_model("rrcunet", deep_supervision=1, **{**SMALL, "levels": 3})
    before = net.aux_heads[0].weight.detach().clone()
    gen = torch.Generator().manual_seed(1)
    batches = [{"image": torch.randn(1, 2, 8, 8, 4, generator=gen),
                "label": torch.randint(0, 3, (1, 1, 8, 8, 4), generator=gen)}]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_sum, seen = train_one_epoch(model=net, batches=batches, n_batches=1, loss_fn=DeepSupervision(build_loss()),
                                     optimizer=opt, device=torch.device("cpu"), per_step=1)
    assert seen == 1 and loss_sum > 0
    assert not torch.equal(net.aux_heads[0].weight, before)


def test_deep_supervision_run_saves_a_model_that_predicts_one_tensor(tiny_dataset, tmp_path):
    """model.deep_supervision=1 with the CPU recipe's runtime: the run trains and validates, and the
    saved model (aux head included) loads and returns only the full-size logits in eval mode."""
    extra = ("model.deep_supervision=1", "runtime.amp=bf16", "runtime.channels_last=true", "schedule.accumulate=1")
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=extra))
    train(cfg, tmp_path / "ds")
    model, meta = load_model(tmp_path / "ds" / "best.safetensors")
    assert meta.model_kwargs["deep_supervision"] == 1 and hasattr(model, "aux_heads")
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 2, 32, 32, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 32, 32, 16)
    row = _rows(tmp_path / "ds")[0]
    assert float(row["train_loss"]) > 0 and float(row["val_loss"]) > 0


def test_val_dataset_replaces_the_validation_split(tiny_dataset, tmp_path):
    """data.val_dataset: training cases from data.dataset, validation cases from the other folder's
    split, cached apart even where the case ids are the same."""
    same = write_tiny_dataset(tmp_path / "same", n=4, n_val=1)  # a copy of tiny_dataset
    other = write_tiny_dataset(tmp_path / "other", n=4, n_val=1, seed=3)  # same ids, other volumes
    cache = tmp_path / "cache"

    def run(name, *extra):
        cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=(f"data.cache_dir={cache}", *extra)))
        train(cfg, tmp_path / name)
        return _rows(tmp_path / name)[0]

    own, via_copy, via_other = run("own"), run("copy", f"data.val_dataset={same}"), \
        run("other", f"data.val_dataset={other}")
    assert own["train_loss"] == via_copy["train_loss"] == via_other["train_loss"]
    assert own["val_loss"] == via_copy["val_loss"]
    assert own["val_loss"] != via_other["val_loss"]
    assert sorted(p.name for p in (cache / "val").glob("*/case03.safetensors")) == ["case03.safetensors"]
    saved = json.loads((tmp_path / "other" / "config.json").read_text())
    assert saved["data"]["val_dataset"] == str(other.resolve())


def test_a_missing_dataset_leaves_no_run_behind(tiny_dataset, tmp_path):
    """The error names the folder, and the corrected command can use the same run folder."""
    run = tmp_path / "run"
    for bad in (("data.dataset=" + str(tmp_path / "nowhere"),), ("data.val_dataset=" + str(tmp_path / "nowhere"),)):
        cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=1) + list(bad))
        with pytest.raises(InputError, match="nowhere is not a prepared dataset"):
            train(cfg, run)
        assert not (run / "config.json").exists()
    assert train(load_config(None, tiny_overrides(tiny_dataset, epochs=1)), run).epochs_completed == 1


@pytest.mark.parametrize("overrides,axes", [([], [0, 1, 2]), (["augment.flip_axes=[0]"], [0]),
                                            (["augment.flip_axes=[2,0]"], [0, 2]),
                                            (["augment.flip_prob=0"], []), (["augment.enabled=false"], [])])
def test_mirror_axes_recorded_are_the_axes_training_flipped(overrides, axes):
    assert trained_mirror_axes(load_config(None, overrides)) == axes


def test_init_from_starts_from_a_model_files_weights_and_refuses_another_network(tiny_dataset, tmp_path, monkeypatch):
    """``model.init_from`` (fine-tuning): the run starts from the file's weights, not a fresh draw."""
    from rrcunet.models.model_file import save_model
    from rrcunet.training import trainer as trainer_module

    opts = {"base_filters": 4, "levels": 3, "norm_groups": 2}
    torch.manual_seed(123)
    source = build_model("rrcunet", in_channels=2, out_channels=3, **opts)
    path = save_model(tmp_path / "start.safetensors", source, model_name="rrcunet", model_kwargs=opts)
    seen = {}
    original = trainer_module.Trainer._init_from

    def spy(self, model, p):
        original(self, model, p)
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(trainer_module.Trainer, "_init_from", spy)
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=(f"model.init_from={path}",)))
    train(cfg, tmp_path / "run")
    assert seen and all(torch.equal(seen[k], v) for k, v in source.state_dict().items())
    # another network: one error naming the differing option and the fix
    other = load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=(f"model.init_from={path}",
                                                                           "model.base_filters=8")))
    with pytest.raises(ConfigError, match=r"base_filters.*model\.base_filters=4"):
        train(other, tmp_path / "run2")


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_its_folder(tiny_dataset, tmp_path):
    """The first case cannot be read: the run stops in its first epoch, leaving only config.json; the same
    -o then starts afresh once the data is fixed. A folder with a checkpoint is still refused."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    image = next((data / "images").glob("*.nii.gz"))
    good = image.read_bytes()
    image.write_bytes(b"not a nifti")
    run = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(data, epochs=1))
    with pytest.raises(InputError):
        train(cfg, run)
    assert (run / "config.json").is_file() and not (run / "checkpoints" / "last.safetensors").exists()
    image.write_bytes(good)
    assert train(cfg, run).epochs_completed == 1
    with pytest.raises(InputError, match="already holds a run"):
        train(cfg, run)


def test_a_target_spacing_run_with_a_patch_larger_than_the_image_trains_and_validates(tiny_dataset, tmp_path):
    """Issue 22: a data.patch_size larger than the image broke at run time. With a target spacing the
    grid has the scan's own size (here 39x29x20 at 2x2x3 mm, not divisible by the network's 4): the
    validation pass now pads it for the network and crops the output back."""
    cfg = load_config(None, tiny_overrides(tiny_dataset, epochs=1, extra=(
        "preprocess.target_shape=null", "preprocess.target_spacing=2,2,3", "data.patch_size=64,64,64",
        "data.lung_channel=dataset")))
    result = train(cfg, tmp_path / "run")
    assert result.epochs_completed == 1 and (tmp_path / "run" / "best.safetensors").is_file()
