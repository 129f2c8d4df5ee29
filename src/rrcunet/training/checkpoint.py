"""Model files and training checkpoints as plain data: safetensors tensors + a JSON header. No pickle.

Owns two file formats, both a single ``.safetensors`` file written atomically
(:func:`rrcunet.io.atomic.atomic_path`), whose safetensors metadata header holds one JSON document
under the key ``"rrcunet"``:

* **model file** (``format = "rrcunet-model"``), written by :func:`save_model` and read by
  :func:`load_model`: the weights plus what inference needs to rebuild and feed the network —
  model registry name and constructor options, task, label names, the preprocessing config and
  the rrcunet version. Self-describing: ``load_model(path)`` needs nothing else.
* **training checkpoint** (``format = "rrcunet-checkpoint"``), written every epoch by the trainer
  (:func:`save_checkpoint` / :func:`load_checkpoint`): the model weights, the optimiser state
  flattened to tensors (``optim.state.<param>.<name>``) with its non-tensor parts in the JSON,
  scheduler and gradient-scaler state, per-rank RNG states (each a nested safetensors blob stored
  as a ``uint8`` tensor ``rng.<rank>``), the epoch, the metric history and the full config.

Everything is read with :mod:`safetensors` only, which parses a JSON header and raw tensor bytes
and never executes code, so a crafted file (a pickle renamed ``.safetensors``, a ``torch.save``
archive) is refused with :class:`~rrcunet.errors.InputError` instead of being run. One file per
checkpoint means a crash can never pair the weights of one epoch with the optimiser of another.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from safetensors.torch import save_file
from torch import nn

from rrcunet import __version__
from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path

MODEL_FORMAT = "rrcunet-model"
CHECKPOINT_FORMAT = "rrcunet-checkpoint"
FORMAT_VERSION = 1
META_KEY = "rrcunet"
# Constructor options that only matter while training; not recorded in model files.
TRAINING_ONLY_KWARGS = ("checkpointing",)


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


def _write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], fmt: str) -> Path:
    header = {"format": fmt, "format_version": str(FORMAT_VERSION), META_KEY: json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def read_safetensors(path: str | Path, *, expect: tuple[str, ...], device: str = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an rrcunet safetensors file: its tensors and its JSON metadata.

    Args:
        path: the file.
        expect: accepted ``format`` values of the header.
        device: where to put the tensors.

    Raises:
        InputError: missing file, not a safetensors file (e.g. a pickle or ``torch.save``
            archive, which is never unpickled), or a safetensors file that rrcunet did not write.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{path}: not a readable safetensors file ({exc}). rrcunet reads weights with safetensors "
            "only and never unpickles a file (a torch.save / pickle file is refused on purpose); "
            "convert trusted weights with safetensors.torch.save_file"
        ) from exc
    fmt = header.get("format")
    if fmt not in expect:
        raise InputError(f"{path}: safetensors file of format {fmt!r}, expected {' or '.join(map(repr, expect))} "
                         "(a file written by rrcunet's save_model or its trainer)")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise InputError(f"{path}: format version {header.get('format_version')!r} is not supported "
                         f"(expected {FORMAT_VERSION}); upgrade rrcunet")
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: metadata header {META_KEY!r} missing or not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path}: metadata header {META_KEY!r} is not a JSON object")
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# model files


@dataclass(frozen=True)
class ModelMeta:
    """What a model file says about its network (the ``"rrcunet"`` JSON of its header).

    Args:
        model_name: registry name for :func:`rrcunet.models.build_model`.
        model_kwargs: constructor options (JSON data; lists where the constructor had tuples).
        task: ``"tumour"``: input ``preprocess(ct, lung).image`` (CT + lung channel, cropped to
            the lungs), output background / lung / tumour. ``"lung"``: input channel 0 of
            ``preprocess(ct, <all-ones mask>)`` (the whole scan resized, no lung crop), output
            background / lung. See :mod:`rrcunet.data.dataset`.
        labels: output channel index → class name.
        preprocess: the :class:`~rrcunet.preprocessing.PreprocessConfig` fields the network was
            trained with (``None`` if unknown); :meth:`preprocess_config` rebuilds the dataclass.
        rrcunet_version: version of rrcunet that wrote the file.
        extra: free provenance (training run, epoch, validation metrics, ...).
        postprocess: the clean-up chosen for this network on validation data (``None``: none
            chosen): ``{"min_tumour_ml": float, "selected_on": {...}}``, written by
            :func:`with_postprocess` (``rrcunet experiment postprocess --write-model``). The
            :class:`~rrcunet.inference.Predictor` applies ``min_tumour_ml`` unless its
            :class:`~rrcunet.inference.PostprocessConfig` sets one.
        mirror_axes: the input axes (0 left-right, 1 anterior-posterior, 2 head-foot of the
            canonical network grid) along which training flipped its samples (``[]``: none;
            ``None``: not recorded, as in files written before 2026-11-29). Test-time mirroring
            (``rrcunet predict --tta``) flips along these axes only, as nnU-Net does; a network
            never shown a mirrored chest along an axis is not made better by averaging over it.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    task: str
    labels: dict[int, str]
    preprocess: dict[str, Any] | None
    rrcunet_version: str
    extra: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] | None = None
    mirror_axes: list[int] | None = None

    @property
    def min_tumour_ml(self) -> float:
        """The chosen ``min_tumour_ml`` of :attr:`postprocess` (0 when none was chosen)."""
        return float((self.postprocess or {}).get("min_tumour_ml", 0.0))

    def preprocess_config(self) -> Any:
        """The :class:`~rrcunet.preprocessing.PreprocessConfig` recorded in the file."""
        from rrcunet.preprocessing import PreprocessConfig
        from rrcunet.config import config_from_dict

        if self.preprocess is None:
            raise InputError("this model file records no preprocessing config")
        return config_from_dict(PreprocessConfig, self.preprocess, where="preprocess")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "model file") -> "ModelMeta":
        try:
            return cls(model_name=str(data["model_name"]), model_kwargs=dict(data["model_kwargs"]),
                       task=str(data["task"]), labels={int(k): str(v) for k, v in data["labels"].items()},
                       preprocess=None if data.get("preprocess") is None else dict(data["preprocess"]),
                       rrcunet_version=str(data.get("rrcunet_version", "unknown")),
                       extra=dict(data.get("extra") or {}),
                       postprocess=_checked_postprocess(data.get("postprocess"), source),
                       mirror_axes=_checked_axes(data.get("mirror_axes"), source))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source}: malformed model description, missing or wrong field {exc}") from exc


