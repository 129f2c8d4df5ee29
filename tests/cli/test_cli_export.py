"""``rrcunet export``: ONNX (checked against PyTorch) and TorchScript files plus their sidecars."""

from __future__ import annotations

import json

import pytest

from rrcunet.cli.main import main


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_onnx_and_torchscript(cli_model, tmp_path, capsys):
    assert main(["export", "--format", "onnx", "--model", str(cli_model), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "ONNX Runtime label agreement 100.0000%" in capsys.readouterr().out
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["onnxruntime_label_agreement"] >= 0.999 and side["format"] == "onnx"
    assert main(["export", "--format", "torchscript", "--model", str(cli_model), "-o", str(tmp_path / "m.pt"),
                 "--shape", "16", "16", "8"]) == 0
    assert json.loads((tmp_path / "m.pt.json").read_text())["input"]["shape"] == [1, 2, 16, 16, 8]
    assert main(["export", "--format", "onnx", "--model", str(cli_model), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "already exists" in capsys.readouterr().err
