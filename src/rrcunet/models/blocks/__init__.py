"""Blocks: what one U-Net level computes, kept apart from the networks that wire them.

:data:`BLOCK_REGISTRY` names every level block the paper uses; :func:`make_block` builds one
from the network-wide options, passing each block only the options it uses:

========== ========================= ===============================================
name       class                     paper
========== ========================= ===============================================
rrc        :class:`RRcBlock`         §3.1, Fig. 2: the RRc block
cgpd       :class:`CGPDBlock`        §4.5, Fig. 9: 2 × (Conv-GN-PReLU-Dropout)
residual   :class:`ResidualBlock`    §4.5, Fig. 10: 2 residual Conv-GN-PReLU units
recurrent  :class:`RecurrentBlock`   §4.5: 2 recurrent blocks (t=2), no residual join
unet       :class:`DoubleConvBlock`  plain 3D U-Net level: 2 × Conv-GN-PReLU
========== ========================= ===============================================

A block class sets ``owns_dropout = True`` when dropout is inside it (CGPD); the network then adds
no dropout of its own after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from rrcunet.errors import ConfigError
from rrcunet.models.blocks.common import conv_norm_act, norm_groups_for
from rrcunet.models.blocks.coords import AddCoords
from rrcunet.models.blocks.plain import CGPDBlock, DoubleConvBlock
from rrcunet.models.blocks.recurrent import RecurrentBlock, RecurrentUnit
from rrcunet.models.blocks.residual import ResidualBlock
from rrcunet.models.blocks.rrc import RRcBlock
from rrcunet.models.blocks.upsample import UPSAMPLE_MODES, upsample2x


@dataclass(frozen=True)
class BlockSpec:
    """A registered block type: its class and the network options it takes."""

    cls: type[nn.Module]
    options: tuple[str, ...]
    summary: str


BLOCK_REGISTRY: dict[str, BlockSpec] = {
    "rrc": BlockSpec(
        RRcBlock,
        ("t", "join", "kernel_size", "entry_kernel_size", "norm_groups"),
        "Residual Recurrent block: conv -> RB -> RB, joined with the conv output (paper §3.1)",
    ),
    "cgpd": BlockSpec(
        CGPDBlock,
        ("kernel_size", "norm_groups", "dropout"),
        "2 x (Conv-GN-PReLU-Dropout), channels doubled at the second (paper §4.5)",
    ),
    "residual": BlockSpec(
        ResidualBlock,
        ("kernel_size", "norm_groups"),
        "2 residual Conv-GN-PReLU units (paper §4.5)",
    ),
    "recurrent": BlockSpec(
        RecurrentBlock,
        ("t", "kernel_size", "entry_kernel_size", "norm_groups"),
        "conv -> RB -> RB without the residual join (paper §4.5)",
    ),
    "unet": BlockSpec(
        DoubleConvBlock,
        ("kernel_size", "norm_groups"),
        "2 x Conv-GN-PReLU (plain 3D U-Net level)",
    ),
}


def make_block(name: str, in_channels: int, out_channels: int, **options: object) -> nn.Module:
    """Build the level block ``name`` with the subset of ``options`` that it takes.

    Args:
        name: a key of :data:`BLOCK_REGISTRY`.
        in_channels: input channels.
        out_channels: output channels.
        options: network-wide block options (``t``, ``join``, ``kernel_size``,
            ``entry_kernel_size``, ``norm_groups``, ``dropout``); the ones this block does not use
            are ignored.

    Raises:
        ConfigError: unknown block name (the message lists the known ones).
    """
    if name not in BLOCK_REGISTRY:
        raise ConfigError(f"unknown block type {name!r}: known block types are {', '.join(sorted(BLOCK_REGISTRY))}")
    spec = BLOCK_REGISTRY[name]
    kwargs = {k: v for k, v in options.items() if k in spec.options}
    return spec.cls(in_channels, out_channels, **kwargs)


__all__ = [
    "BLOCK_REGISTRY",
    "AddCoords",
    "BlockSpec",
    "CGPDBlock",
    "DoubleConvBlock",
    "RRcBlock",
    "UPSAMPLE_MODES",
    "RecurrentBlock",
    "RecurrentUnit",
    "ResidualBlock",
    "conv_norm_act",
    "make_block",
    "norm_groups_for",
    "upsample2x",
]
