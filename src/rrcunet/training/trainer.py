"""The training loop of §4.2: :func:`train` runs (or resumes) one run folder.

Owns :func:`train`, the :class:`Trainer` it runs on every process (the run in named steps),
:class:`TrainResult`, the epoch and validation steps (:func:`train_one_epoch`, :func:`evaluate`)
and the run-folder layout::

    RUN_DIR/
      config.json                  # the full resolved TrainConfig: alone it reproduces the run
      metrics.csv                  # epoch, train_loss, val_loss, val_dice_*, lr, epoch_time_s, elapsed_s
      tensorboard/                 # the same scalars for TensorBoard
      train.log                    # the log lines of rank 0
      checkpoints/last.safetensors # whole training state after the last completed epoch
      best.safetensors, best.json  # model file (rrcunet.training.checkpoint.save_model) of the best epoch

The recipe (paper §4.2): Adam (lr 3e-4, weight decay 1e-4), batch size 1, the loss of every
training patient accumulated before one backward step per epoch (``schedule.accumulate="all"``;
an int K steps every K patients), up to 1000 epochs, early stopping on the validation loss.

Order within an epoch, and why: the data order, the DataLoader worker seeds and the augmentation
seeds are pure functions of ``(runtime.seed, epoch, rank)`` (with ``data.hard_case_sampling`` the
data order also depends on the per-case loss table, which the checkpoint stores), and the global
RNGs (dropout) are saved in every checkpoint, so a run killed at any moment and resumed with ``resume=True``
continues from the last completed epoch exactly as if it had never stopped. The checkpoint is
written (atomically, one file) *before* ``metrics.csv`` is rewritten from the history stored in
that checkpoint, so after a crash ``metrics.csv`` can lag the checkpoint by one epoch but never
lead it, and a resume rewrites it from the checkpoint.

DDP: run under ``torchrun``; each process trains on its :class:`DistributedSampler` shard (or
:class:`~rrcunet.training.sampling.HardCaseSampler` shard),
gradients are averaged by DDP (so K patients over all processes give the same step as K patients
in one process), validation sums are all-reduced, and only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from rrcunet.config import config_to_dict, config_to_json
from rrcunet.data.augment import build_transform
from rrcunet.data.dataset import CachedCaseDataset, build_cache
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.atomic import atomic_write_text, remove_stale_temporaries
from rrcunet.losses import DeepSupervision, build_loss
from rrcunet.models import build_model, model_defaults
from rrcunet.models.unet3d import forward_padded
from rrcunet.models.model_file import load_model, load_weights, make_model_meta, write_model_file
from rrcunet.scores import confusion_counts, overlap_scores
from rrcunet.training.checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state_bytes,
    save_checkpoint,
    unflatten_optimizer_state,
)
from rrcunet.training.config import ScheduleConfig, TrainConfig
from rrcunet.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    gather_bytes,
    setup_distributed,
    teardown_distributed,
)
from rrcunet.training.sampling import HardCaseSampler

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
LAST_CHECKPOINT = Path("checkpoints") / "last.safetensors"
BEST_MODEL = "best.safetensors"
BEST_INFO = "best.json"

# Options that may change when a run is resumed (they do not change what is computed, or they
# only extend/shorten the run); anything else must match the saved config.json.
RESUME_MUTABLE = frozenset({
    "schedule.epochs", "schedule.early_stopping", "schedule.patience", "schedule.max_minutes",
    "data.num_workers", "data.cache_dir",
    "runtime.device", "runtime.num_threads", "runtime.progress", "runtime.tensorboard",
})


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 has the same values as the other ranks).

    Args:
        run_dir: the run folder.
        epochs_completed: epochs run in total (including those before a resume).
        stopped_early: True when early stopping ended the run.
        best_epoch: epoch of ``best.safetensors`` (0 when no epoch completed).
        best_metrics: the metrics row of that epoch.
        history: every metrics row.
        model: the trained network (last epoch, unwrapped, eval mode).
        stopped_by: what ended the run (:func:`stop_reason`).
    """

    run_dir: Path
    epochs_completed: int
    stopped_early: bool
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    model: nn.Module | None = field(default=None, repr=False)
    stopped_by: str = ""


def stop_reason(config: TrainConfig, history: list[dict[str, Any]]) -> str:
    """What ended a run with this ``history``: ``"epochs"`` (``schedule.epochs`` reached),
    ``"time budget"`` (``schedule.max_minutes``), ``"early stopping"``, or ``"not started"``."""
    if not history:
        return "not started"
    last = history[-1]
    if int(last["epoch"]) >= config.schedule.epochs:
        return "epochs"
    if config.schedule.max_minutes is not None and float(last["elapsed_s"]) >= 60.0 * config.schedule.max_minutes:
        return "time budget"
    return "early stopping"