def _checked_axes(value: Any, source: str) -> list[int] | None:
    """A model file's ``mirror_axes``: ``None`` or distinct axes among 0, 1, 2 (else :class:`InputError`)."""
    if value is None:
        return None
    ok = (isinstance(value, list) and len(set(value)) == len(value)
          and all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in value))
    if not ok:
        raise InputError(f"{source}: the model file's mirror_axes {value!r} is malformed; expected distinct axes "
                         "among 0, 1, 2")
    return sorted(value)


def _checked_postprocess(value: Any, source: str) -> dict[str, Any] | None:
    """A model file's ``postprocess`` entry, refused (:class:`InputError`) unless it is ``None`` or a
    dict whose ``min_tumour_ml`` is a finite number >= 0."""
    if value is None:
        return None
    ml = value.get("min_tumour_ml") if isinstance(value, dict) else None
    if isinstance(ml, bool) or not isinstance(ml, (int, float)) or not np.isfinite(ml) or ml < 0:
        raise InputError(f"{source}: the model file's postprocess entry {value!r} is malformed; expected "
                         "{'min_tumour_ml': <a number of mL >= 0>, ...}")
    return dict(value)


def _plain(value: Any) -> Any:
    """JSON-ready copy: dataclasses → dicts, tuples → lists."""
    from rrcunet.config import config_to_dict

    return json.loads(json.dumps(config_to_dict(value)))


def make_model_meta(*, model_name: str, model_kwargs: dict[str, Any], preprocess_config: Any = None,
                    task: str = "tumour", labels: dict[int, str] | None = None,
                    extra: dict[str, Any] | None = None, mirror_axes: Any = None) -> ModelMeta:
    """A :class:`ModelMeta` for a network built by ``build_model(model_name, **model_kwargs)``."""
    from rrcunet.training.config import TASKS

    if task not in TASKS:
        raise InputError(f"task must be one of {sorted(TASKS)}, not {task!r}")
    kwargs = {k: v for k, v in model_kwargs.items() if k not in TRAINING_ONLY_KWARGS}
    return ModelMeta(
        model_name=model_name,
        model_kwargs=_plain(kwargs),
        task=task,
        labels=dict(labels if labels is not None else TASKS[task]["labels"]),
        preprocess=None if preprocess_config is None else _plain(preprocess_config),
        rrcunet_version=__version__,
        extra=_plain(dict(extra or {})),
        mirror_axes=_checked_axes(None if mirror_axes is None else [int(a) for a in mirror_axes], "mirror_axes"),
    )


