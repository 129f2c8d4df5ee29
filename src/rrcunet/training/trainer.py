"""The training loop of §4.2: :func:`train` runs (or resumes) one run folder.

Owns :func:`train`, :class:`TrainResult`, the epoch and validation steps
(:func:`train_one_epoch`, :func:`evaluate`) and the run-folder layout::

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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from rrcunet.errors import ConfigError, InputError
from rrcunet.io.atomic import atomic_write_text, remove_stale_temporaries
from rrcunet.training.checkpoint import load_checkpoint, restore_rng_state, rng_state_bytes, save_checkpoint, unflatten_optimizer_state
from rrcunet.models.model_file import ModelMeta, load_weights, make_model_meta, write_model_file
from rrcunet.training.config import TrainConfig
from rrcunet.config import config_to_dict, config_to_json
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
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# config resolution


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill in everything a later version could change: the model's constructor defaults, the
    task's channels, the checkpointing switch, and absolute data paths.

    Raises:
        ConfigError: no dataset given, unknown model name or option.
    """
    from rrcunet.models import model_defaults

    if config.data.dataset is None:
        raise ConfigError("data.dataset is not set: pass data.dataset=DIR, a prepared dataset folder "
                          "(make one with `rrcunet import`, or synthetic ones with `rrcunet phantoms -n 20 -o DIR`)")
    defaults = model_defaults(config.model.name)
    unknown = sorted(set(config.model.kwargs) - set(defaults))
    if unknown:
        raise ConfigError(f"model {config.model.name!r} has no option(s) {', '.join(unknown)}: valid options are "
                          f"{', '.join(sorted(defaults))}")
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
    groups = accumulation_groups(n_batches, per_step)
    is_ddp = isinstance(model, DistributedDataParallel)
    loss_sum = 0.0
    seen = 0
    it: Iterator[dict[str, Any]] = iter(batches)
    optimizer.zero_grad(set_to_none=True)
    for size in groups:
        for j in range(size):
            batch = next(it)
            image, label = _to_device(batch, device, channels_last)
            sync = j == size - 1
            ctx = model.no_sync() if (is_ddp and not sync) else contextlib.nullcontext()
            with ctx:
                with _autocast(device, amp):
                    logits = model(image)
                # a list: a deeply supervised model's logits per scale (DeepSupervision casts each)
                loss = loss_fn(logits if isinstance(logits, list) else logits.float(), label)
                scaled = loss / size
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value} at batch {seen}; lower optim.lr or use runtime.amp=none")
            loss_sum += value
            seen += 1
            if on_batch is not None:
                on_batch(value)
        if scaler is not None and scaler.is_enabled():
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
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

    Dice per case and class uses :func:`rrcunet.evaluation.metrics.confusion_counts` /
    ``overlap_scores`` (an empty class in both prediction and truth scores 1).
    """
    from monai.inferers import sliding_window_inference

    from rrcunet.evaluation.metrics import confusion_counts, overlap_scores

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
                logits = model(image)
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
    def __init__(self, mode: str, patience: int, min_delta: float, state: dict[str, Any] | None = None) -> None:
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
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


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any | None:
    o = config.optim
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.schedule.epochs, eta_min=o.min_lr)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o.plateau_factor,
                                                          patience=o.plateau_patience, min_lr=o.min_lr)
    return None


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    # foreach=False: the same (single-tensor) kernels on every device, for reproducible numbers.
    return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, foreach=False)


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


def _remove_stale_temporaries(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_stale_temporaries(folder)


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
    from monai.data.utils import worker_init_fn

    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = min(num_workers, len(dataset)) if len(dataset) else 0
    return DataLoader(dataset, batch_size=batch_size, sampler=indices_sampler, num_workers=workers,
                      worker_init_fn=worker_init_fn if workers else None, generator=generator,
                      pin_memory=pin, persistent_workers=False, drop_last=False)


def _per_step_batches(config: TrainConfig, ctx: DistContext) -> int | None:
    acc = config.schedule.accumulate
    if acc == "all":
        return None
    per = ctx.world_size * config.schedule.batch_size
    if acc % per:
        raise ConfigError(f"schedule.accumulate={acc} is not a multiple of world size × batch size = {per}; "
                          f"use a multiple of {per} or 'all'")
    return acc // per


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
        return _run(config, run_dir, resume, ctx)
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
    from rrcunet.data.manifest import DatasetManifest

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
        _remove_stale_temporaries(run_dir)
    elif cfg_path.exists():
        raise InputError(f"{run_dir} already holds a run ({CONFIG_NAME} exists); continue it with "
                         f"`rrcunet train --resume {run_dir}`, or choose another -o folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    atomic_write_text(cfg_path, config_to_json(config))


def _run(config: TrainConfig, run_dir: Path, resume: bool, ctx: DistContext) -> TrainResult:
    from tqdm.auto import tqdm

    from rrcunet.data.augment import build_transform
    from rrcunet.data.dataset import CachedCaseDataset, build_cache
    from rrcunet.data.manifest import DatasetManifest
    from rrcunet.losses import DeepSupervision, build_loss
    from rrcunet.models import build_model

    rt, sched = config.runtime, config.schedule
    device = ctx.device
    if rt.num_threads is not None:
        torch.set_num_threads(rt.num_threads)
    if rt.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    show = rt.progress and ctx.is_main

    # ---- data: cache once (rank 0 preprocesses, the others wait and then only list the files)
    dataset_dir = Path(config.data.dataset)  # type: ignore[arg-type]
    val_dir = dataset_dir if config.data.val_dataset is None else Path(config.data.val_dataset)
    manifest = DatasetManifest.load(dataset_dir)
    val_manifest = manifest if val_dir == dataset_dir else DatasetManifest.load(val_dir)
    train_ids = list(manifest.split.train)[: config.data.max_train_cases]
    val_ids = list(val_manifest.split.val)[: config.data.max_val_cases]
    if val_manifest is not manifest and manifest.split.val:
        logger.info("%s: its validation split is not used; validating on %s (data.val_dataset)", dataset_dir, val_dir)
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

    _on_rank0_first(ctx, lambda: cache_all(show), "preprocess the dataset")
    cached = cache_all(False)
    train_cached, val_cached = cached[: len(train_ids)], cached[len(train_ids):]
    with_lung = config.task == "tumour"
    patch = config.data.patch_size
    train_tf = build_transform(config.augment, train=True, with_lung=with_lung, patch_size=patch,
                               patch_target_prob=config.data.patch_target_prob,
                               patch_sampling=config.data.patch_sampling)
    val_tf = build_transform(None, train=False, with_lung=with_lung)
    train_ds = CachedCaseDataset(train_cached, transform=train_tf, with_lung=with_lung,
                                 target_class=config.target_class, with_fg=patch is not None)
    val_ds = CachedCaseDataset(val_cached, transform=val_tf, with_lung=with_lung)
    hard_cases: HardCaseSampler | None = None
    if config.data.hard_case_sampling > 0:
        hard_cases = HardCaseSampler(len(train_ds), share=config.data.hard_case_sampling,
                                     num_replicas=ctx.world_size, rank=ctx.rank, seed=rt.seed)
    sampler: Any = hard_cases
    if sampler is None:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=rt.seed, drop_last=False)
    val_subset = Subset(val_ds, list(range(ctx.rank, len(val_ds), ctx.world_size)))
    per_step = _per_step_batches(config, ctx)

    # ---- model, loss, optimiser
    seed_everything(rt.seed)
    model = build_model(config.model.name, **config.model.kwargs).to(device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = build_loss(config.loss)
    if getattr(model, "deep_supervision", 0):
        # not in the paper: the loss of every scale the model returns in training mode (1, 1/2, 1/4, ...)
        loss_fn = DeepSupervision(loss_fn)
    optimizer = _make_optimizer(config, model)
    scheduler = _make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=rt.amp == "fp16") if rt.amp == "fp16" else None
    model_meta = make_model_meta(model_name=config.model.name, model_kwargs=config.model.kwargs,
                                 preprocess_config=config.preprocess, task=config.task,
                                 labels=config.labels, mirror_axes=trained_mirror_axes(config),
                                 extra={"run_dir": str(run_dir.resolve()),
                                        # the predictor slides windows of this size, as validation does
                                        "train_patch_size": list(patch) if patch else None})
    mode = "min" if sched.monitor == "val_loss" else "max"
    stopper = _EarlyStopping(mode, sched.patience, sched.min_delta)
    history: list[dict[str, float]] = []
    start_epoch = 0
    stopped_early = False
    # Each rank's RNG stream (dropout, ...) starts from its own seed; the weights above do not
    # depend on the rank (and DDP broadcasts rank 0's anyway).
    seed_everything(derive_seed(rt.seed, 0, ctx.rank, 1))

    ckpt_path = run_dir / LAST_CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        load_weights(model, ckpt.model, source=str(ckpt_path))
        optimizer.load_state_dict(unflatten_optimizer_state(ckpt.optimizer, ckpt.meta["optimizer"], optimizer))
        if scheduler is not None and ckpt.meta.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt.meta["scheduler"])
        if scaler is not None and ckpt.meta.get("scaler") is not None:
            scaler.load_state_dict(ckpt.meta["scaler"])
        trainer_state = ckpt.meta["trainer"]
        history = list(trainer_state.get("history", []))
        stopper = _EarlyStopping(mode, sched.patience, sched.min_delta, trainer_state.get("early_stopping"))
        if hard_cases is not None:
            hard_cases.load_state(trainer_state.get("hard_case_losses"))
        # Recomputed rather than restored, so that a resume with a larger schedule.patience or
        # schedule.early_stopping=false continues a run that had stopped early.
        stopped_early = sched.early_stopping and stopper.should_stop
        start_epoch = ckpt.epoch
        if len(ckpt.rng) == ctx.world_size:
            restore_rng_state(ckpt.rng[ctx.rank])
        else:
            logger.warning("checkpoint holds RNG states of %d processes, this run has %d: reseeding from the "
                           "config seed (the run continues, but not bit-identically)", len(ckpt.rng), ctx.world_size)
            seed_everything(derive_seed(rt.seed, start_epoch, ctx.rank, 1))
        if ctx.is_main:
            logger.info("resuming %s after epoch %d", run_dir, start_epoch)
    elif resume and ctx.is_main:
        logger.info("%s has no checkpoint yet: starting from epoch 1", run_dir)

    writer = None
    if ctx.is_main and rt.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1)
    columns = _metric_columns(config)
    target_name = config.labels[config.target_class]
    if ctx.is_main:
        _write_metrics(run_dir / METRICS_NAME, columns, history)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("task %s, model %s (%d parameters), %d training / %d validation cases, device %s, world %d",
                    config.task, config.model.name, n_params, len(train_ids), len(val_ids), device, ctx.world_size)

    elapsed0 = float(history[-1]["elapsed_s"]) if history else 0.0
    t_run = time.perf_counter()
    epoch_bar = tqdm(total=sched.epochs, initial=start_epoch, desc="epochs", unit="ep", disable=not show,
                     dynamic_ncols=True)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, sched.epochs + 1):
            if stopped_early:
                break
            t0 = time.perf_counter()
            # Data order, worker seeds and augmentation: functions of (seed, epoch, rank) only.
            sampler.set_epoch(epoch)
            train_tf.set_random_state(seed=derive_seed(rt.seed, epoch, ctx.rank, 2))
            loader = _make_loader(train_ds, indices_sampler=sampler, num_workers=config.data.num_workers,
                                  batch_size=sched.batch_size, seed=derive_seed(rt.seed, epoch, ctx.rank, 3),
                                  pin=device.type == "cuda")
            n_batches = len(loader)
            step_bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="case", leave=False,
                            disable=not show, dynamic_ncols=True)

            batch_losses: list[float] = []

            def _on_batch(value: float, _bar: Any = step_bar) -> None:
                batch_losses.append(value)
                _bar.update(1)
                _bar.set_postfix(loss=f"{value:.4f}")

            loss_sum, seen = train_one_epoch(
                model=net, batches=loader, n_batches=n_batches, loss_fn=loss_fn, optimizer=optimizer, device=device,
                per_step=per_step, scaler=scaler, amp=rt.amp, channels_last=rt.channels_last,
                grad_clip=config.optim.grad_clip, on_batch=_on_batch)
            step_bar.close()
            if hard_cases is not None:
                # the loader visited the sampler's draw in order, so batch k holds draws k*b .. k*b+b-1
                hard_cases.record(batch_losses)
                hard_cases.reduce_epoch(lambda t: all_reduce_sum(t, ctx))
            tr = all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64), ctx)
            row: dict[str, Any] = {"epoch": epoch, "train_loss": float(tr[0] / max(tr[1], 1))}

            validate = bool(val_ids) and (epoch % sched.val_every == 0 or epoch == sched.epochs)
            if validate:
                val_loader = _make_loader(val_subset, indices_sampler=None, num_workers=config.data.num_workers,
                                          batch_size=1, seed=0, pin=device.type == "cuda")
                sums = evaluate(model=model, batches=val_loader, loss_fn=loss_fn, device=device,
                                n_classes=config.out_channels, amp=rt.amp, channels_last=rt.channels_last,
                                roi_size=patch)
                row.update(val_metrics(reduce_val_sums(sums, ctx), config.labels, config.target_class))
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    if validate:
                        scheduler.step(row["val_loss"])
                else:
                    scheduler.step()
            row["lr"] = float(optimizer.param_groups[0]["lr"])
            row["epoch_time_s"] = time.perf_counter() - t0
            row["elapsed_s"] = elapsed0 + time.perf_counter() - t_run

            improved = False
            if validate:
                monitored = row["val_loss"] if sched.monitor == "val_loss" else row[f"val_dice_{target_name}"]
                improved = stopper.update(monitored, epoch)
                if sched.early_stopping and stopper.should_stop:
                    stopped_early = True
            elif not val_ids:
                improved = True
                stopper.best_epoch = epoch
            history.append(row)
            if sched.max_minutes is not None and not stopped_early:
                # Every rank stops together: one rank over the budget stops them all.
                over = torch.tensor([1.0 if row["elapsed_s"] >= 60.0 * sched.max_minutes else 0.0],
                                    dtype=torch.float64)
                if float(all_reduce_sum(over, ctx)[0]) > 0:
                    stopped_early = True
                    if ctx.is_main:
                        logger.info("time budget: %.1f min used of schedule.max_minutes=%g; stopping after epoch %d",
                                    row["elapsed_s"] / 60.0, sched.max_minutes, epoch)

            # The checkpoint first, then files derived from it (see the module docstring).
            rng = gather_bytes(rng_state_bytes(), ctx)
            if ctx.is_main:
                trainer_state = {"history": history, "early_stopping": stopper.state(),
                                 "stopped_early": stopped_early}
                if hard_cases is not None:
                    trainer_state["hard_case_losses"] = hard_cases.state()
                save_checkpoint(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                epoch=epoch, config=config_to_dict(config), trainer_state=trainer_state, rng=rng,
                                model_meta=model_meta)
                if improved:
                    _save_best(run_dir, model, config, epoch, row, model_meta)
                _write_metrics(run_dir / METRICS_NAME, columns, history)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch" and v is not None:
                            writer.add_scalar(k, v, epoch)
                    writer.flush()
                postfix = {"loss": f"{row['train_loss']:.4f}"}
                if validate:
                    postfix["val"] = f"{row['val_loss']:.4f}"
                    postfix["dice"] = f"{row[f'val_dice_{target_name}']:.3f}"
                epoch_bar.set_postfix(postfix)
                epoch_bar.update(1)
                logger.info("epoch %d/%d %s", epoch, sched.epochs,
                            " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and v is not None))
                if stopped_early and stopper.should_stop:
                    logger.info("early stopping: %s has not improved for %d validations (best %.4g at epoch %d)",
                                sched.monitor, sched.patience, stopper.best, stopper.best_epoch)
    finally:
        epoch_bar.close()
        if writer is not None:
            writer.close()
    barrier(ctx)
    completed = int(history[-1]["epoch"]) if history else 0
    best_epoch = stopper.best_epoch
    best_row = next((r for r in history if r["epoch"] == best_epoch), {})
    return TrainResult(run_dir=run_dir, epochs_completed=completed, stopped_early=stopped_early,
                       best_epoch=best_epoch, best_metrics=dict(best_row), history=history, model=model.eval(),
                       stopped_by=stop_reason(config, history))


def _save_best(run_dir: Path, model: nn.Module, config: TrainConfig, epoch: int, row: dict[str, Any],
               meta: ModelMeta) -> None:
    best_meta = dataclasses.replace(meta, extra=dict(meta.extra, epoch=epoch, metrics=row))
    write_model_file(run_dir / BEST_MODEL, model, best_meta)
    info = {"epoch": epoch, "metrics": row, "model": BEST_MODEL, "monitor": config.schedule.monitor,
            "model_meta": meta.to_dict()}
    atomic_write_text(run_dir / BEST_INFO, json.dumps(info, indent=2) + "\n")
