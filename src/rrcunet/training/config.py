"""Typed training configuration: nested frozen dataclasses, JSON files and ``key=value`` overrides.

Owns :class:`TrainConfig` and its sections (:class:`DataConfig`, :class:`ModelConfig`,
:class:`OptimConfig`, :class:`ScheduleConfig`, :class:`AugmentConfig`, :class:`RuntimeConfig`;
the ``preprocess`` and ``loss`` sections *are* :class:`rrcunet.preprocessing.PreprocessConfig` and
:class:`rrcunet.losses.LossConfig`, so their options are defined in one place), the parser that
builds them from JSON with type checking (:func:`config_from_dict`), dotted overrides such as ``optim.lr=1e-3``
(:func:`apply_overrides`) and the loader of packaged configs (:func:`load_config`).

Every default is the paper's (§4.1–4.2: Adam, lr 3e-4, weight decay 1e-4, batch size 1, 1000
epochs, loss backward after the forward of all patients, early stopping on the validation loss,
input 2×256×256×48) unless the docstring of the field says otherwise. The saved ``config.json``
of a run lists *every* field, including the model's constructor defaults, so it
alone reproduces the run even if a later version changes a default.

Example::

    from rrcunet.training.config import load_config
    cfg = load_config("cpu_tumour", overrides=["data.dataset=phantoms", "optim.lr=1e-3"])
    cfg.optim.lr   # 0.001
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from rrcunet.config import apply_overrides, config_from_dict, read_config_data
from rrcunet.errors import ConfigError
from rrcunet.losses import LossConfig
from rrcunet.models.registry import build_model, check_divisible
from rrcunet.preprocessing import PreprocessConfig
from rrcunet.tasks import Task, get_task

CONFIG_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is and how it is fed.

    Args:
        dataset: prepared dataset folder (``manifest.json`` + ``images/ labels/ lungs/``; make one
            with ``rrcunet import`` or ``rrcunet phantoms``). Its manifest's split decides the
            training and validation cases. Required.
        val_dataset: validate on the validation split of this prepared dataset instead of
            ``dataset``'s (``dataset`` then gives only its training split): a fixed external
            validation set, e.g. another hospital's scans, or phantoms of the default mix while
            training on a different one. ``None`` (default): ``dataset``'s own split.
        cache_dir: where preprocessed cases are cached (one sub-folder per preprocessing config
            hash). Default ``<dataset>/.rrcunet_cache``; ``val_dataset``'s cases go to
            ``<cache_dir>/val`` (default ``<val_dataset>/.rrcunet_cache``), so equal case ids in the
            two datasets never share a cache file.
        num_workers: DataLoader worker processes (0 = load in the main process).
        patch_size: train on random patches of this size instead of the whole preprocessed volume
            (when memory is the limit; validation then uses sliding-window inference). ``None``
            (default, the paper) trains on the whole ``preprocess.target_shape`` volume.
        patch_target_prob: with ``patch_size``, probability that a patch is centred on a voxel of
            the target class (tumour; lung for the lung task); otherwise on any other voxel.
        patch_sampling: how a target-centred patch picks its centre: ``"voxel"`` (any target voxel
            alike, MONAI's default, so a 50 mL tumour is drawn 50 times as often as a 1 mL
            nodule) or ``"lesion"`` (a connected component of the target class first, each alike,
            then a voxel in it: small lesions are seen as often as large ones).
        max_train_cases: use only the first N training cases (quick experiments); ``None`` = all.
        max_val_cases: the same for validation.
        lung_channel: where the tumour model's lung input channel comes from: ``"dataset"`` (the
            prepared dataset's ``lungs/`` masks) or ``"extractor"`` (the lung extractor
            ``preprocess.lung_method``, exactly what ``rrcunet predict`` computes at inference; the
            paper did this for its datasets without lung masks). A model trained on ground-truth
            lung masks can lean on their exact boundary and do worse at inference, where the mask
            comes from the extractor (measured: docs/training.md, "CPU recipe").
        hard_case_sampling: share ``s`` in [0, 1] of each epoch's case draws that follows the cases'
            latest training losses (:class:`rrcunet.training.sampling.HardCaseSampler`: draws with
            replacement, ``p_i = (1 - s)/N + s × loss_i / Σ loss``). 0 (default, the paper) shows
            every case once per epoch in a shuffled order.
    """

    dataset: str | None = None
    val_dataset: str | None = None
    cache_dir: str | None = None
    num_workers: int = 2
    patch_size: tuple[int, int, int] | None = None
    patch_target_prob: float = 0.67
    patch_sampling: Literal["voxel", "lesion"] = "voxel"
    max_train_cases: int | None = None
    max_val_cases: int | None = None
    lung_channel: Literal["dataset", "extractor"] = "dataset"
    hard_case_sampling: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_case_sampling <= 1.0:
            raise ConfigError(f"data.hard_case_sampling must be in [0, 1], not {self.hard_case_sampling}")
        if self.lung_channel not in ("dataset", "extractor"):
            raise ConfigError(f"data.lung_channel must be 'dataset' or 'extractor', not {self.lung_channel!r}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, not {self.num_workers}")
        if self.patch_size is not None and any(int(s) < 1 for s in self.patch_size):
            raise ConfigError(f"data.patch_size must be 3 positive ints, not {self.patch_size}")
        if not 0.0 <= self.patch_target_prob <= 1.0:
            raise ConfigError(f"data.patch_target_prob must be in [0, 1], not {self.patch_target_prob}")
        if self.patch_sampling not in ("voxel", "lesion"):
            raise ConfigError(f"data.patch_sampling must be 'voxel' or 'lesion', not {self.patch_sampling!r}")
        for name in ("max_train_cases", "max_val_cases"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"data.{name} must be >= 1 or null, not {v}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: a registry name and its constructor options.

    Args:
        name: a name of :func:`rrcunet.models.build_model`'s registry (``rrcunet``, ``cgpd``,
            ``residual``, ``recurrent``, ``unet``, ``coordunet``).
        kwargs: constructor options (``base_filters``, ``levels``, ``t``, ``dropout``, ...). The
            input/output channels come from the task and must not be set here. On the command
            line ``model.base_filters=8`` is short for ``model.kwargs.base_filters=8``. Missing
            options take the model's defaults, which are written into the run's ``config.json``.
        init_from: a model file (``.safetensors`` of ``rrcunet train``, e.g. the bundled model) whose
            weights start the training instead of a random initialisation (fine-tuning). Its network
            must be this one (same name and options, same input and output channels); otherwise
            the run stops with the differences. A resumed run continues from its checkpoint and
            ignores it.
    """

    name: str = "rrcunet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    __config_kwargs_field__: ClassVar[str] = "kwargs"  # model.X=v sets model.kwargs.X (rrcunet.config)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Args:
        optimizer: ``"adam"`` (the paper: Adam with L2 weight decay) or ``"adamw"`` (decoupled).
        lr: learning rate; paper 3e-4.
        weight_decay: paper 1e-4.
        betas: Adam betas.
        eps: Adam epsilon.
        scheduler: ``"none"`` (the paper: constant lr), ``"cosine"`` (cosine decay to
            ``min_lr`` over ``schedule.epochs``) or ``"plateau"`` (lr × ``plateau_factor`` after
            ``plateau_patience`` validations without a lower validation loss).
        min_lr: floor of the cosine and plateau schedules.
        plateau_factor: multiplicative lr decrease of ``"plateau"``.
        plateau_patience: validations without improvement before ``"plateau"`` decreases the lr.
        grad_clip: clip the global gradient norm to this value; ``None`` (default) = no clipping.
    """

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: Literal["none", "cosine", "plateau"] = "none"
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 20
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.lr <= 10:
            raise ConfigError(f"optim.lr must be in (0, 10], not {self.lr} (the paper: 3e-4)")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"optim.eps must be in (0, 1], not {self.eps}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"optim.min_lr must be in [0, optim.lr={self.lr}], not {self.min_lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, not {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two values in [0, 1), not {self.betas}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"optim.plateau_factor must be in (0, 1), not {self.plateau_factor}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"optim.grad_clip must be > 0 or null, not {self.grad_clip}")


@dataclass(frozen=True)
class ScheduleConfig:
    """How long and in which steps to train.

    Args:
        epochs: maximum number of epochs; paper 1000.
        accumulate: training cases whose losses are averaged into one optimiser step (gradient
            accumulation over batches of ``batch_size``). ``"all"`` (the paper: "the loss was
            backward after obtaining forward values of all patients") makes one step per epoch
            over every training case; an int K makes one step per K cases. Under DDP, K counts
            cases over all processes and must be a multiple of the world size.
        batch_size: cases per forward pass; paper 1.
        val_every: validate every N epochs (early stopping counts validations).
        early_stopping: stop when the monitored validation value has not improved for
            ``patience`` validations.
        monitor: ``"val_loss"`` (the paper) or ``"val_dice"`` (target-class Dice); also decides
            which epoch is kept as ``best``.
        patience: validations without improvement before stopping. The paper does not give its
            value; 50 is ours.
        min_delta: an improvement smaller than this does not count.
        max_minutes: wall-clock budget; the run stops after the first epoch that ends past it
            (``None``: no budget). Used by the CPU recipe ("within 30 minutes on 2 cores").
    """

    epochs: int = 1000
    accumulate: int | Literal["all"] = "all"
    batch_size: int = 1
    val_every: int = 1
    early_stopping: bool = True
    monitor: Literal["val_loss", "val_dice"] = "val_loss"
    patience: int = 50
    min_delta: float = 0.0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"schedule.max_minutes must be > 0 or null, not {self.max_minutes}")
        if self.epochs < 1:
            raise ConfigError(f"schedule.epochs must be >= 1, not {self.epochs}")
        if self.accumulate != "all" and (not isinstance(self.accumulate, int) or self.accumulate < 1):
            raise ConfigError(f"schedule.accumulate must be a positive int or 'all', not {self.accumulate!r}")
        if self.batch_size < 1:
            raise ConfigError(f"schedule.batch_size must be >= 1, not {self.batch_size}")
        if self.val_every < 1:
            raise ConfigError(f"schedule.val_every must be >= 1, not {self.val_every}")
        if self.patience < 1:
            raise ConfigError(f"schedule.patience must be >= 1, not {self.patience}")
        if self.min_delta < 0:
            raise ConfigError(f"schedule.min_delta must be >= 0, not {self.min_delta}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (§4.1: flipping, deformation, affine), MONAI dictionary transforms.

    The same random spatial transform is applied to the CT channel (linear interpolation), the
    lung channel and the label map (both nearest neighbour). Validation is never augmented. The
    paper names the operations but not their parameters; the defaults here are ours.

    Args:
        enabled: master switch.
        flip_prob: probability of a flip, drawn independently for each axis of ``flip_axes``.
        flip_axes: the array axes that may be flipped: 0 = left-right, 1 = anterior-posterior,
            2 = superior-inferior (the preprocessed arrays are in the canonical LPS frame). The
            default flips all three; ``[0]`` flips only left-right, the one mirror a real chest has.
        affine_prob: probability of a random affine (rotation, scaling, translation).
        rotate_deg: maximum rotation about each axis, degrees (uniform in ±value).
        scale: maximum relative scaling per axis (uniform in ±value).
        translate: maximum translation per axis, voxels.
        elastic_prob: probability of a random elastic deformation (``Rand3DElasticd``).
        elastic_sigma: range of the Gaussian smoothing of the displacement field, voxels.
        elastic_magnitude: range of the displacement magnitude.
        intensity_prob: probability of each of three CT-only intensity changes (not in the paper;
            nnU-Net has their like; 0 = off, the default): scale by ``1 + u``, ``u`` uniform in
            ``±intensity_scale``; shift by ``±intensity_shift``; add Gaussian noise of a standard
            deviation uniform in ``[0, noise_std]``. Units are those of the z-normalised CT (1 = its
            standard deviation), so 0.1 is roughly 40 HU in a chest crop.
        intensity_scale / intensity_shift / noise_std: their ranges.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0, 1, 2)
    affine_prob: float = 0.2
    rotate_deg: tuple[float, float, float] = (10.0, 10.0, 10.0)
    scale: tuple[float, float, float] = (0.1, 0.1, 0.1)
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elastic_prob: float = 0.2
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: tuple[float, float] = (50.0, 150.0)
    intensity_prob: float = 0.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        for name in ("flip_prob", "affine_prob", "elastic_prob", "intensity_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], not {p}")
        for name in ("intensity_scale", "intensity_shift", "noise_std"):
            if not 0.0 <= getattr(self, name) < 10.0:
                raise ConfigError(f"augment.{name} must be in [0, 10), not {getattr(self, name)}")
        axes = list(self.flip_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ConfigError(f"augment.flip_axes must list distinct axes among 0, 1, 2 (left-right, anterior-posterior, "
                              f"superior-inferior), not {axes}")
        for name in ("elastic_sigma", "elastic_magnitude"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"augment.{name} must be (low, high) with 0 <= low <= high, not {(lo, hi)}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast to run; none of these change the recipe.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            Under torchrun each process uses ``cuda:LOCAL_RANK``.
        amp: mixed precision: ``"none"`` (float32), ``"bf16"`` (GPU, or CPU autocast) or
            ``"fp16"`` (GPU, with a gradient scaler).
        channels_last: use the ``channels_last_3d`` memory format for the model and inputs.
        checkpointing: activation checkpointing (recompute each level's activations in the backward
            pass); passed to the model as ``checkpointing=True``. Cuts activation memory several
            times for about 30 % more compute.
        seed: seed of everything random (initial weights, data order, augmentation, dropout).
        deterministic: use deterministic kernels (``cudnn.deterministic``, no benchmark).
        num_threads: torch intra-op CPU threads; ``None`` keeps torch's default.
        progress: show tqdm progress bars (rank 0 only).
        tensorboard: write TensorBoard event files to ``RUN_DIR/tensorboard``.
    """

    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    checkpointing: bool = False
    seed: int = 0
    deterministic: bool = True
    num_threads: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"runtime.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")
        if self.num_threads is not None and not 1 <= self.num_threads <= 1024:
            raise ConfigError(f"runtime.num_threads must be in [1, 1024] or null, not {self.num_threads} (this "
                              f"machine has {os.cpu_count()} CPUs)")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. Build it with :func:`load_config` or :func:`config_from_dict`.

    Args:
        task: ``"tumour"`` (the paper's RRc-UNet: CT + lung channel in; background / lung / tumour
            out) or ``"lung"`` (the lung-parenchyma model: CT only in; background / lung out,
            trained on the ``lungs/`` masks of the dataset, on the whole CT, not cropped).
        data, preprocess, model, loss, optim, schedule, augment, runtime: the sections.
        version: configuration format version.
    """

    task: Literal["tumour", "lung"] = "tumour"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported (expected {CONFIG_VERSION})")
        clash = sorted({"in_channels", "out_channels"} & set(self.model.kwargs))
        for key in clash:
            expected = getattr(self.spec, key)
            if self.model.kwargs[key] != expected:
                raise ConfigError(
                    f"model.kwargs.{key}={self.model.kwargs[key]} contradicts task {self.task!r}, which needs "
                    f"{key}={expected}; remove it from model.kwargs (the task sets it)"
                )
        # The network's options and input-size rule, checked now rather than at the first forward pass
        # after the whole dataset has been preprocessed: the model is built on the meta device (no memory).
        with torch.device("meta"):
            net = build_model(self.model.name, **{**self.model.kwargs, "in_channels": self.in_channels,
                                                  "out_channels": self.out_channels})
        divisor = int(getattr(net, "divisor", 1))
        check_divisible(self.preprocess.target_shape, divisor, "preprocess.target_shape")
        check_divisible(self.data.patch_size, divisor, "data.patch_size")
        shape, patch = self.preprocess.target_shape, self.data.patch_size
        if shape is not None and patch is not None and any(p > s for p, s in zip(patch, shape)):
            raise ConfigError(f"data.patch_size {tuple(patch)} is larger than preprocess.target_shape {tuple(shape)}, "
                              "the grid the patches are cut from; use a smaller data.patch_size")

    @property
    def spec(self) -> Task:
        """The :class:`~rrcunet.tasks.Task` named by :attr:`task`."""
        return get_task(self.task)

    @property
    def in_channels(self) -> int:
        return self.spec.in_channels

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    @property
    def labels(self) -> dict[int, str]:
        return self.spec.labels

    @property
    def target_class(self) -> int:
        return self.spec.target_label


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a config (file path or packaged name; ``None`` = all defaults) and apply overrides.

    Example::

        cfg = load_config("paper", ["data.dataset=/data/lung1", "runtime.amp=bf16"])
    """
    data = read_config_data(source) if source is not None else {}
    try:
        data = apply_overrides(data, list(overrides), cls=TrainConfig)
        return config_from_dict(TrainConfig, data)
    except ConfigError as exc:
        where = f"{source}: " if source is not None else ""
        raise ConfigError(f"{where}{exc}") from exc
