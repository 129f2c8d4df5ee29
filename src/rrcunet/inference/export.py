"""Export a model file to ONNX or TorchScript, with a sidecar JSON, and check the ONNX export.

Owns :func:`export_model` (what ``rrcunet export`` calls), :func:`export_onnx`,
:func:`export_torchscript` and :func:`check_onnx` (ONNX Runtime vs PyTorch on the same input,
as the fraction of voxels whose arg-max label agrees).

* ONNX: ``torch.onnx.export`` (the TorchScript-based exporter, ``dynamo=False``: it needs no extra
  package) at opset ≥ 17; input ``"input"`` ``(B, C_in, X, Y, Z)``, output ``"logits"``
  ``(B, C_out, X, Y, Z)``; with ``dynamic=True`` the batch and spatial axes are dynamic (spatial
  sizes must stay multiples of the network's ``2**(levels-1)``).
* TorchScript: ``torch.jit.trace`` at the export shape (a traced model accepts other shapes of the
  same rank; the input checks of the Python model are not part of the trace).
* Sidecar ``<OUT>.json``: the model file's meta (model name and options, task, labels,
  preprocessing), the export format, opset, input/output names and shape, the SHA-256 of the
  source model file and of the export, and the rrcunet version — what a deployment needs to feed
  the network the same way (clip, z-normalise, crop, resize: docs/preprocessing.md).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rrcunet import __version__
from rrcunet.errors import ConfigError, InputError
from rrcunet.inference.bundled import bundled_model_path
from rrcunet.inference.predictor import file_sha256
from rrcunet.io.atomic import atomic_path, atomic_write_text, check_output_path
from rrcunet.models.model_file import ModelMeta, load_model
from rrcunet.models.registry import check_divisible
from rrcunet.tasks import get_task

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ExportResult:
    """Files written by :func:`export_model` and, for ONNX, the check result (``None`` when skipped)."""

    path: Path
    sidecar: Path
    shape: tuple[int, int, int, int, int]
    agreement: float | None


def _input_shape(meta: ModelMeta, shape: tuple[int, int, int] | None) -> tuple[int, int, int, int, int]:
    c_in = get_task(meta.task).in_channels
    if shape is None:
        target = None if meta.preprocess is None else meta.preprocess.target_shape
        if target is None:
            raise ConfigError("the model file records no fixed input shape (it was trained at a target spacing); "
                              "pass --shape X Y Z")
        shape = tuple(int(s) for s in target)  # type: ignore[assignment]
    if len(shape) != 3 or any(int(s) < 1 for s in shape):  # type: ignore[arg-type]
        raise ConfigError(f"--shape must be 3 positive integers X Y Z, not {shape}")
    return (1, c_in, *(int(s) for s in shape))  # type: ignore[return-value]


def export_onnx(model: nn.Module, example: torch.Tensor, out: str | os.PathLike[str], *, opset: int = MIN_OPSET,
                dynamic: bool = False) -> Path:
    """Export ``model`` to ONNX at ``example``'s shape, atomically (see the module docstring)."""
    if opset < MIN_OPSET:
        raise ConfigError(f"opset must be >= {MIN_OPSET}, not {opset}")
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None
    model = model.eval()
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the Python input checks, the exporter's deprecation notice
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=int(opset),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    return Path(out)


def export_torchscript(model: nn.Module, example: torch.Tensor, out: str | os.PathLike[str]) -> Path:
    """Trace ``model`` on ``example`` with ``torch.jit.trace`` and save it, atomically."""
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (example,), check_trace=False)
    with atomic_path(out) as tmp:
        traced.save(str(tmp))
    return Path(out)


def check_onnx(onnx_path: str | os.PathLike[str], model: nn.Module, example: torch.Tensor) -> float:
    """Fraction of voxels whose arg-max label is the same with ONNX Runtime (CPU) and with PyTorch.

    Args:
        onnx_path: the exported file.
        model: the PyTorch model (eval mode).
        example: an input ``(B, C, X, Y, Z)``.

    Returns:
        agreement in ``[0, 1]``.
    """
    import onnxruntime as ort  # lazy: only the ONNX agreement check needs the runtime

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example.detach().cpu().numpy()})[0]
    with torch.no_grad():
        ref = model.eval()(example).float().cpu().numpy()
    if got.shape != ref.shape:
        raise InputError(f"{onnx_path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1)))


def export_model(fmt: str, out: str | os.PathLike[str], *, model_path: str | os.PathLike[str] | None = None,
                 shape: tuple[int, int, int] | None = None, opset: int = MIN_OPSET, dynamic: bool = False,
                 check: bool = True, min_agreement: float = 0.999, overwrite: bool = False,
                 seed: int = 0) -> ExportResult:
    """Export a model file (default: the bundled demo model) and write the sidecar JSON.

    Args:
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: output file (``.onnx`` / ``.pt``); the sidecar is ``<out>.json``.
        model_path: rrcunet model file; ``None`` = bundled demo model.
        shape: spatial export shape ``(X, Y, Z)``; default the model file's ``preprocess.target_shape``.
        opset: ONNX opset (≥ 17).
        dynamic: ONNX with dynamic batch and spatial axes.
        check: ONNX only: run ONNX Runtime on a seeded random input and compare labels with PyTorch.
        min_agreement: refuse (and delete) an ONNX export whose agreement is below this.
        overwrite: replace existing outputs.
        seed: seed of the check input.

    Raises:
        ConfigError: unknown format, opset < 17, no shape available.
        InputError: outputs exist without ``overwrite``; the ONNX check fails.
    """

    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {FORMATS}, not {fmt!r}")
    src = Path(model_path) if model_path is not None else bundled_model_path("tumour")
    out_p = check_output_path(out, inputs=[src], overwrite=overwrite)
    sidecar = check_output_path(Path(f"{out_p}.json"), inputs=[src], overwrite=overwrite)
    model, meta = load_model(src, device="cpu")
    full_shape = _input_shape(meta, shape)
    check_divisible(full_shape[2:], int(getattr(model, "divisor", 1)), "--shape")
    example = torch.randn(full_shape, generator=torch.Generator().manual_seed(seed))
    agreement = None
    if fmt == "onnx":
        export_onnx(model, example, out_p, opset=opset, dynamic=dynamic)
        if check:
            agreement = check_onnx(out_p, model, example)
            if agreement < min_agreement:
                out_p.unlink()
                raise InputError(f"{out_p}: ONNX Runtime agrees with PyTorch on only {agreement:.4%} of voxels "
                                 f"(needed {min_agreement:.2%}); export removed")
    else:
        export_torchscript(model, example, out_p)
    doc = {
        "format": fmt,
        "file": out_p.name,
        "sha256": file_sha256(out_p),
        "opset": int(opset) if fmt == "onnx" else None,
        "dynamic_axes": bool(dynamic) if fmt == "onnx" else False,
        "input": {"name": INPUT_NAME, "shape": list(full_shape), "dtype": "float32",
                  "channels": ["ct_znorm", "lung_region"][: full_shape[1]]},
        "output": {"name": OUTPUT_NAME, "shape": [full_shape[0], len(meta.labels), *full_shape[2:]],
                   "meaning": "logits; softmax over axis 1, arg-max = label"},
        "onnxruntime_label_agreement": agreement,
        "source_model": {"path": str(src), "sha256": file_sha256(src)},
        "model_meta": meta.to_dict(),
        "rrcunet_version": __version__,
        "torch_version": torch.__version__,
    }
    atomic_write_text(sidecar, json.dumps(doc, indent=2) + "\n")
    return ExportResult(out_p, sidecar, full_shape, agreement)