def save_model(path: str | Path, model: nn.Module, *, model_name: str, model_kwargs: dict[str, Any],
               preprocess_config: Any = None, task: str = "tumour", labels: dict[int, str] | None = None,
               extra: dict[str, Any] | None = None, mirror_axes: Any = None) -> Path:
    """Write a self-describing model file (weights + how to rebuild and feed the network), atomically.

    Args:
        path: output ``.safetensors`` path (replaced atomically if it exists).
        model: the network (DDP / compiled wrappers are unwrapped).
        model_name: its :func:`rrcunet.models.build_model` registry name.
        model_kwargs: the constructor options it was built with (training-only options such as
            ``checkpointing`` are dropped).
        preprocess_config: the :class:`~rrcunet.preprocessing.PreprocessConfig` of its inputs.
        task: ``"tumour"`` (3 classes, CT + lung in) or ``"lung"`` (2 classes, CT in).
        labels: class names per output channel; default the task's.
        extra: free JSON-able provenance (run folder, epoch, metrics).
        mirror_axes: the axes training flipped along (:attr:`ModelMeta.mirror_axes`); ``None``: unknown.

    Example::

        save_model("best.safetensors", net, model_name="rrcunet", model_kwargs={"base_filters": 8},
                   preprocess_config=PreprocessConfig(target_shape=(96, 96, 32)))
        net2, meta = load_model("best.safetensors")
    """
    meta = make_model_meta(model_name=model_name, model_kwargs=model_kwargs, preprocess_config=preprocess_config,
                           task=task, labels=labels, extra=extra, mirror_axes=mirror_axes)
    return write_model_file(path, model, meta)


