"""Why the CPU training step stops short of issue 23's 2×: one Conv3d's forward against its
forward + backward, at the ``cpu_tumour`` recipe's level widths and sizes (base 8, 80×80×48).

Each row times a 3×3×3 convolution alone (bias, padding 1, batch 1, 2 threads by default), in
bf16 and float32, channels-last and contiguous: the forward under ``torch.no_grad`` and one
forward + backward (a gradient for the input and the weights, as in training). ``bwd / fwd`` is
(forward + backward − forward) / forward: about 2 when the backward is two convolutions' work
(input gradient and weight gradient), more when oneDNN's backward kernels are slower than its
forward. ``dX ms`` and ``dW ms``: the input gradient alone and the weight (and bias) gradient
alone (``aten::convolution_backward`` with one output asked for). A second table times the
training step's own replacements (:mod:`rrcunet.models.kernels`) against oneDNN's. Median of
``--repeats`` after a warm-up. The CPU model is printed; compare rows within
one run only.

    python benchmarks/conv_backward_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

#: (in channels, out channels, spatial size): the recipe's level 0 (entry from the 2 input channels,
#: the recurrent 8 → 8, the decoder's 16 → 8) and one deeper level each.
CASES = ((2, 8, (80, 80, 48)), (8, 8, (80, 80, 48)), (16, 8, (80, 80, 48)), (16, 16, (40, 40, 24)),
         (32, 32, (20, 20, 12)))


def time_conv(cin: int, cout: int, shape: tuple[int, int, int], dtype: torch.dtype, channels_last: bool,
              repeats: int) -> tuple[float, float, float, float]:
    """Median milliseconds of the forward, of forward + backward, of the input gradient alone and of
    the weight and bias gradients alone."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(cin, cout, 3, padding=1)
    x = torch.randn(1, cin, *shape)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    conv = conv.to(dtype)
    x = x.to(dtype).requires_grad_()
    grad = None

    def forward() -> None:
        with torch.no_grad():
            conv(x)

    def step() -> None:
        nonlocal grad
        y = conv(x)
        if grad is None:
            grad = torch.ones_like(y)
        y.backward(grad)
        x.grad = None
        conv.zero_grad(set_to_none=True)

    with torch.no_grad():
        dy = conv(x).detach()

    def gradient(mask: list[bool]):
        def run() -> None:
            with torch.no_grad():
                torch.ops.aten.convolution_backward(dy, x.detach(), conv.weight.detach(), [cout], [1, 1, 1], [1, 1, 1],
                                                    [1, 1, 1], False, [0, 0, 0], 1, mask)
        return run

    fwd, both, dx, dw = (median_ms(fn, repeats) for fn in (forward, step, gradient([True, False, False]),
                                                         gradient([False, True, True])))
    return fwd, both, dx, dw


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def training_rows(repeats: int, size: tuple[int, int, int] = (80, 80, 48)) -> list[tuple[str, float]]:
    """The training step's replacements (rrcunet.models.kernels, issue 23) against what they replace,
    at the recipe's level 0: the 4 → 4-channel 3×3×3 convolution's gradients (80×80×48, bf16,
    channels-last) and the 16 → 16 ×2 transposed convolution from 40×40×24, forward + backward under
    bf16 autocast."""
    from rrcunet.models import kernels
    from rrcunet.models.blocks.upsample import upsample2x

    cl = torch.channels_last_3d
    torch.manual_seed(0)
    x = torch.randn(1, 4, *size).to(torch.bfloat16).contiguous(memory_format=cl)
    dy = torch.randn(1, 4, *size).to(torch.bfloat16).contiguous(memory_format=cl)
    w = (0.1 * torch.randn(4, 4, 3, 3, 3)).to(torch.bfloat16)
    args = ([1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0], 1)
    rows = [
        ("4→4 dX: oneDNN's backward", median_ms(
            lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *args, [True, False, False]), repeats)),
        ("4→4 dX: forward convolution, kernel flipped (ours)", median_ms(
            lambda: torch.nn.functional.conv3d(dy, w.transpose(0, 1).flip(2, 3, 4), None, 1, 1), repeats)),
        ("4→4 dW: oneDNN's bf16 backward", median_ms(
            lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *args, [False, True, False]), repeats)),
        ("4→4 dW: oneDNN's float32 backward on float32 copies (before)", median_ms(
            lambda: torch.ops.aten.convolution_backward(dy.float(), x.float(), w.float(), None, *args,
                                                        [False, True, False]), repeats)),
    ]
    ext = kernels.extension()
    if ext is not None:
        rows.append(("4→4 dW: the kernel's narrow_weight_grad (ours)",
                     median_ms(lambda: ext.narrow_weight_grad(dy, x, [3, 3, 3], [1, 1, 1]), repeats)))
    up = upsample2x(16, 16).to(memory_format=cl)  # the decoder's module (MONAI UpSample("deconv"))
    xu = torch.randn(1, 16, *(s // 2 for s in size)).contiguous(memory_format=cl).requires_grad_()
    gu = torch.randn(1, 16, *(2 * (s // 2) for s in size)).to(torch.bfloat16).contiguous(memory_format=cl)
    real_amx = kernels._cpu_has_amx

    def upsampling(fn):
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fn()
            y.backward(gu)
        return run

    rows.append(("16→16 ×2 transposed convolution, fwd + bwd: ConvTranspose3d",
                 median_ms(upsampling(lambda: up(xu)), repeats)))
    kernels._cpu_has_amx = lambda: True  # the product form is what kernels.upsample runs on AMX CPUs
    try:
        rows.append(("16→16 ×2 transposed convolution, fwd + bwd: matrix product + copy (ours)",
                     median_ms(upsampling(lambda: kernels.upsample(up, xu)), repeats)))
    finally:
        kernels._cpu_has_amx = real_amx
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# CPU: {cpu_model()}; {args.threads} thread(s); torch {torch.__version__}; median of {args.repeats}")
    print("| conv | size | dtype | layout | fwd ms | fwd+bwd ms | bwd / fwd | dX ms | dW ms |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for cin, cout, shape in CASES:
        for dtype in (torch.bfloat16, torch.float32):
            for channels_last in (True, False):
                fwd, both, dx, dw = time_conv(cin, cout, shape, dtype, channels_last, args.repeats)
                print(f"| {cin}→{cout} | {'×'.join(map(str, shape))} | {str(dtype).removeprefix('torch.')} | "
                      f"{'channels-last' if channels_last else 'contiguous'} | {fwd:.2f} | {both:.2f} | "
                      f"{(both - fwd) / fwd:.1f} | {dx:.2f} | {dw:.2f} |", flush=True)
    print("\n| training step piece (level 0 of the recipe) | ms |\n|---|---:|")
    for name, ms in training_rows(args.repeats):
        print(f"| {name} | {ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
