"""Model files: a network's weights and its typed description in one safetensors file. No pickle.

Owns :class:`ModelMeta` (what a model file says about its network, typed), the safetensors
container shared with training checkpoints (:func:`write_safetensors`, :func:`read_safetensors`:
the one header reader, which checks the format and its version), and
:func:`save_model` / :func:`load_model` / :func:`read_model_meta` / :func:`with_postprocess`.

A file is one ``.safetensors`` written atomically (:func:`rrcunet.io.atomic.atomic_path`) whose
metadata header holds ``format`` (``"rrcunet-model"``, or ``"rrcunet-checkpoint"`` for the
trainer's checkpoints, :mod:`rrcunet.training.checkpoint`), ``format_version`` and one JSON
document under ``"rrcunet"``. Everything is read with :mod:`safetensors` only, which parses a JSON
header and raw tensor bytes and never executes code, so a crafted file (a pickle renamed
``.safetensors``, a ``torch.save`` archive) is refused with :class:`~rrcunet.errors.InputError`.

Files written before the foundation redesign (2026-12) still load: :func:`upgrade_meta` converts
them on read (``preprocess.lung_method`` dropped, ``extra.train_patch_size`` moved to
:attr:`ModelMeta.train_patch_size`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rrcunet import __version__
from rrcunet.config import config_from_dict, config_to_dict
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.atomic import atomic_path
from rrcunet.models.registry import build_model
from rrcunet.preprocessing import PreprocessConfig
from rrcunet.tasks import TASKS, get_task

#: Class names name output files and DICOM segments: letters, digits and '_', unique, up to 64 characters.
LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: The largest network grid a model file may ask for (512×512×256), checked before anything is allocated.
MAX_NETWORK_VOXELS = 512 * 512 * 256

MODEL_FORMAT = "rrcunet-model"
CHECKPOINT_FORMAT = "rrcunet-checkpoint"
FORMAT_VERSION = 1
META_KEY = "rrcunet"
# Constructor options that only matter while training; not recorded in model files.
TRAINING_ONLY_KWARGS = ("checkpointing",)


@dataclass(frozen=True)
class PostprocessChoice:
    """The clean-up chosen for a network on validation data (``rrcunet experiment postprocess``).

    Args:
        min_tumour_ml: predicted tumour components smaller than this are dropped (mL, >= 0).
        selected_on: provenance of the choice (dataset, subset, rule, scores).
    """

    min_tumour_ml: float
    selected_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_tumour_ml) or self.min_tumour_ml < 0:
            raise ConfigError(f"min_tumour_ml must be a number of mL >= 0, not {self.min_tumour_ml}")


@dataclass(frozen=True)
class ModelMeta:
    """What a model file says about its network (the ``"rrcunet"`` JSON of its header).

    Args:
        model_name: registry name for :func:`rrcunet.models.build_model`.
        model_kwargs: constructor options (JSON data; lists where the constructor had tuples).
        task: a key of :data:`rrcunet.tasks.TASKS` (input channels, classes, how the input is built).
        labels: output channel index → class name.
        preprocess: the :class:`~rrcunet.preprocessing.PreprocessConfig` the network was trained
            with (``None`` if unknown).
        rrcunet_version: version of rrcunet that wrote the file.
        extra: free provenance (training run, epoch, validation metrics, ...).
        postprocess: the clean-up chosen on validation data (``None``: none chosen); the
            :class:`~rrcunet.inference.Predictor` applies its ``min_tumour_ml`` unless told otherwise.
        mirror_axes: the input axes (0 left-right, 1 anterior-posterior, 2 head-foot of the
            canonical network grid) along which training flipped its samples (``[]``: none;
            ``None``: not recorded, as in files written before 2026-11-29). Test-time mirroring
            (``rrcunet predict --tta``) flips along these axes only, as nnU-Net does.
        train_patch_size: the patch size the network was trained on (``None``: whole volumes); the
            predictor then slides windows of this size, as validation did.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    task: str
    labels: dict[int, str]
    preprocess: PreprocessConfig | None
    rrcunet_version: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)
    postprocess: PostprocessChoice | None = None
    mirror_axes: list[int] | None = None
    train_patch_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"model task {self.task!r} is not one of {sorted(TASKS)}")
        names = list(self.labels.values())
        bad = [n for n in names if not LABEL_NAME.fullmatch(n)]
        if bad or len({n.lower() for n in names}) != len(names):
            raise ConfigError(f"labels {names!r} are not usable: each class name must be unique and match "
                              f"{LABEL_NAME.pattern} (letters, digits, '_'; up to 64 characters), because it names "
                              "output files and DICOM segments")
        shape = None if self.preprocess is None else self.preprocess.target_shape
        if shape is not None and math.prod(shape) > MAX_NETWORK_VOXELS:
            raise ConfigError(f"preprocess.target_shape {tuple(shape)} has {math.prod(shape):,} voxels; at most "
                              f"{MAX_NETWORK_VOXELS:,} are accepted (the paper's grid has 3,145,728)")
        axes = self.mirror_axes
        if axes is not None:
            if len(set(axes)) != len(axes) or not all(0 <= a <= 2 for a in axes):
                raise ConfigError(f"mirror_axes {axes!r} is malformed; expected distinct axes among 0, 1, 2")
            object.__setattr__(self, "mirror_axes", sorted(axes))

    @property
    def min_tumour_ml(self) -> float:
        """The chosen ``min_tumour_ml`` of :attr:`postprocess` (0 when none was chosen)."""
        return 0.0 if self.postprocess is None else self.postprocess.min_tumour_ml

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model file") -> ModelMeta:
        """Read (and :func:`upgrade_meta`) the JSON description; :class:`InputError` naming the field otherwise."""
        try:
            return config_from_dict(cls, upgrade_meta(data))
        except ConfigError as exc:
            raise InputError(f"{source}: malformed model description, {exc}") from None


