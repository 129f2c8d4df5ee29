"""Memory layout on CPU: contiguous against ``channels_last_3d`` for the pieces of one RRc level.

Times forward + backward (median of ``--repeats`` after a warm-up) of:

- a 3×3×3 ``Conv3d`` (no bias), ``C → C`` channels;
- the model's unit, Conv3d → GroupNorm → PReLU, with ``torch.nn.GroupNorm`` (PyTorch's kernels);
- the same unit with :class:`rrcunet.models.blocks.common.LayoutGroupNorm` (what the model uses);

on a ``(1, C, X, Y, Z)`` tensor, in float32 and under bf16 autocast, in both layouts. The default
size is the top level of the ``cpu_tumour`` network (4 channels at 80×80×48), where the layouts
differ most. The whole training step is measured by ``benchmarks/train_speed.py``.

Example::

    python benchmarks/layout_speed.py
    python benchmarks/layout_speed.py --channels 16 --shape 40 40 24
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from rrcunet.models.blocks.common import conv_norm_act


def _time(piece: nn.Module, x: torch.Tensor, amp: str, repeats: int) -> float:
    def once() -> float:
        xi = x.detach().requires_grad_()
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            y = piece(xi)
        y.float().sum().backward()
        return time.perf_counter() - t0

    once()
    return statistics.median(once() for _ in range(repeats))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 48))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.channels
    unit = conv_norm_act(c, c)  # the model's unit: Conv3d → LayoutGroupNorm → PReLU
    plain = copy.deepcopy(unit)  # the same unit with PyTorch's GroupNorm
    norm = unit.adn.N
    plain.adn.N = nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps)
    pieces = {
        "Conv3d 3×3×3": unit.conv,
        "Conv3d → nn.GroupNorm → PReLU": plain,
        "Conv3d → LayoutGroupNorm → PReLU": unit,
    }
    shape = "×".join(map(str, args.shape))
    print(f"## Forward + backward, (1, {c}, {shape}), {args.threads} threads, median of {args.repeats} (ms)\n")
    print("| piece | amp | contiguous | channels-last | ratio |")
    print("|---|---|---:|---:|---:|")
    x = torch.randn(1, c, *args.shape)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    for name, piece in pieces.items():
        for amp in ("none", "bf16"):
            t_cf = _time(piece.to(memory_format=torch.contiguous_format), x, amp, args.repeats)
            t_cl = _time(piece.to(memory_format=torch.channels_last_3d), x_cl, amp, args.repeats)
            print(f"| {name} | {amp} | {t_cf * 1e3:.1f} | {t_cl * 1e3:.1f} | {t_cf / t_cl:.2f} |", flush=True)


if __name__ == "__main__":
    main()
