"""The Recurrent Block (RB) of §3.1 and the "recurrent" ablation level of §4.5.

An RB applies one Conv3d → GroupNorm → PReLU unit ``f`` (one set of weights) ``t`` times, feeding
the block input back in at every step, as in R2U-Net [8] (Alom et al. 2019)::

    h_1 = f(x)
    h_k = f(x + h_{k-1})      for k = 2 .. t
    RB(x) = h_t

**What t means here.** The paper says an RB "is a repetition of t times" of the Conv-GN-PReLU
group, so ``t`` is the number of applications of ``f``: ``t=1`` is a plain Conv-GN-PReLU (no
recurrence), ``t=2`` (the paper's setting) applies the shared unit twice. The widely copied R2U-Net
reference code (``for i in range(t): if i == 0: x1 = conv(x); x1 = conv(x + x1)``) applies it
``t + 1`` times; to get that count here use ``t + 1``. Because the weights are shared, ``t`` never
changes the parameter count, only compute and activation memory (linear in ``t``).

We write these few lines ourselves: MONAI has no weight-shared recurrent convolution block.
"""

from __future__ import annotations

import torch
from torch import nn

from rrcunet.models.blocks.common import check_kernel_size, check_positive_int, conv_norm_act


class RecurrentUnit(nn.Module):
    """One Recurrent Block (RB): a weight-shared Conv3d → GN → PReLU applied ``t`` times.

    Args:
        channels: input and output channels (equal, because the input is added to the state).
        t: number of applications of the shared unit (>= 1); see the module docstring.
        kernel_size: odd cubic convolution kernel size.
        norm_groups: requested GroupNorm groups.

    Shapes:
        input ``(B, channels, X, Y, Z)`` → output ``(B, channels, X, Y, Z)``.

    Example::

        >>> rb = RecurrentUnit(8, t=2)
        >>> rb(torch.zeros(1, 8, 4, 4, 4)).shape
        torch.Size([1, 8, 4, 4, 4])
    """

    def __init__(self, channels: int, *, t: int = 2, kernel_size: int = 3, norm_groups: int = 8) -> None:
        super().__init__()
        self.t = check_positive_int("t", t)
        check_kernel_size("kernel_size", kernel_size)
        self.unit = conv_norm_act(channels, channels, kernel_size=kernel_size, norm_groups=norm_groups)

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None = None) -> torch.Tensor:
        """``RB(x)``, or ``cat(RB(x), tail)`` along channels when ``tail`` is given (the RRc join,
        written by the last application's fused kernel in the same pass)."""
        # s_k = x + h_k is what the next application reads; the unit adds x itself (fused on CPU)
        s = self.unit(x, residual=x if self.t > 1 else None, tail=tail if self.t == 1 else None)
        for k in range(2, self.t + 1):
            s = self.unit(s, residual=x if k < self.t else None, tail=tail if k == self.t else None)
        return s

    def extra_repr(self) -> str:
        return f"t={self.t}"


class RecurrentBlock(nn.Module):
    """The "Recurrent block" level of §4.5: entry convolution, then two RBs, no residual join.

    An RB adds its input to its state, so it cannot change the channel count; a plain Conv3d
    (``entry``, like the RRc block's) first maps ``in_channels`` to ``out_channels``. This is the
    RRc block without its residual join (R2U-Net's "RU-Net" ablation).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        t: applications per RB.
        kernel_size: RB convolution kernel size.
        entry_kernel_size: kernel size of the entry convolution (1 as in R2U-Net).
        norm_groups: requested GroupNorm groups.
    """

    owns_dropout = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        t: int = 2,
        kernel_size: int = 3,
        entry_kernel_size: int = 1,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        check_kernel_size("entry_kernel_size", entry_kernel_size)
        self.entry = nn.Conv3d(in_channels, out_channels, entry_kernel_size, padding=entry_kernel_size // 2)
        self.recurrent = nn.Sequential(
            RecurrentUnit(out_channels, t=t, kernel_size=kernel_size, norm_groups=norm_groups),
            RecurrentUnit(out_channels, t=t, kernel_size=kernel_size, norm_groups=norm_groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_entry(self.entry(x))

    def after_entry(self, e: torch.Tensor) -> torch.Tensor:
        """The block from the entry convolution's output on (see :mod:`rrcunet.models.fusion`)."""
        return self.recurrent(e)