# ---------------------------------------------------------------------------------------------
# seeds


def trained_mirror_axes(config: TrainConfig) -> list[int]:
    """The axes the training samples were flipped along (recorded in the model file for test-time
    mirroring): ``augment.flip_axes`` when augmentation is on with ``flip_prob > 0``, else none."""
    a = config.augment
    return sorted(int(x) for x in a.flip_axes) if a.enabled and a.flip_prob > 0 else []


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that is a pure function of ``parts`` (e.g. ``(seed, epoch, rank, stream)``)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# config resolution


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill in everything a later version could change: the model's constructor defaults, the
    task's channels, the checkpointing switch, and absolute data paths.

    Raises:
        ConfigError: no dataset given, or checkpointing asked of a model without it.
    """

    if config.data.dataset is None:
        raise ConfigError("data.dataset is not set: pass data.dataset=DIR, a prepared dataset folder "
                          "(make one with `rrcunet import`, or synthetic ones with `rrcunet phantoms -n 20 -o DIR`)")
    defaults = model_defaults(config.model.name)  # the options themselves were checked with the config
    kwargs = {**defaults, **config.model.kwargs, "in_channels": config.in_channels,
              "out_channels": config.out_channels}
    if "checkpointing" in defaults:
        kwargs["checkpointing"] = bool(config.runtime.checkpointing or config.model.kwargs.get("checkpointing", False))
    elif config.runtime.checkpointing:
        raise ConfigError(f"runtime.checkpointing=true but model {config.model.name!r} has no checkpointing option")
    kwargs = json.loads(json.dumps(config_to_dict(kwargs)))
    data = dataclasses.replace(
        config.data,
        dataset=str(Path(config.data.dataset).expanduser().resolve()),
        val_dataset=(None if config.data.val_dataset is None
                     else str(Path(config.data.val_dataset).expanduser().resolve())),
        cache_dir=None if config.data.cache_dir is None else str(Path(config.data.cache_dir).expanduser().resolve()),
    )
    resolved = dataclasses.replace(config, data=data, model=dataclasses.replace(config.model, kwargs=kwargs),
                                   runtime=dataclasses.replace(config.runtime, checkpointing=kwargs.get(
                                       "checkpointing", False)))
    if resolved.runtime.amp == "fp16" and not torch.cuda.is_available():
        raise ConfigError("runtime.amp=fp16 needs a CUDA GPU; on CPU use runtime.amp=bf16 or none")
    return resolved


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every option that differs between two config dicts.

    A key the saved config lacks (written by an older rrcunet, before the option existed) counts as
    equal when the new value is that option's default: the old run behaved as the default does.
    """
    a, b = _flatten(saved), _flatten(new)
    defaults = _flatten(config_to_dict(TrainConfig()))
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(a) | set(b)):
        if k not in a and k in defaults and b.get(k) == defaults[k]:
            continue
        if a.get(k) != b.get(k):
            out[k] = (a.get(k), b.get(k))
    return out


