"""Shared building pieces of every block: the Conv3d → GroupNorm → PReLU unit and option checks.

The paper builds all of its blocks (RRc, CGPD, residual, recurrent, plain) from the same
three-layer group "Convolutional 3D layer, Group Normalization (GN), PReLU" (§3.1, §4.5). We take
that group from MONAI (:class:`monai.networks.blocks.Convolution`) instead of writing our own, so
its state-dict keys are MONAI's: ``conv.weight``, ``adn.N.weight`` / ``adn.N.bias`` (GroupNorm),
``adn.A.weight`` (PReLU).

The convolution feeding a GroupNorm has no bias (the norm's shift makes it redundant); the
activation is PReLU with one learned slope per layer (``torch.nn.PReLU`` default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from monai.networks.blocks import Convolution

from rrcunet.errors import ConfigError

T = TypeVar("T")


def norm_groups_for(channels: int, norm_groups: int) -> int:
    """Number of GroupNorm groups actually used for ``channels`` channels.

    GroupNorm needs ``channels % groups == 0``; we use ``gcd(channels, norm_groups)``, which for
    the power-of-two widths of a U-Net is ``min(channels, norm_groups)``. With ``norm_groups=8``
    a 16-channel layer gets 8 groups of 2 channels, a 2-channel layer (tiny test nets) 2 groups.

    Args:
        channels: number of channels to normalise.
        norm_groups: the requested (maximum) number of groups, >= 1.
    """
    return math.gcd(int(channels), int(norm_groups))


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    norm_groups: int = 8,
    dropout: float = 0.0,
) -> Convolution:
    """Conv3d (``same`` padding, no bias) → GroupNorm → PReLU [→ Dropout when ``dropout > 0``].

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel size; padding keeps the spatial size.
        norm_groups: requested GroupNorm groups, see :func:`norm_groups_for`.
        dropout: if > 0, an ``nn.Dropout`` after the activation (the CGPD unit of §4.5).

    Returns:
        a MONAI ``Convolution`` (an ``nn.Sequential`` with children ``conv`` and ``adn``).
    """
    return Convolution(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        adn_ordering="NAD" if dropout > 0 else "NA",
        act="prelu",
        norm=("group", {"num_groups": norm_groups_for(out_channels, norm_groups)}),
        dropout=dropout if dropout > 0 else None,
        bias=False,
    )


def check_positive_int(name: str, value: int, *, minimum: int = 1) -> int:
    """Return ``value`` as int or raise :class:`ConfigError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model option {name}={value!r} is invalid: expected an integer >= {minimum}")
    return value


def check_kernel_size(name: str, value: int) -> int:
    """Return an odd positive kernel size or raise :class:`ConfigError`."""
    check_positive_int(name, value)
    if value % 2 == 0:
        raise ConfigError(f"model option {name}={value} is invalid: expected an odd kernel size (1, 3, 5, ...)")
    return value


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"model option {name}={value!r} is invalid: expected one of {', '.join(map(repr, choices))}")
    return value


def per_level(name: str, value: T | Sequence[T], levels: int) -> list[T]:
    """Expand a per-level option: a scalar means "the same at every level", a sequence is per level.

    Raises:
        ConfigError: a sequence whose length is not ``levels``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ConfigError(
                f"model option {name}={list(value)!r} has {len(value)} entries: expected one per level "
                f"({levels}), or a single value for every level"
            )
        return list(value)
    return [value] * levels  # type: ignore[list-item]
