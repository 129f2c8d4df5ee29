"""Shared building pieces of every block: the Conv3d → GroupNorm → PReLU unit and option checks.

The paper builds all of its blocks (RRc, CGPD, residual, recurrent, plain) from the same
three-layer group "Convolutional 3D layer, Group Normalization (GN), PReLU" (§3.1, §4.5). We take
that group from MONAI (:class:`monai.networks.blocks.Convolution`) instead of writing our own, so
its state-dict keys are MONAI's: ``conv.weight``, ``adn.N.weight`` / ``adn.N.bias`` (GroupNorm),
``adn.A.weight`` (PReLU).

The convolution feeding a GroupNorm has no bias (the norm's shift makes it redundant); the
activation is PReLU with one learned slope per layer (``torch.nn.PReLU`` default).

The GroupNorm is :class:`LayoutGroupNorm`, a ``torch.nn.GroupNorm`` (same parameters, same keys)
that normalises a ``channels_last_3d`` input in the contiguous layout: PyTorch's channels-last CPU
GroupNorm kernel is several times slower than the contiguous one for the few channels of a
U-Net's top level, which made the channels-last network slower than the contiguous one even
though its convolutions are 3-4× faster there (``benchmarks/layout_speed.py`` times the pieces,
``benchmarks/train_speed.py`` the whole step).

The unit is :class:`ConvNormAct`, a MONAI ``Convolution`` whose forward sends GroupNorm → PReLU
(and an optional residual addition) to :func:`rrcunet.models.kernels.norm_act`: one fused
channels-last CPU kernel where it applies, the modules as written elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from rrcunet.errors import ConfigError
from rrcunet.models.kernels import conv, norm_act

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


class LayoutGroupNorm(nn.GroupNorm):
    """``torch.nn.GroupNorm`` that computes a ``channels_last_3d`` input in the contiguous layout.

    The output keeps the input's memory format, so the convolutions around it stay channels-last.
    The two layout copies cost far less than the channels-last kernel on CPU: forward + backward of
    the bf16 Conv3d → GroupNorm → PReLU unit on a ``(1, 4, 80, 80, 48)`` tensor, 2 cores, takes
    43 ms channels-last with ``nn.GroupNorm``, 12 ms with this class and 23 ms contiguous
    (``python benchmarks/layout_speed.py``). Other inputs, and every input on a GPU (where this
    was not measured), go straight to ``nn.GroupNorm``. The result is the same function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() == 5 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last_3d)):
            y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return y.contiguous(memory_format=torch.channels_last_3d)
        return super().forward(x)


class ConvNormAct(Convolution):
    """MONAI's ``Convolution`` (same children and state-dict keys) with an optional residual input
    and an optional tensor to concatenate after its output.

    ``unit(x, residual=r, tail=t)`` is ``cat(unit(x) + r, t)`` along channels; without dropout, the
    GroupNorm → PReLU (→ + r → cat t) tail goes through :func:`rrcunet.models.kernels.norm_act`,
    which fuses it for channels-last CPU tensors. With dropout (the CGPD unit) it runs as MONAI
    wrote it.
    """

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                tail: torch.Tensor | None = None) -> torch.Tensor:
        adn = self.adn
        if set(adn._modules) != {"N", "A"}:
            y = super().forward(x)
            y = y if residual is None else y + residual
            return y if tail is None else torch.cat((y, tail), dim=1)
        return norm_act(adn.N, adn.A, conv(self.conv, x), residual, tail)


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
        a :class:`ConvNormAct`, i.e. a MONAI ``Convolution`` (an ``nn.Sequential`` with children
        ``conv`` and ``adn``).
    """
    unit = ConvNormAct(
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
    norm = unit.adn.N
    unit.adn.N = LayoutGroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
    return unit


#: Upper bounds of the architecture options, checked before anything is built, so that a model file or a
#: config cannot ask for a network that takes hours or exhausts memory (the paper: 5 levels, t=2, 32..512).
MAX_OPTION = {"levels": 8, "t": 16, "base_filters": 1024, "filters": 4096}


def check_positive_int(name: str, value: int, *, minimum: int = 1) -> int:
    """Return ``value`` as int or raise :class:`ConfigError` naming the option (and its bound, if any)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model option {name}={value!r} is invalid: expected an integer >= {minimum}")
    maximum = MAX_OPTION.get(name)
    if maximum is not None and value > maximum:
        raise ConfigError(f"model option {name}={value!r} is invalid: expected an integer <= {maximum} (the bound "
                          "that keeps a network's size and run time reasonable)")
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
