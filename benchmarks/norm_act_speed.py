"""The pieces behind issue 23's choices, timed in one run: GroupNorm → PReLU → + residual, and the
decoder's ×2 transposed convolution.

1. One 16-channel 256×256×48 bf16 tensor (the paper network's level 0), GroupNorm(8) → PReLU →
   + residual: eager PyTorch (channels-last and contiguous), ``torch.compile`` (inductor) of the
   same function in both layouts, and the fused kernel of :mod:`rrcunet.models.kernels` (forward,
   and its backward), also built with GCC's default vector width for the CPU (the flags before
   ``-mprefer-vector-width=512``), with whether both builds give bit-identical outputs; and the
   RRc block's join, ``cat(unit output, entry output)``, written by the kernel (its ``tail``) against
   the kernel followed by ``torch.cat``.
2. The transposed convolution (kernel 2, stride 2) from level 1 to level 0 of the training recipe
   at base 16 (32 → 32 channels, 56×56×32 → 112×112×64), forward + backward under bf16 autocast,
   channels-last: ``nn.ConvTranspose3d`` against the same map written as one matrix product and a
   depth-to-space copy (not used by the package; measured as the next candidate).

Median of 7 after a warm-up (``torch.compile`` rows: after compiling). The CPU model is printed;
compare rows within one run only.

    python benchmarks/norm_act_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

CL = torch.channels_last_3d


def median_ms(fn, n: int = 7) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[n // 2]


def norm_act_rows() -> list[tuple[str, float]]:
    from rrcunet.models import kernels

    torch.manual_seed(0)
    x = torch.randn(1, 16, 256, 256, 48).to(torch.bfloat16).contiguous(memory_format=CL)
    r = torch.randn_like(x)
    w, b, a = torch.ones(16, dtype=torch.bfloat16), torch.zeros(16, dtype=torch.bfloat16), torch.tensor([0.25])

    def unit(t, res):
        return F.prelu(F.group_norm(t, 8, w, b), a.to(t.dtype)) + res

    xc, rc = x.contiguous(), r.contiguous()
    compiled = torch.compile(unit)
    rows = []
    with torch.inference_mode():
        rows.append(("eager, channels-last", median_ms(lambda: unit(x, r))))
        rows.append(("eager, contiguous", median_ms(lambda: unit(xc, rc))))
        rows.append(("torch.compile, channels-last", median_ms(lambda: compiled(x, r))))
        rows.append(("torch.compile, contiguous", median_ms(lambda: compiled(xc, rc))))
        ext = kernels.extension()
        if ext is not None:
            wf, bf = w.float(), b.float()
            rows.append(("fused kernel, forward", median_ms(lambda: ext.forward(x, wf, bf, a, r, 8, 1e-5))))
            _, mean, rstd = ext.forward(x, wf, bf, a, None, 8, 1e-5)
            rows.append(("fused kernel, backward", median_ms(lambda: ext.backward(r, x, mean, rstd, wf, bf, a, 8))))
            e = torch.randn_like(x)  # the RRc block's entry output, joined after the last unit's output
            rows.append(("fused kernel + the RRc join: cat(unit, e) written by the kernel (tail), forward",
                         median_ms(lambda: ext.forward(x, wf, bf, a, None, 8, 1e-5, e))))
            rows.append(("fused kernel, then torch.cat(unit, e): the RRc join before, forward",
                         median_ms(lambda: torch.cat((ext.forward(x, wf, bf, a, None, 8, 1e-5)[0], e), 1))))
            old = default_width_build(kernels)
            same = all(torch.equal(p, q) for p, q in zip(ext.forward(x, wf, bf, a, r, 8, 1e-5),
                                                         old.forward(x, wf, bf, a, r, 8, 1e-5)))
            same &= all(torch.equal(p, q) for p, q in zip(ext.backward(r, x, mean, rstd, wf, bf, a, 8),
                                                          old.backward(r, x, mean, rstd, wf, bf, a, 8)))
            rows.append((f"fused kernel, GCC's default vector width, forward (bit-identical: {same})",
                         median_ms(lambda: old.forward(x, wf, bf, a, r, 8, 1e-5))))
            rows.append(("fused kernel, GCC's default vector width, backward",
                         median_ms(lambda: old.backward(r, x, mean, rstd, wf, bf, a, 8))))
    return rows


def default_width_build(kernels):
    """The kernel's source built without ``-mprefer-vector-width=512`` (cached like the package's build)."""
    flags = tuple(f for f in kernels.CFLAGS if not f.startswith("-mprefer-vector-width"))
    return kernels.build(kernels.build_name() + "_default_width", flags)


def upsample_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv_transpose3d(x, weight, bias, stride=2)`` with a 2×2×2 kernel, as one product and a copy."""
    n, c_in, d, h, w = x.shape
    c_out = weight.shape[1]
    cols = torch.addmm(bias.repeat(8), x.permute(0, 2, 3, 4, 1).reshape(-1, c_in),
                       weight.permute(0, 2, 3, 4, 1).reshape(c_in, 8 * c_out))
    out = cols.view(n, d, h, w, 2, 2, 2, c_out).permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(n, 2 * d, 2 * h, 2 * w, c_out)
    return out.permute(0, 4, 1, 2, 3)


def upsample_rows() -> list[tuple[str, float]]:
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose3d(32, 32, 2, stride=2).to(memory_format=CL)
    x = torch.randn(1, 32, 56, 56, 32).contiguous(memory_format=CL).requires_grad_()
    grad = torch.randn(1, 32, 112, 112, 64).to(torch.bfloat16).contiguous(memory_format=CL)

    def step(fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fn()
            y.backward(grad)
        return run

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        same = torch.equal(deconv(x), upsample_as_matmul(x, deconv.weight, deconv.bias))
    return [("ConvTranspose3d, forward + backward", median_ms(step(lambda: deconv(x)))),
            (f"matrix product + copy, forward + backward (equal outputs: {same})",
             median_ms(step(lambda: upsample_as_matmul(x, deconv.weight, deconv.bias))))]


def main() -> int:
    print(f"# CPU: {cpu_model()}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print("\n| GroupNorm(8) → PReLU → + residual, 1×16×256×256×48 bf16 | ms |\n|---|---:|")
    for name, ms in norm_act_rows():
        print(f"| {name} | {ms:.1f} |")
    print("\n| ×2 transposed convolution 32→32, 56×56×32 → 112×112×64, bf16 autocast, channels-last | ms |\n|---|---:|")
    for name, ms in upsample_rows():
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
