"""benchmarks/model_speed.py's convolution time (``conv s``): the regular convolutions' oneDNN
events, and the decoder's transposed convolutions, whose oneDNN work is ``aten::_convolution``'s
own time under ``aten::conv_transpose3d``; nothing else."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("model_speed", REPO / "benchmarks" / "model_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _profiled(fn):
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.events()


def test_transposed_convolutions_count_and_other_ops_do_not():
    bench = _load_benchmark()
    torch.manual_seed(0)
    x = torch.randn(1, 8, 24, 24, 16)
    conv = torch.nn.Conv3d(8, 8, 3, padding=1)
    up = torch.nn.ConvTranspose3d(8, 4, 2, stride=2)
    with torch.inference_mode():
        only_up = _profiled(lambda: up(x))
        only_add = _profiled(lambda: x + x)
        both = _profiled(lambda: up(conv(x)))
    assert bench.conv_self_seconds(only_up) > 0  # not lost for lack of a oneDNN event of its own
    assert bench.conv_self_seconds(only_add) == 0
    in_conv_ops = sum(e.self_cpu_time_total for e in both if e.name in bench.CONV_OPS) / 1e6
    assert bench.conv_self_seconds(both) > in_conv_ops > 0