def check_resume_config(saved: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Refuse a resume whose config differs from the saved one outside :data:`RESUME_MUTABLE`."""
    changed = config_differences(saved, new)
    diff = [k for k in changed if k not in RESUME_MUTABLE]
    if diff:
        a, b = {k: v[0] for k, v in changed.items()}, {k: v[1] for k, v in changed.items()}
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{run_dir}: cannot resume with a different config ({shown}); only "
            f"{', '.join(sorted(RESUME_MUTABLE))} may change on resume. Start a new run folder instead"
        )


# ---------------------------------------------------------------------------------------------
# steps


def accumulation_groups(n_batches: int, per_step: int | None) -> list[int]:
    """Sizes of the consecutive batch groups that make one optimiser step each.

    ``per_step=None`` = one group of all batches (the paper). The last group may be smaller.

    Example::

        >>> accumulation_groups(5, 2)
        [2, 2, 1]
    """
    if n_batches <= 0:
        return []
    if per_step is None or per_step >= n_batches:
        return [n_batches]
    full, rest = divmod(n_batches, per_step)
    return [per_step] * full + ([rest] if rest else [])


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    label = batch["label"].to(device, non_blocking=True)
    return image, label


def train_one_epoch(*, model: nn.Module, batches: Iterable[dict[str, Any]], n_batches: int, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device, per_step: int | None,
                    scaler: Any | None = None, amp: str = "none", channels_last: bool = False,
                    grad_clip: float | None = None, on_batch: Any | None = None) -> tuple[float, int]:
    """One pass over ``batches`` with gradient accumulation; returns ``(sum of batch losses, batches)``.

    The losses of a group of ``g`` batches (see :func:`accumulation_groups`) are each divided by
    ``g`` and back-propagated one at a time, then the optimiser steps once: the same gradient as
    back-propagating their mean, with the memory of one batch. Under DDP the gradient all-reduce
    happens only on the last batch of a group (``no_sync`` before).
    """
    model.train()
    is_ddp = isinstance(model, DistributedDataParallel)
    scaler = scaler if scaler is not None and scaler.is_enabled() else None
    loss_sum, seen = 0.0, 0
    it = iter(batches)
    optimizer.zero_grad(set_to_none=True)
    for size in accumulation_groups(n_batches, per_step):
        for j in range(size):
            image, label = _to_device(next(it), device, channels_last)
            with model.no_sync() if is_ddp and j < size - 1 else contextlib.nullcontext():
                with _autocast(device, amp):
                    logits = model(image)
                # a list: a deeply supervised model's logits per scale (DeepSupervision casts each)
                loss = loss_fn(logits if isinstance(logits, list) else logits.float(), label)
                (loss / size if scaler is None else scaler.scale(loss / size)).backward()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value} at batch {seen}; lower optim.lr or use runtime.amp=none")
            loss_sum += value
            seen += 1
            if on_batch is not None:
                on_batch(value)
        if grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return loss_sum, seen


@dataclass
class ValSums:
    """Validation sums of one rank (reduced across ranks by summing).

    Args:
        loss: sum of per-case losses.
        cases: number of cases.
        dice: per class, sum of per-case Dice.
        counts: per class ``[TP, FP, FN]`` voxel counts summed over cases.
    """

    loss: float
    cases: int
    dice: np.ndarray
    counts: np.ndarray

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([torch.tensor([self.loss, float(self.cases)], dtype=torch.float64),
                          torch.from_numpy(self.dice.astype(np.float64)),
                          torch.from_numpy(self.counts.astype(np.float64).ravel())])

    @classmethod
    def from_tensor(cls, t: torch.Tensor, n_classes: int) -> "ValSums":
        v = t.double().numpy()
        return cls(loss=float(v[0]), cases=int(round(v[1])), dice=v[2:2 + n_classes].copy(),
                   counts=v[2 + n_classes:].reshape(n_classes, 3).round().astype(np.int64))


def reduce_val_sums(sums: ValSums, ctx: DistContext) -> ValSums:
    """Sum every rank's :class:`ValSums` (cases, loss, per-case Dice sums, voxel counts)."""
    return ValSums.from_tensor(all_reduce_sum(sums.as_tensor(), ctx), len(sums.dice))


def val_metrics(total: ValSums, labels: dict[int, str], target_class: int) -> dict[str, float]:
    """Metrics of pooled validation sums: mean loss and mean per-case Dice per foreground class
    (``val_dice_<class>``), and the voxel-pooled Dice of the target class
    (``val_dice_<target>_pooled`` = 2ΣTP / (2ΣTP + ΣFP + ΣFN) over all cases).

    Both come from sums over all cases of all ranks, so the result does not depend on how the
    cases were split between processes (a mean of per-rank means would).
    """
    n = max(total.cases, 1)
    out = {"val_loss": total.loss / n}
    for idx, name in sorted(labels.items()):
        if idx > 0:
            out[f"val_dice_{name}"] = float(total.dice[idx] / n)
    tp, fp, fn = (int(v) for v in total.counts[target_class])
    out[f"val_dice_{labels[target_class]}_pooled"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return out


@torch.no_grad()
def evaluate(*, model: nn.Module, batches: Iterable[dict[str, Any]], loss_fn: nn.Module, device: torch.device,
             n_classes: int, amp: str = "none", channels_last: bool = False,
             roi_size: tuple[int, int, int] | None = None) -> ValSums:
    """Validation sums over ``batches`` (whole volumes; sliding windows of ``roi_size`` if given).

    Dice per case and class uses :func:`rrcunet.scores.confusion_counts` /
    ``overlap_scores`` (an empty class in both prediction and truth scores 1).
    """
    from monai.inferers import sliding_window_inference  # lazy: only patch-trained runs validate in windows

    model.eval()
    loss_sum, cases = 0.0, 0
    dice = np.zeros(n_classes, dtype=np.float64)
    counts = np.zeros((n_classes, 3), dtype=np.int64)
    for batch in batches:
        image, label = _to_device(batch, device, channels_last)
        with _autocast(device, amp):
            if roi_size is not None and any(s > r for s, r in zip(image.shape[2:], roi_size)):
                logits = sliding_window_inference(image, roi_size, sw_batch_size=1, predictor=model, overlap=0.25)
            else:
                logits = forward_padded(model, image)  # a target-spacing grid has any size
        logits = logits.float()
        for b in range(image.shape[0]):
            loss_sum += float(loss_fn(logits[b:b + 1], label[b:b + 1]))
            pred = logits[b].argmax(dim=0).cpu().numpy()
            truth = label[b, 0].cpu().numpy()
            c = confusion_counts(pred, truth, n_classes)
            counts += c
            dice += np.array([overlap_scores(*row)[0] for row in c])
            cases += 1
    return ValSums(loss=loss_sum, cases=cases, dice=dice, counts=counts)


# ---------------------------------------------------------------------------------------------
# the run


class _EarlyStopping:
    def __init__(self, sched: ScheduleConfig, state: dict[str, Any] | None = None) -> None:
        self.mode = "min" if sched.monitor == "val_loss" else "max"
        self.patience, self.min_delta = sched.patience, sched.min_delta
        state = state or {}
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))
        self.bad = int(state.get("bad", 0))

    def update(self, value: float, epoch: int) -> bool:
        """Record a validation value; True when it is a new best."""
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.best_epoch, self.bad = float(value), epoch, 0
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}