def write_model_file(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Write ``model``'s weights with an existing :class:`ModelMeta` (every field carried as is),
    atomically; :func:`save_model` builds the meta first."""
    return _write(path, model_tensors(model), meta.to_dict(), MODEL_FORMAT)


def with_postprocess(source: str | Path, dest: str | Path, postprocess: dict[str, Any]) -> Path:
    """Copy a model file to ``dest`` with ``postprocess`` recorded in its description
    (:attr:`ModelMeta.postprocess`); the weights are copied unchanged.

    Args:
        source: a model file written by :func:`save_model` (not a training checkpoint).
        dest: the new file; written atomically, and refused when it exists or is ``source``, so
            an input is never overwritten.
        postprocess: ``{"min_tumour_ml": float, ...}`` (JSON data; other keys are provenance).

    Raises:
        InputError: ``dest`` exists, ``source`` is not a model file, or ``postprocess`` is malformed.
    """
    src, dst = Path(source), Path(dest)
    if dst.exists():
        raise InputError(f"{dst}: already exists; choose a new file name (rrcunet never overwrites a model file)")
    tensors, raw = read_safetensors(src, expect=(MODEL_FORMAT,))
    raw = dict(raw, postprocess=_plain(dict(postprocess)))
    ModelMeta.from_dict(raw, source=str(src))  # validates the new entry
    return _write(dst, tensors, raw, MODEL_FORMAT)


def read_model_meta(path: str | Path, *, formats: tuple[str, ...] = (MODEL_FORMAT, CHECKPOINT_FORMAT)) -> ModelMeta:
    """The :class:`ModelMeta` of a model file or training checkpoint, without building the network
    (only the header is read). ``formats``: the accepted file formats; another is refused
    (:class:`InputError`), e.g. ``(MODEL_FORMAT,)`` refuses a training checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from exc
    if header.get("format") not in formats:
        raise InputError(f"{path}: safetensors file of format {header.get('format')!r}, expected "
                         f"{' or '.join(map(repr, formats))} (a file written by rrcunet's save_model or its trainer)")
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: no rrcunet metadata header ({exc})") from exc
    if header.get("format") == CHECKPOINT_FORMAT:
        meta = meta.get("model_meta", {})
    return ModelMeta.from_dict(meta, source=str(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Rebuild the network of a model file (or of a training checkpoint) and load its weights.

    Only safetensors is used to read the file: nothing in it is ever executed.

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
    from rrcunet.models import build_model

    tensors, raw = read_safetensors(path, expect=(MODEL_FORMAT, CHECKPOINT_FORMAT))
    if "model_meta" in raw:  # a training checkpoint
        meta = ModelMeta.from_dict(raw["model_meta"], source=str(path))
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    else:
        meta = ModelMeta.from_dict(raw, source=str(path))
    from rrcunet.training.config import TASKS

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
    task_in = TASKS.get(meta.task, {}).get("in_channels")
    if isinstance(n_in, int) and task_in is not None and n_in != task_in:
        raise InputError(f"{path}: a {meta.task!r} model takes {task_in} input channel(s), but the network "
                         f"described has {n_in}")
    del skeleton
    model = build_model(meta.model_name, **meta.model_kwargs)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict(strict=True)`` with an :class:`InputError` naming the mismatching keys."""
    target = unwrap_model(model)
    check_weights(target.state_dict(), tensors, source=source)
    target.load_state_dict(tensors, strict=True)


def check_weights(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """Refuse (:class:`InputError`) ``tensors`` whose keys or shapes differ from ``expected``."""
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


# ---------------------------------------------------------------------------------------------
# RNG states


def rng_state_bytes() -> bytes:
    """This process's torch (CPU + CUDA), numpy and Python RNG states as a safetensors blob."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, gauss_next = random.getstate()
    meta = {"numpy": json.dumps([name, int(pos), int(has_gauss), float(cached)]),
            "python": json.dumps([version, list(py_state), gauss_next])}
    return st_save_bytes(tensors, metadata=meta)


def restore_rng_state(blob: bytes) -> None:
    """Restore the states saved by :func:`rng_state_bytes` (CUDA ones only when CUDA is in use)."""
    tensors = st_load_bytes(blob)
    meta = _blob_metadata(blob)
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda s: int(s[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss_next = json.loads(meta["python"])
    random.setstate((version, tuple(py_state), gauss_next))


def _blob_metadata(blob: bytes) -> dict[str, str]:
    # The safetensors layout: 8-byte little-endian header length, then the JSON header.
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    return dict(header.get("__metadata__", {}))


# ---------------------------------------------------------------------------------------------
# optimiser state <-> flat tensors + JSON


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.state.<param>.<name>``) and JSON data."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{pid}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": _plain(state_dict["param_groups"]), "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], data: dict[str, Any],
                              optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`, shaped like ``optimizer.state_dict()``.

    Lists in the param groups are turned back into tuples where ``optimizer`` has tuples (betas).
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim.state."):
            continue
        pid, name = key[len("optim.state."):].split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in data.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    template = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, current in zip(data["param_groups"], template):
        group = dict(saved)
        for k, v in group.items():
            if isinstance(current.get(k), tuple) and isinstance(v, list):
                group[k] = tuple(v)
        groups.append(group)
    if len(groups) != len(template):
        raise InputError(f"checkpoint has {len(data['param_groups'])} optimiser parameter groups, "
                         f"the optimiser {len(template)}")
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# ---------------------------------------------------------------------------------------------
# training checkpoints


@dataclass
class TrainingCheckpoint:
    """A training checkpoint read back: tensors by role and the JSON state.

    Args:
        model: model ``state_dict`` tensors.
        optimizer: flat optimiser tensors (``optim.state.*``).
        rng: per-rank RNG blobs (see :func:`restore_rng_state`), index = rank.
        meta: the JSON document: ``epoch``, ``config``, ``optimizer``, ``scheduler``, ``scaler``,
            ``trainer`` (history, early-stopping state), ``model_meta``.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    rng: list[bytes]
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any | None, scaler: Any | None, epoch: int, config: dict[str, Any],
                    trainer_state: dict[str, Any], rng: list[bytes], model_meta: ModelMeta) -> Path:
    """Write the whole training state after ``epoch`` completed epochs to one file, atomically."""
    tensors = model_tensors(model, prefix="model.")
    opt_tensors, opt_data = flatten_optimizer_state(optimizer.state_dict())
    tensors.update(opt_tensors)
    for rank, blob in enumerate(rng):
        tensors[f"rng.{rank}"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()
    meta = {
        "epoch": int(epoch),
        "config": config,
        "optimizer": opt_data,
        "scheduler": _plain(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": _plain(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "trainer": _plain(trainer_state),
        "model_meta": model_meta.to_dict(),
        "rrcunet_version": __version__,
    }
    return _write(path, tensors, meta, CHECKPOINT_FORMAT)


def load_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors only)."""
    tensors, meta = read_safetensors(path, expect=(CHECKPOINT_FORMAT,))
    for key in ("epoch", "config", "optimizer", "trainer", "model_meta"):
        if key not in meta:
            raise InputError(f"{path}: checkpoint metadata lacks {key!r}")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    ranks = sorted(int(k[len("rng."):]) for k in tensors if k.startswith("rng."))
    rng = [tensors[f"rng.{r}"].numpy().tobytes() for r in ranks]
    return TrainingCheckpoint(model=model, optimizer=optim, rng=rng, meta=meta)
