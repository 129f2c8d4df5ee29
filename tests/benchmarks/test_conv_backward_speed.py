"""benchmarks/conv_backward_speed.py runs a convolution's forward and forward + backward (tiny size)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_one_row_times_the_forward_and_the_training_pass(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("conv_backward_speed", REPO / "benchmarks" / "conv_backward_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    times = module.time_conv(2, 4, (8, 8, 6), torch.float32, True, repeats=2)
    assert len(times) == 4 and all(t > 0 for t in times)


def test_the_training_rows_time_ours_beside_onednns(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("conv_backward_speed", REPO / "benchmarks" / "conv_backward_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.training_rows(1, size=(8, 8, 6))
    names = [name for name, _ in rows]
    assert len(rows) >= 6 and all(ms > 0 for _, ms in rows)
    assert any("ours" in n and "dX" in n for n in names) and any("transposed" in n and "ours" in n for n in names)
