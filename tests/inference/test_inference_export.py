"""ONNX and TorchScript export of a tiny model: ONNX Runtime agrees with PyTorch, TorchScript
reproduces it, both get a sidecar JSON, outputs are not silently replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrcunet.errors import ConfigError, InputError
from rrcunet.inference.export import check_onnx, export_model
from rrcunet.models.model_file import load_model


def test_onnx_export_agrees_with_pytorch(tiny_model, tmp_path):
    out = tmp_path / "m.onnx"
    result = export_model("onnx", out, model_path=tiny_model, dynamic=True)
    assert result.agreement is not None and result.agreement >= 0.999
    assert result.shape == (1, 2, 32, 32, 16)
    side = json.loads(result.sidecar.read_text())
    assert side["opset"] >= 17 and side["input"]["shape"] == [1, 2, 32, 32, 16]
    assert side["model_meta"]["model_name"] == "rrcunet" and side["model_meta"]["preprocess"]["target_shape"] == [32, 32, 16]
    # Dynamic axes: another (divisible) size and batch 2, checked independently of export_model.
    model, _ = load_model(tiny_model)
    x = torch.randn(2, 2, 48, 32, 24, generator=torch.Generator().manual_seed(3))
    assert check_onnx(out, model, x) >= 0.999
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load is deprecated in torch 2.13
def test_torchscript_output_equals_the_model(tiny_model, tmp_path):
    result = export_model("torchscript", tmp_path / "m.pt", model_path=tiny_model)
    traced = torch.jit.load(str(result.path))
    model, _ = load_model(tiny_model)
    x = torch.randn(1, 2, 32, 32, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)
    assert json.loads(result.sidecar.read_text())["format"] == "torchscript"


def test_export_errors(tiny_model, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        export_model("onnx", out, model_path=tiny_model)
    assert out.read_bytes() == b"keep"
    with pytest.raises(ConfigError, match="divisible by 4"):
        export_model("onnx", tmp_path / "x.onnx", model_path=tiny_model, shape=(30, 32, 16))
    with pytest.raises(ConfigError, match="opset must be >= 17"):
        export_model("onnx", tmp_path / "y.onnx", model_path=tiny_model, opset=13)
    with pytest.raises(ConfigError, match="export format must be one of"):
        export_model("tflite", tmp_path / "z", model_path=tiny_model)
