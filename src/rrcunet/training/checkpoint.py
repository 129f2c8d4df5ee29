"""Training checkpoints: the whole training state in one safetensors file, as plain data. No pickle.

Owns the checkpoint format (``format = "rrcunet-checkpoint"`` in the container of
:mod:`rrcunet.models.model_file`), written every epoch by the trainer (:func:`save_checkpoint` /
:func:`load_checkpoint`): the model weights, the optimiser state flattened to tensors
(``optim.state.<param>.<name>``) with its non-tensor parts in the JSON, scheduler and
gradient-scaler state, per-rank RNG states (each a nested safetensors blob stored as a ``uint8``
tensor ``rng.<rank>``), the epoch, the metric history, the full config and the
:class:`~rrcunet.models.model_file.ModelMeta` of the network (so a checkpoint is also a model file
for :func:`~rrcunet.models.model_file.load_model`). One file per checkpoint means a crash can never
pair the weights of one epoch with the optimiser of another.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import nn

from rrcunet import __version__
from rrcunet.config import config_to_dict
from rrcunet.errors import InputError
from rrcunet.models.model_file import (
    CHECKPOINT_FORMAT,
    ModelMeta,
    model_tensors,
    read_safetensors,
    write_safetensors,
)


def _plain(value: Any) -> Any:
    """JSON-ready copy: dataclasses → dicts, tuples → lists."""
    return json.loads(json.dumps(config_to_dict(value)))


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
    return write_safetensors(path, tensors, meta, CHECKPOINT_FORMAT)


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
