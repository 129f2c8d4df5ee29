"""The Residual Recurrent (RRc) block, the paper's contribution (§3.1, Fig. 2).

"The input traverses a 3D Convolutional layer. Then, the convoluted features will be fed to the
RBs. Finally, it is concatenated to the output of RBs for providing the outcome of the RRc block."::

    e = entry(x)                     # plain Conv3d, in_channels -> c
    r = RB_2(RB_1(e))                # two Recurrent Blocks, c -> c (see recurrent.py for t)
    out = cat([r, e])   (join="cat", the paper's text: c = out_channels / 2)
    out = r + e         (join="add", R2U-Net's residual sum: c = out_channels)

With ``join="cat"`` the concatenation is what "doubles the number of channels at the end of the
block" (§3.1, point 4). Both readings give ``out_channels`` channels, so they are drop-in
alternatives; docs/architecture.md explains the default.

The entry convolution has no normalisation or activation, as in R2U-Net's RRCNN block, whose 1×1
entry convolution is the default here (``entry_kernel_size=1``); the paper only says "a 3D
Convolutional layer", so a 3×3×3 entry is one option away.
"""

from __future__ import annotations

import torch
from torch import nn

from rrcunet.errors import ConfigError
from rrcunet.models.blocks.common import check_choice, check_kernel_size
from rrcunet.models.blocks.recurrent import RecurrentUnit
from rrcunet.models.kernels import conv

JOINS = ("cat", "add")


class RRcBlock(nn.Module):
    """Residual Recurrent block: entry Conv3d → RB → RB, joined with the entry output.

    Args:
        in_channels: input channels.
        out_channels: output channels (must be even when ``join="cat"``).
        t: applications of each RB's shared Conv-GN-PReLU unit (paper: 2).
        join: ``"cat"`` (concatenate RB output and entry output, the paper's text) or ``"add"``
            (sum them, R2U-Net).
        kernel_size: RB convolution kernel size.
        entry_kernel_size: kernel size of the entry convolution.
        norm_groups: requested GroupNorm groups.

    Shapes:
        input ``(B, in_channels, X, Y, Z)`` → output ``(B, out_channels, X, Y, Z)``.

    Example::

        >>> block = RRcBlock(2, 32, t=2, join="cat")
        >>> block(torch.zeros(1, 2, 8, 8, 8)).shape
        torch.Size([1, 32, 8, 8, 8])
        >>> block.entry.out_channels   # the concatenation doubles 16 -> 32
        16
    """

    owns_dropout = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        t: int = 2,
        join: str = "cat",
        kernel_size: int = 3,
        entry_kernel_size: int = 1,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.join = check_choice("join", join, JOINS)
        check_kernel_size("entry_kernel_size", entry_kernel_size)
        if join == "cat" and out_channels % 2:
            raise ConfigError(
                f"RRc block with join 'cat' needs an even number of output channels, got {out_channels}; "
                "use even filters or model.join=add (join='add' in Python)"
            )
        inner = out_channels // 2 if join == "cat" else out_channels
        self.entry = nn.Conv3d(in_channels, inner, entry_kernel_size, padding=entry_kernel_size // 2)
        self.recurrent = nn.Sequential(
            RecurrentUnit(inner, t=t, kernel_size=kernel_size, norm_groups=norm_groups),
            RecurrentUnit(inner, t=t, kernel_size=kernel_size, norm_groups=norm_groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_entry(conv(self.entry, x))  # kernels.conv: the training backward of issue 23

    def after_entry(self, e: torch.Tensor) -> torch.Tensor:
        """The block from the entry convolution's output on (the decoder's fused inference path
        computes ``e`` itself; see :mod:`rrcunet.models.fusion`)."""
        if self.join == "cat":
            # cat([r, e]): the last RB writes e beside its output (one pass on CPU, no torch.cat)
            *head, last = self.recurrent
            r = e
            for rb in head:
                r = rb(r)
            return last(r, tail=e)
        return self.recurrent(e) + e

    def extra_repr(self) -> str:
        return f"join={self.join!r}"