def upgrade_meta(data: Any) -> Any:
    """A model description written by an older rrcunet, in today's form (a copy; others unchanged)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("preprocess"), dict):  # the lung extractor is chosen at inference now
        data["preprocess"] = {k: v for k, v in data["preprocess"].items() if k != "lung_method"}
    if isinstance(data.get("extra"), dict) and "train_patch_size" in data["extra"]:
        extra = dict(data["extra"])
        patch = extra.pop("train_patch_size")
        if data.get("train_patch_size") is None:
            data["train_patch_size"] = patch
        data["extra"] = extra
    return data


def make_model_meta(*, model_name: str, model_kwargs: dict[str, Any], preprocess_config: PreprocessConfig | None = None,
                    task: str = "tumour", labels: dict[int, str] | None = None,
                    extra: dict[str, Any] | None = None, mirror_axes: Any = None,
                    train_patch_size: Any = None) -> ModelMeta:
    """A :class:`ModelMeta` for a network built by ``build_model(model_name, **model_kwargs)``
    (training-only constructor options dropped; the task's labels by default)."""
    data = {
        "model_name": model_name,
        "model_kwargs": {k: v for k, v in model_kwargs.items() if k not in TRAINING_ONLY_KWARGS},
        "task": task,
        "labels": labels if labels is not None else get_task(task).labels,
        "preprocess": preprocess_config,
        "rrcunet_version": __version__,
        "extra": dict(extra or {}),
        "mirror_axes": None if mirror_axes is None else [int(a) for a in mirror_axes],
        "train_patch_size": train_patch_size,
    }
    return ModelMeta.from_dict(config_to_dict(data), source="model description")


# ---------------------------------------------------------------------------------------------
# the safetensors container


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP / DataParallel / ``torch.compile`` wrapper."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def model_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict`` of ``model`` as contiguous CPU tensors that share no memory (safetensors needs both)."""
    return {f"{prefix}{k}": v.detach().to("cpu", copy=True).contiguous()
            for k, v in unwrap_model(model).state_dict().items()}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], fmt: str) -> Path:
    """Write tensors and the JSON document ``meta`` as an rrcunet file of format ``fmt``, atomically."""
    header = {"format": fmt, "format_version": str(FORMAT_VERSION), META_KEY: json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def read_safetensors(path: str | Path, *, expect: tuple[str, ...], device: str = "cpu", tensors: bool = True
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (none with ``tensors=False``: the header alone) and JSON document of an rrcunet file.

    The one header reader: it checks the format against ``expect`` and the format version.

    Raises:
        InputError: missing file, not a safetensors file (e.g. a pickle, which is never
            unpickled), another format, an unsupported version, or a missing / non-object JSON document.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            header = fh.metadata() or {}
            data = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{path}: not a readable safetensors file ({exc}). rrcunet reads weights with safetensors only and "
            "never unpickles a file (a torch.save / pickle file is refused on purpose); convert trusted weights "
            "with safetensors.torch.save_file") from exc
    if header.get("format") not in expect:
        raise InputError(f"{path}: safetensors file of format {header.get('format')!r}, expected "
                         f"{' or '.join(map(repr, expect))} (a file written by rrcunet's save_model or its trainer)")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise InputError(f"{path}: format version {header.get('format_version')!r} is not supported "
                         f"(expected {FORMAT_VERSION}); upgrade rrcunet")
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: metadata header {META_KEY!r} missing or not JSON ({exc})") from exc
    except RecursionError:
        raise InputError(f"{path}: metadata header {META_KEY!r} is nested too deeply to be a model description; "
                         "the file is not a model written by rrcunet") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: metadata header {META_KEY!r} is not a JSON object")
    return data, meta


# ---------------------------------------------------------------------------------------------
# model files


def save_model(path: str | Path, model: nn.Module, *, model_name: str, model_kwargs: dict[str, Any],
               preprocess_config: PreprocessConfig | None = None, task: str = "tumour",
               labels: dict[int, str] | None = None, extra: dict[str, Any] | None = None,
               mirror_axes: Any = None, train_patch_size: Any = None) -> Path:
    """Write a self-describing model file (weights + how to rebuild and feed the network), atomically.

    The arguments are those of :class:`ModelMeta` (``model_kwargs``: the constructor options,
    training-only ones such as ``checkpointing`` dropped; ``labels``: default the task's).

    Example::

        save_model("best.safetensors", net, model_name="rrcunet", model_kwargs={"base_filters": 8},
                   preprocess_config=PreprocessConfig(target_shape=(96, 96, 32)))
        net2, meta = load_model("best.safetensors")
    """
    meta = make_model_meta(model_name=model_name, model_kwargs=model_kwargs, preprocess_config=preprocess_config,
                           task=task, labels=labels, extra=extra, mirror_axes=mirror_axes,
                           train_patch_size=train_patch_size)
    return write_model_file(path, model, meta)


def write_model_file(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Write ``model``'s weights with an existing :class:`ModelMeta`, atomically."""
    return write_safetensors(path, model_tensors(model), meta.to_dict(), MODEL_FORMAT)


def with_postprocess(source: str | Path, dest: str | Path, postprocess: dict[str, Any]) -> Path:
    """Copy a model file to ``dest`` with ``postprocess`` (:class:`PostprocessChoice` data) recorded
    in its description; the weights are copied unchanged.

    ``dest`` is written atomically, and refused when it exists or is ``source``, so an input is
    never overwritten.

    Raises:
        InputError: ``dest`` exists, ``source`` is not a model file, or ``postprocess`` is malformed.
    """
    src, dst = Path(source), Path(dest)
    if dst.exists():
        raise InputError(f"{dst}: already exists; choose a new file name (rrcunet never overwrites a model file)")
    tensors, raw = read_safetensors(src, expect=(MODEL_FORMAT,))
    try:
        choice = config_from_dict(PostprocessChoice, config_to_dict(postprocess), where="postprocess")
    except ConfigError as exc:
        raise InputError(f"{src}: the postprocess entry {postprocess!r} is malformed ({exc}); expected "
                         "{'min_tumour_ml': <a number of mL >= 0>, 'selected_on': {...}}") from None
    meta = ModelMeta.from_dict(dict(raw, postprocess=config_to_dict(choice)), source=str(src))
    return write_safetensors(dst, tensors, meta.to_dict(), MODEL_FORMAT)


def _meta_of(raw: dict[str, Any], source: str) -> ModelMeta:
    """The description of a model file, or of the network of a training checkpoint."""
    return ModelMeta.from_dict(raw["model_meta"] if "model_meta" in raw else raw, source=source)


def read_model_meta(path: str | Path, *, formats: tuple[str, ...] = (MODEL_FORMAT, CHECKPOINT_FORMAT)) -> ModelMeta:
    """The :class:`ModelMeta` of a model file or training checkpoint, from its header alone
    (``formats``: the accepted file formats, e.g. ``(MODEL_FORMAT,)`` refuses a checkpoint)."""
    return _meta_of(read_safetensors(path, expect=formats, tensors=False)[1], str(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Rebuild the network of a model file (or of a training checkpoint) and load its weights.

    Args:
        path: a file written by :func:`save_model`, or a trainer checkpoint
            (``RUN/checkpoints/last.safetensors``).
        device: where to put the model.

    Returns:
        ``(model, meta)``: the network in eval mode and its :class:`ModelMeta`.

    Raises:
        InputError: not a safetensors file, not written by rrcunet, unknown model name, or
            weights that do not fit the described network (the message lists the keys).
    """
    tensors, raw = read_safetensors(path, expect=(MODEL_FORMAT, CHECKPOINT_FORMAT))
    meta = _meta_of(raw, str(path))
    if "model_meta" in raw:  # a training checkpoint
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        # A skeleton on the meta device allocates nothing, so a small file that describes a huge
        # network is refused before any memory is spent on it.
        with torch.device("meta"):
            skeleton = build_model(meta.model_name, **meta.model_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: cannot build model {meta.model_name!r} with {meta.model_kwargs} ({exc})") from exc
    check_weights(skeleton.state_dict(), tensors, source=str(path))
    n_out, n_in = getattr(skeleton, "out_channels", None), getattr(skeleton, "in_channels", None)
    if isinstance(n_out, int) and len(meta.labels) != n_out:
        raise InputError(f"{path}: the model file names {len(meta.labels)} classes {meta.labels} but the network "
                         f"has {n_out} output channels")
    task_in = get_task(meta.task).in_channels
    if isinstance(n_in, int) and n_in != task_in:
        raise InputError(f"{path}: a {meta.task!r} model takes {task_in} input channel(s), but the network "
                         f"described has {n_in}")
    del skeleton
    model = build_model(meta.model_name, **meta.model_kwargs)
    model.load_state_dict(tensors, strict=True)  # checked against the skeleton above
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict(strict=True)`` with an :class:`InputError` naming the mismatching keys."""
    target = unwrap_model(model)
    check_weights(target.state_dict(), tensors, source=source)
    target.load_state_dict(tensors, strict=True)


def check_weights(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """Refuse (:class:`InputError`) ``tensors`` whose keys or shapes differ from ``expected``, that are not
    floating point where the network's are, or that hold NaN or infinite values."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            detail.append("wrong shape " + ", ".join(
                f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:3]))
        raise InputError(f"{source}: weights do not fit the network: {'; '.join(detail)}")
    # A network of NaN, infinite or integer weights runs and returns an all-background mask with
    # exit 0; refuse it here, before it can.
    not_float = sorted(k for k, v in tensors.items() if expected[k].is_floating_point() and not v.is_floating_point())
    if not_float:
        raise InputError(f"{source}: weights stored as {tensors[not_float[0]].dtype} ({', '.join(not_float[:3])}"
                         f"{' …' if len(not_float) > 3 else ''}); expected floating-point weights. The file was not "
                         "written by rrcunet's trainer or save_model, or was converted wrongly")
    not_finite = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if not_finite:
        raise InputError(f"{source}: {len(not_finite)} weight tensor(s) hold NaN or infinite values "
                         f"({', '.join(not_finite[:3])}{' …' if len(not_finite) > 3 else ''}); the training diverged "
                         "or the file is damaged: use an earlier checkpoint or retrain")