def _metric_columns(config: TrainConfig) -> list[str]:
    classes = [name for idx, name in sorted(config.labels.items()) if idx > 0]
    target = config.labels[config.target_class]
    return (["epoch", "train_loss", "val_loss"] + [f"val_dice_{c}" for c in classes]
            + [f"val_dice_{target}_pooled", "lr", "epoch_time_s", "elapsed_s"])


def _write_metrics(path: Path, columns: list[str], history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _add_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger("rrcunet").addHandler(handler)
    if logging.getLogger("rrcunet").getEffectiveLevel() > logging.INFO:
        logging.getLogger("rrcunet").setLevel(logging.INFO)
    return handler


def _make_loader(dataset: Any, *, indices_sampler: Any, num_workers: int, batch_size: int, seed: int,
                 pin: bool) -> DataLoader:
    from monai.data.utils import worker_init_fn  # lazy: only loaders with worker processes need it

    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = min(num_workers, len(dataset)) if len(dataset) else 0
    return DataLoader(dataset, batch_size=batch_size, sampler=indices_sampler, num_workers=workers,
                      worker_init_fn=worker_init_fn if workers else None, generator=generator,
                      pin_memory=pin, persistent_workers=False, drop_last=False)


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` with ``config``.

    Args:
        config: the :class:`~rrcunet.training.config.TrainConfig`. On resume it must equal the
            run's saved ``config.json`` except for :data:`RESUME_MUTABLE` options.
        run_dir: run folder; created, and refused if it already holds a run unless ``resume``.
        resume: continue the run in ``run_dir`` from its last completed epoch (a folder whose run
            never completed an epoch starts from the beginning).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: invalid or incompatible config. InputError: dataset problems, or a run folder
            that already holds a run (without ``resume``) or holds none (with ``resume``).

    Example::

        cfg = load_config("cpu_tumour", ["data.dataset=phantoms"])
        result = train(cfg, "runs/cpu1")
        result.best_metrics["val_dice_tumour"]
    """
    run_dir = Path(run_dir)
    config = resolve_config(config)
    ctx = setup_distributed(config.runtime.device)
    handler: logging.Handler | None = None
    try:
        _on_rank0_first(ctx, lambda: _prepare_run_dir(run_dir, config, resume), "prepare the run folder")
        if ctx.is_main:
            handler = _add_log_file(run_dir)
        return Trainer(config, run_dir, ctx).fit(resume)
    finally:
        if handler is not None:
            logging.getLogger("rrcunet").removeHandler(handler)
            handler.close()
        teardown_distributed(ctx)


def _on_rank0_first(ctx: DistContext, fn: Any, what: str) -> None:
    """Run ``fn`` on rank 0 while the others wait; if it fails, every rank raises (none hangs)."""
    error: BaseException | None = None
    if ctx.is_main:
        try:
            fn()
        except Exception as exc:  # re-raised below, after telling the other ranks
            error = exc
    ok = broadcast_flag(error is None, ctx)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"rank 0 failed to {what}; see its error message")


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:

    # A wrong dataset path fails here, before the run folder holds a config that would make the
    # corrected command refuse the folder as an existing run.
    for folder in (config.data.dataset, config.data.val_dataset):
        if folder is not None:
            DatasetManifest.load(Path(folder))
    cfg_path = run_dir / CONFIG_NAME
    new = config_to_dict(config)
    if resume:
        if not cfg_path.is_file():
            raise InputError(f"{run_dir}: no {CONFIG_NAME}, so there is no run to resume; start one with "
                             "`rrcunet train --config FILE -o RUN_DIR`")
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        check_resume_config(saved, new, run_dir)
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_stale_temporaries(folder)
    elif cfg_path.exists():
        if _has_results(run_dir):
            raise InputError(f"{run_dir} already holds a run ({CONFIG_NAME} exists); continue it with "
                             f"`rrcunet train --resume {run_dir}`, or choose another -o folder")
        # a run that failed before its first checkpoint: nothing in it is worth keeping, start it afresh
        logger.warning("%s holds a run that stopped before its first checkpoint; starting a new run there",
                       run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    atomic_write_text(cfg_path, config_to_json(config))


def _has_results(run_dir: Path) -> bool:
    """Whether a run folder holds anything a run produced: a checkpoint, a best model or an epoch's metrics."""
    return ((run_dir / LAST_CHECKPOINT).is_file() or any(run_dir.glob("best*.safetensors"))
            or (run_dir / METRICS_NAME).is_file())


class Trainer:
    """One process's share of a run, in steps that share their state as attributes. :meth:`fit` runs
    them in the order the run draws its random numbers in: :meth:`setup_data`, :meth:`setup_model`,
    :meth:`restore` (on resume), then per epoch :meth:`train_epoch`, :meth:`validate`, :meth:`end_epoch`."""

    def __init__(self, config: TrainConfig, run_dir: Path, ctx: DistContext) -> None:
        self.config, self.run_dir, self.ctx, self.device = config, run_dir, ctx, ctx.device
        self.rt, self.sched = config.runtime, config.schedule
        self.show = self.rt.progress and ctx.is_main
        self.columns, self.target_name = _metric_columns(config), config.labels[config.target_class]
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.stopped_early = 0, False
        if self.rt.num_threads is not None:
            torch.set_num_threads(self.rt.num_threads)
        if self.rt.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def setup_data(self) -> None:
        """Cache the dataset once (rank 0 preprocesses, the others wait and then only list the
        files), and build the datasets, the training sampler and this rank's validation cases."""

        config, ctx = self.config, self.ctx
        dataset_dir = Path(config.data.dataset)  # type: ignore[arg-type]
        val_dir = dataset_dir if config.data.val_dataset is None else Path(config.data.val_dataset)
        manifest = DatasetManifest.load(dataset_dir)
        val_manifest = manifest if val_dir == dataset_dir else DatasetManifest.load(val_dir)
        self.train_ids = train_ids = list(manifest.split.train)[: config.data.max_train_cases]
        self.val_ids = val_ids = list(val_manifest.split.val)[: config.data.max_val_cases]
        if val_manifest is not manifest and manifest.split.val:
            logger.info("%s: its validation split is not used; validating on %s (data.val_dataset)",
                        dataset_dir, val_dir)
        if not train_ids:
            raise InputError(f"{dataset_dir}: the manifest's split has no training case")
        if not val_ids:
            logger.warning("%s: no validation case; early stopping is off and the last epoch is kept as best", val_dir)
        cache_kw = dict(preprocess_config=config.preprocess, task=config.task, lung_channel=config.data.lung_channel)
        # (dataset folder, its cases, cache root): one entry, or two with a separate validation dataset
        if val_dir == dataset_dir:
            parts = [(dataset_dir, train_ids + val_ids, config.data.cache_dir)]
        else:
            val_cache = None if config.data.cache_dir is None else str(Path(config.data.cache_dir) / "val")
            parts = [(dataset_dir, train_ids, config.data.cache_dir), (val_dir, val_ids, val_cache)]

        def cache_all(progress: bool) -> list[Any]:
            return [c for root, ids, cache_dir in parts
                    for c in build_cache(root, ids, progress=progress, cache_dir=cache_dir, **cache_kw)]

        _on_rank0_first(ctx, lambda: cache_all(self.show), "preprocess the dataset")
        cached = cache_all(False)
        with_lung, patch = config.spec.crop_to_lungs, config.data.patch_size
        self.train_tf = build_transform(config.augment, train=True, with_lung=with_lung, patch_size=patch,
                                        patch_target_prob=config.data.patch_target_prob,
                                        patch_sampling=config.data.patch_sampling)
        val_tf = build_transform(None, train=False, with_lung=with_lung)
        self.train_ds = CachedCaseDataset(cached[: len(train_ids)], transform=self.train_tf, with_lung=with_lung,
                                          target_class=config.target_class, with_fg=patch is not None)
        val_ds = CachedCaseDataset(cached[len(train_ids):], transform=val_tf, with_lung=with_lung)
        self.hard_cases = (HardCaseSampler(len(self.train_ds), share=config.data.hard_case_sampling,
                                           num_replicas=ctx.world_size, rank=ctx.rank, seed=self.rt.seed)
                           if config.data.hard_case_sampling > 0 else None)
        self.sampler: Any = self.hard_cases if self.hard_cases is not None else DistributedSampler(
            self.train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=self.rt.seed, drop_last=False)
        self.val_subset = Subset(val_ds, list(range(ctx.rank, len(val_ds), ctx.world_size)))
        acc, per = config.schedule.accumulate, ctx.world_size * config.schedule.batch_size
        if isinstance(acc, int) and acc % per:
            raise ConfigError(f"schedule.accumulate={acc} is not a multiple of world size × batch size = {per}; "
                              f"use a multiple of {per} or 'all'")
        self.per_step = acc // per if isinstance(acc, int) else None  # batches per optimiser step (None: all)

    def setup_model(self) -> None:
        """The network (``net``: DDP-wrapped under torchrun), loss, optimiser, scheduler, AMP scaler
        and early stopping; then this rank's own RNG stream."""

        config, rt, device = self.config, self.rt, self.device
        seed_everything(rt.seed)
        model = build_model(config.model.name, **config.model.kwargs).to(device)
        if config.model.init_from:
            self._init_from(model, config.model.init_from)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = self.net = model
        if self.ctx.distributed:
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.loss_fn = build_loss(config.loss)
        if getattr(model, "deep_supervision", 0):
            # not in the paper: the loss of every scale the model returns in training mode (1, 1/2, 1/4, ...)
            self.loss_fn = DeepSupervision(self.loss_fn)
        o, lrs = config.optim, torch.optim.lr_scheduler
        # foreach=False: the same (single-tensor) kernels on every device, for reproducible numbers.
        self.optimizer = opt = (torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW)(
            model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, foreach=False)
        self.scheduler: Any = None
        if o.scheduler == "cosine":
            self.scheduler = lrs.CosineAnnealingLR(opt, T_max=self.sched.epochs, eta_min=o.min_lr)
        elif o.scheduler == "plateau":
            self.scheduler = lrs.ReduceLROnPlateau(opt, mode="min", factor=o.plateau_factor,
                                                   patience=o.plateau_patience, min_lr=o.min_lr)
        self.scaler = torch.amp.GradScaler(device.type) if rt.amp == "fp16" else None
        patch = config.data.patch_size
        self.model_meta = make_model_meta(model_name=config.model.name, model_kwargs=config.model.kwargs,
                                          preprocess_config=config.preprocess, task=config.task,
                                          labels=config.labels, mirror_axes=trained_mirror_axes(config),
                                          extra={"run_dir": str(self.run_dir.resolve())},
                                          # the predictor slides windows of this size, as validation does
                                          train_patch_size=patch)
        self.stopper = _EarlyStopping(self.sched)
        # Each rank's RNG stream (dropout, ...) starts from its own seed; the weights above do not
        # depend on the rank (and DDP broadcasts rank 0's anyway).
        seed_everything(derive_seed(rt.seed, 0, self.ctx.rank, 1))

    def _init_from(self, model: nn.Module, path: str) -> None:
        """Load a model file's weights into ``model`` (``model.init_from``), refusing another network."""
        source, meta = load_model(path)
        config = self.config
        given = {**model_defaults(meta.model_name), **meta.model_kwargs}
        wanted = {**model_defaults(config.model.name), **config.model.kwargs}
        differs = sorted(k for k in set(given) | set(wanted) if k not in ("in_channels", "out_channels")
                         and given.get(k) != wanted.get(k))
        if meta.model_name != config.model.name or differs:
            raise ConfigError(
                f"model.init_from={path}: that file holds {meta.model_name} with "
                f"{ {k: given.get(k) for k in differs} }, this run builds {config.model.name} with "
                f"{ {k: wanted.get(k) for k in differs} }; set the same model options (e.g. "
                + " ".join(f"model.{k}={given.get(k)}" for k in differs) + ") or drop model.init_from")
        load_weights(model, {k: v.to(self.device) for k, v in source.state_dict().items()}, source=path)
        if self.ctx.is_main:
            logger.info("starting from the weights of %s", path)

    def restore(self) -> None:
        """Continue from the run's last checkpoint, if it has one: weights, optimiser, scheduler,
        scaler, history, early stopping, hard-case losses and this rank's RNG states."""
        ctx, sched, path = self.ctx, self.sched, self.run_dir / LAST_CHECKPOINT
        if not path.is_file():
            if ctx.is_main:
                logger.info("%s has no checkpoint yet: starting from epoch 1", self.run_dir)
            return
        ckpt = load_checkpoint(path)
        load_weights(self.model, ckpt.model, source=str(path))
        self.optimizer.load_state_dict(unflatten_optimizer_state(ckpt.optimizer, ckpt.meta["optimizer"],
                                                                 self.optimizer))
        if self.scheduler is not None and ckpt.meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt.meta["scheduler"])
        if self.scaler is not None and ckpt.meta.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt.meta["scaler"])
        state = ckpt.meta["trainer"]
        self.history = list(state.get("history", []))
        self.stopper = _EarlyStopping(sched, state.get("early_stopping"))
        if self.hard_cases is not None:
            self.hard_cases.load_state(state.get("hard_case_losses"))
        # Recomputed rather than restored, so that a resume with a larger schedule.patience or
        # schedule.early_stopping=false continues a run that had stopped early.
        self.stopped_early = sched.early_stopping and self.stopper.should_stop
        self.start_epoch = ckpt.epoch
        if len(ckpt.rng) == ctx.world_size:
            restore_rng_state(ckpt.rng[ctx.rank])
        else:
            logger.warning("checkpoint holds RNG states of %d processes, this run has %d: reseeding from the "
                           "config seed (the run continues, but not bit-identically)", len(ckpt.rng), ctx.world_size)
            seed_everything(derive_seed(self.rt.seed, ckpt.epoch, ctx.rank, 1))
        if ctx.is_main:
            logger.info("resuming %s after epoch %d", self.run_dir, ckpt.epoch)

    def fit(self, resume: bool) -> TrainResult:
        """Set up (and with ``resume`` restore), then run the epochs that remain."""

        self.setup_data()
        self.setup_model()
        if resume:
            self.restore()
        config, ctx, sched = self.config, self.ctx, self.sched
        self.writer: Any = None
        if ctx.is_main and self.rt.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: TensorBoard costs ~1 s and is optional

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.start_epoch + 1)
        if ctx.is_main:
            _write_metrics(self.run_dir / METRICS_NAME, self.columns, self.history)
            logger.info("task %s, model %s (%d parameters), %d training / %d validation cases, device %s, world %d",
                        config.task, config.model.name, sum(p.numel() for p in self.model.parameters()),
                        len(self.train_ids), len(self.val_ids), self.device, ctx.world_size)
        self.elapsed0 = float(self.history[-1]["elapsed_s"]) if self.history else 0.0
        self.t_run = time.perf_counter()
        self.epoch_bar = tqdm(total=sched.epochs, initial=self.start_epoch, desc="epochs", unit="ep",
                              disable=None if self.show else True, dynamic_ncols=True)  # None: a terminal only
        try:
            for epoch in range(self.start_epoch + 1, sched.epochs + 1):
                if self.stopped_early:
                    break
                t0 = time.perf_counter()
                row = self.train_epoch(epoch)
                validated = bool(self.val_ids) and (epoch % sched.val_every == 0 or epoch == sched.epochs)
                if validated:
                    row.update(self.validate())
                self.end_epoch(row, validated, t0)
        finally:
            self.epoch_bar.close()
            if self.writer is not None:
                self.writer.close()
        barrier(ctx)
        history, best_epoch = self.history, self.stopper.best_epoch
        return TrainResult(run_dir=self.run_dir, epochs_completed=int(history[-1]["epoch"]) if history else 0,
                           stopped_early=self.stopped_early, best_epoch=best_epoch,
                           best_metrics=dict(next((r for r in history if r["epoch"] == best_epoch), {})),
                           history=history, model=self.model.eval(), stopped_by=stop_reason(config, history))

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; returns its metrics row so far (``epoch``, ``train_loss`` of all ranks)."""

        ctx, rt = self.ctx, self.rt
        # Data order, worker seeds and augmentation: functions of (seed, epoch, rank) only.
        self.sampler.set_epoch(epoch)
        self.train_tf.set_random_state(seed=derive_seed(rt.seed, epoch, ctx.rank, 2))
        loader = _make_loader(self.train_ds, indices_sampler=self.sampler, num_workers=self.config.data.num_workers,
                              batch_size=self.sched.batch_size, seed=derive_seed(rt.seed, epoch, ctx.rank, 3),
                              pin=self.device.type == "cuda")
        n_batches = len(loader)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="case", leave=False,
                   disable=None if self.show else True,
                   dynamic_ncols=True)
        batch_losses: list[float] = []

        def on_batch(value: float) -> None:
            batch_losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")

        loss_sum, seen = train_one_epoch(
            model=self.net, batches=loader, n_batches=n_batches, loss_fn=self.loss_fn, optimizer=self.optimizer,
            device=self.device, per_step=self.per_step, scaler=self.scaler, amp=rt.amp,
            channels_last=rt.channels_last, grad_clip=self.config.optim.grad_clip, on_batch=on_batch)
        bar.close()
        if self.hard_cases is not None:
            # the loader visited the sampler's draw in order, so batch k holds draws k*b .. k*b+b-1
            self.hard_cases.record(batch_losses)
            self.hard_cases.reduce_epoch(lambda t: all_reduce_sum(t, ctx))
        tr = all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64), ctx)
        return {"epoch": epoch, "train_loss": float(tr[0] / max(tr[1], 1))}

    def validate(self) -> dict[str, float]:
        """The validation metrics (:func:`val_metrics`) of the cases of all ranks."""
        config, rt = self.config, self.rt
        loader = _make_loader(self.val_subset, indices_sampler=None, num_workers=config.data.num_workers,
                              batch_size=1, seed=0, pin=self.device.type == "cuda")
        sums = evaluate(model=self.model, batches=loader, loss_fn=self.loss_fn, device=self.device,
                        n_classes=config.out_channels, amp=rt.amp, channels_last=rt.channels_last,
                        roi_size=config.data.patch_size)
        return val_metrics(reduce_val_sums(sums, self.ctx), config.labels, config.target_class)

    def end_epoch(self, row: dict[str, Any], validated: bool, t0: float) -> None:
        """Finish the epoch of ``row`` (begun at ``t0``): scheduler, early stopping, history, time budget,
        :meth:`save_checkpoint`, then (rank 0) metrics.csv, TensorBoard, the progress bar and the log."""
        ctx, sched, stopper, epoch = self.ctx, self.sched, self.stopper, row["epoch"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if validated:
                self.scheduler.step(row["val_loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row["epoch_time_s"] = time.perf_counter() - t0
        row["elapsed_s"] = self.elapsed0 + time.perf_counter() - self.t_run
        improved = not self.val_ids  # without validation cases, every epoch is the best so far
        if validated:
            monitored = row["val_loss"] if sched.monitor == "val_loss" else row[f"val_dice_{self.target_name}"]
            improved = stopper.update(monitored, epoch)
            self.stopped_early = sched.early_stopping and stopper.should_stop
        elif improved:
            stopper.best_epoch = epoch
        self.history.append(row)
        if sched.max_minutes is not None and not self.stopped_early:
            # Every rank stops together: one rank over the budget stops them all.
            over = torch.tensor([1.0 if row["elapsed_s"] >= 60.0 * sched.max_minutes else 0.0], dtype=torch.float64)
            if float(all_reduce_sum(over, ctx)[0]) > 0:
                self.stopped_early = True
                if ctx.is_main:
                    logger.info("time budget: %.1f min used of schedule.max_minutes=%g; stopping after epoch %d",
                                row["elapsed_s"] / 60.0, sched.max_minutes, epoch)
        # The checkpoint first, then files derived from it (see the module docstring).
        self.save_checkpoint(epoch, row, improved)
        if not ctx.is_main:
            return
        _write_metrics(self.run_dir / METRICS_NAME, self.columns, self.history)
        scalars = {k: v for k, v in row.items() if k != "epoch" and v is not None}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, epoch)
            self.writer.flush()
        postfix = {"loss": f"{row['train_loss']:.4f}"}
        if validated:
            postfix.update(val=f"{row['val_loss']:.4f}", dice=f"{row[f'val_dice_{self.target_name}']:.3f}")
        self.epoch_bar.set_postfix(postfix)
        self.epoch_bar.update(1)
        logger.info("epoch %d/%d %s", epoch, sched.epochs, " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
        if self.stopped_early and stopper.should_stop:
            logger.info("early stopping: %s has not improved for %d validations (best %.4g at epoch %d)",
                        sched.monitor, sched.patience, stopper.best, stopper.best_epoch)

    def save_checkpoint(self, epoch: int, row: dict[str, Any], improved: bool) -> None:
        """Write (rank 0) the whole training state after ``epoch``, and if ``improved`` the model
        file of this epoch as the best. Every rank calls it: it gathers their RNG states."""
        rng = gather_bytes(rng_state_bytes(), self.ctx)
        if not self.ctx.is_main:
            return
        state = {"history": self.history, "early_stopping": self.stopper.state(), "stopped_early": self.stopped_early}
        if self.hard_cases is not None:
            state["hard_case_losses"] = self.hard_cases.state()
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, model=self.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, scaler=self.scaler, epoch=epoch, config=config_to_dict(self.config),
                        trainer_state=state, rng=rng, model_meta=self.model_meta)
        if improved:
            meta = self.model_meta
            write_model_file(self.run_dir / BEST_MODEL, self.model,
                             dataclasses.replace(meta, extra=dict(meta.extra, epoch=epoch, metrics=row)))
            info = {"epoch": epoch, "metrics": row, "model": BEST_MODEL, "monitor": self.sched.monitor,
                    "model_meta": meta.to_dict()}
            atomic_write_text(self.run_dir / BEST_INFO, json.dumps(info, indent=2) + "\n")
