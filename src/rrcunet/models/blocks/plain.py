"""Plain convolution levels: the 3D U-Net baseline and the CGPD ablation block of §4.5.

* :class:`DoubleConvBlock` (model ``"unet"``): two Conv3d → GN → PReLU units, both with
  ``out_channels`` (Ronneberger's U-Net level with GN/PReLU in place of ReLU).
* :class:`CGPDBlock` (model ``"cgpd"``): two "Convolution, GN, PReLU, Dropout" units (Fig. 9).
  "The number of input channels is doubled at the second block before applying a max pooling
  layer", i.e. 3D U-Net (Çiçek et al. 2016) style: when a level widens the features
  (``in_channels < out_channels``, the encoder) the first unit gives ``out_channels // 2`` and the
  second doubles it; when it narrows them (the decoder) both units give ``out_channels``.
  The dropout is part of each unit, so the network adds no extra dropout after this block.
"""

from __future__ import annotations

import torch
from torch import nn

from rrcunet.models.blocks.common import check_kernel_size, conv_norm_act


class DoubleConvBlock(nn.Module):
    """Two Conv3d → GroupNorm → PReLU units (the plain 3D U-Net level).

    Args:
        in_channels: input channels.
        out_channels: output channels of both units.
        kernel_size: odd cubic kernel size.
        norm_groups: requested GroupNorm groups.

    Shapes:
        ``(B, in_channels, X, Y, Z)`` → ``(B, out_channels, X, Y, Z)``.
    """

    owns_dropout = False

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, norm_groups: int = 8) -> None:
        super().__init__()
        check_kernel_size("kernel_size", kernel_size)
        self.units = nn.Sequential(
            conv_norm_act(in_channels, out_channels, kernel_size=kernel_size, norm_groups=norm_groups),
            conv_norm_act(out_channels, out_channels, kernel_size=kernel_size, norm_groups=norm_groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


class CGPDBlock(nn.Module):
    """Two CGPD units (Conv3d → GroupNorm → PReLU → Dropout), channels doubled at the second.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel size.
        norm_groups: requested GroupNorm groups.
        dropout: dropout probability inside each unit.

    Shapes:
        ``(B, in_channels, X, Y, Z)`` → ``(B, out_channels, X, Y, Z)``; the first unit has
        ``out_channels // 2`` channels when ``in_channels < out_channels``, else ``out_channels``.
    """

    owns_dropout = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        norm_groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_kernel_size("kernel_size", kernel_size)
        mid = out_channels // 2 if in_channels < out_channels and out_channels >= 2 else out_channels
        self.units = nn.Sequential(
            conv_norm_act(in_channels, mid, kernel_size=kernel_size, norm_groups=norm_groups, dropout=dropout),
            conv_norm_act(mid, out_channels, kernel_size=kernel_size, norm_groups=norm_groups, dropout=dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)
