"""The "Residual block" ablation level of §4.5 (Fig. 10): two residual Conv3d → GN → PReLU units.

Each unit is ``y = PReLU(GN(Conv3d(x))) + shortcut(x)``, where the shortcut is the identity, or a
1×1×1 convolution when the channel count changes. That is MONAI's
:class:`monai.networks.blocks.ResidualUnit` with one sub-unit, which we use as is (keys
``units.0.conv.unit0.conv.weight``, ``units.0.residual.weight``). The network puts its dropout
after the second unit.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ResidualUnit
from torch import nn

from rrcunet.models.blocks.common import check_kernel_size, norm_groups_for


def _residual_unit(in_channels: int, out_channels: int, kernel_size: int, norm_groups: int) -> ResidualUnit:
    unit = ResidualUnit(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        subunits=1,
        adn_ordering="NA",
        act="prelu",
        norm=("group", {"num_groups": norm_groups_for(out_channels, norm_groups)}),
        bias=False,
    )
    return unit


class ResidualBlock(nn.Module):
    """Two residual Conv3d → GN → PReLU units.

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
            _residual_unit(in_channels, out_channels, kernel_size, norm_groups),
            _residual_unit(out_channels, out_channels, kernel_size, norm_groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)
