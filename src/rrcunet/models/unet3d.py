"""RRc-UNet 3D and its ablation variants: one U-Net that wires blocks into encoder, decoder and head.

:class:`UNet3D` is the network of §3.1 / Fig. 1 / Table 1 with the level block chosen by name
(``block="rrc"`` is RRc-UNet 3D; ``"cgpd"``, ``"residual"``, ``"recurrent"``, ``"unet"`` are the
§4.5 ablations and the plain 3D U-Net). It only wires blocks from :mod:`rrcunet.models.blocks`:

* ``encoder.stages.{i}`` (``i = 0 .. levels-1``): [max-pool 2 when ``i > 0``] → block → dropout;
  level ``i`` outputs ``filters[i]`` channels at ``1/2**i`` of the input size. Level
  ``levels-1`` is the bottleneck.
* ``decoder.upsamples.{i}`` / ``decoder.stages.{i}`` (``i = levels-2 .. 0``, indexed by the level
  they produce): upsample the level ``i+1`` output by 2, concatenate the encoder skip of level
  ``i``, block → dropout, giving ``filters[i]`` channels.
* ``head``: 1×1×1 Conv3d to ``out_channels`` logits.

The levels are built in flat loops over ``nn.ModuleList`` (no recursion), so state-dict keys read
``encoder.stages.2.block.recurrent.0.unit.conv.weight`` and do not move when options change.
Options such as ``checkpointing`` or ``dropout`` add no parameters and never change keys;
``deep_supervision`` only adds the ``aux_heads.{k}`` of its auxiliary outputs.

Tensor layout is ``(B, C, X, Y, Z)``, i.e. Table 1's ``c × w × h × d``; the spatial size must be
divisible by ``2 ** (levels - 1)`` (16 for the paper's 5 levels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rrcunet.errors import ConfigError, InputError
from rrcunet.models.blocks import BLOCK_REGISTRY, make_block
from rrcunet.models.blocks.common import check_choice, check_kernel_size, check_positive_int, per_level
from rrcunet.models.blocks.rrc import JOINS
from rrcunet.models.blocks.upsample import UPSAMPLE_MODES, upsample2x
from rrcunet.models import fusion, kernels

UP_CHANNELS = ("keep", "halve")


class Stage(nn.Module):
    """One level of the encoder or decoder: ``block`` then ``dropout``.

    With ``checkpointing`` on (and autograd recording), the block's activations are not kept for
    the backward pass but recomputed (``torch.utils.checkpoint``, non-reentrant; the RNG state is
    restored so dropout inside a block replays identically). This trades about one extra block
    forward for most of the activation memory, which dominates 3D training.

    Args:
        block: the level block.
        dropout: dropout probability after the block (no layer when 0 or when the block has its
            own dropout, ``block.owns_dropout``).
    """

    def __init__(self, block: nn.Module, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = block
        owns = bool(getattr(block, "owns_dropout", False))
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 and not owns else nn.Identity()
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            x = checkpoint(self.block, x, use_reentrant=False)
        else:
            x = self.block(x)
        return self.dropout(x)


class Encoder(nn.Module):
    """Contracting path: ``stages[i]`` = [max-pool 2 if ``i > 0``] → block → dropout.

    Args:
        in_channels: network input channels.
        filters: output channels per level.
        block: block type name (see :data:`rrcunet.models.blocks.BLOCK_REGISTRY`).
        t: per-level RB applications.
        dropout: per-level dropout probability.
        block_options: other block options (``join``, ``kernel_size``, ...).

    Returns (forward):
        the list of every level's output, shallowest first (the skips; the last is the bottleneck).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        filters: Sequence[int],
        block: str,
        t: Sequence[int],
        dropout: Sequence[float],
        block_options: dict[str, object],
    ) -> None:
        super().__init__()
        self.out_channels = list(filters)
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        self.stages = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(filters):
            blk = make_block(block, channels, width, t=t[level], dropout=dropout[level], **block_options)
            self.stages.append(Stage(blk, dropout=dropout[level]))
            channels = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level, stage in enumerate(self.stages):
            if level:
                x = pool_in_own_dtype(self.pool, x)
            x = stage(x)
            skips.append(x)
        return skips


def pool_in_own_dtype(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)`` with CPU autocast off for a bf16/fp16 ``x``.

    CPU autocast runs ``max_pool3d`` in float32, so a bf16 activation (what the fused GroupNorm →
    PReLU kernel returns) was cast to float32 and pooled there, and the next convolution cast the
    result back: at the paper's size the cast of the 32-channel level-0 output alone took longer
    than the pooling. A maximum is exact in any dtype, so the values are the same; only the cast
    is gone (issue 23).
    """
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return pool(x)
    return pool(x)


class Decoder(nn.Module):
    """Expansive path, built from the encoder's output channels.

    ``upsamples[i]`` brings level ``i+1`` (``encoder_channels[i+1]`` channels) to level ``i``'s
    size with ``encoder_channels[i+1]`` channels (``up_channels="keep"``) or half as many
    (``"halve"``); ``stages[i]`` maps the concatenation with the level-``i`` skip to
    ``encoder_channels[i]`` channels.

    Args:
        encoder_channels: the encoder's output channels per level.
        block: block type name.
        up_channels: ``"keep"`` or ``"halve"`` (channels after upsampling).
        upsample: ``"transpose"`` or ``"interp"``.
        t: per-level RB applications.
        dropout: per-level dropout probability.
        block_options: other block options.
    """

    def __init__(
        self,
        *,
        encoder_channels: Sequence[int],
        block: str,
        up_channels: str,
        upsample: str,
        t: Sequence[int],
        dropout: Sequence[float],
        block_options: dict[str, object],
    ) -> None:
        super().__init__()
        self.upsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        for level in range(len(encoder_channels) - 1):
            deeper = encoder_channels[level + 1]
            up = deeper if up_channels == "keep" else deeper // 2
            self.upsamples.append(upsample2x(deeper, up, upsample))
            blk = make_block(
                block,
                up + encoder_channels[level],
                encoder_channels[level],
                t=t[level],
                dropout=dropout[level],
                **block_options,
            )
            self.stages.append(Stage(blk, dropout=dropout[level]))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode the encoder outputs ``skips`` (shallowest first). The list is consumed (emptied):
        each skip is dropped as soon as it is concatenated, so inference can free it early. With
        autograd off, levels whose block starts with a 1×1×1 entry convolution (RRc, recurrent) fold
        the upsampling into it (:mod:`rrcunet.models.fusion`): same function, less memory and time."""
        for _, x in self.levels(skips):
            pass
        return x

    def levels(self, skips: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        """Like :meth:`forward`, but yield ``(level, output)`` after every decoder level, deepest
        first (``levels-2`` ... 0); the last one yielded is :meth:`forward`'s result."""
        x = skips.pop()
        fuse = fusion.enabled() and not torch.is_grad_enabled()
        for level in reversed(range(len(self.stages))):
            upsample, stage = self.upsamples[level], self.stages[level]
            if fuse and fusion.can_fuse(upsample, stage.block):
                # inference: upsampling folded into the block's 1x1x1 entry (rrcunet.models.fusion)
                x = stage.dropout(stage.block.after_entry(fusion.fused_entry(upsample, stage.block, x, skips.pop())))
            else:
                x = kernels.cat_channels(kernels.upsample(upsample, x), skips.pop())
                x = stage(x)
            yield level, x


class UNet3D(nn.Module):
    """3D U-Net whose levels are one block type; the default is RRc-UNet 3D as in Table 1.

    Args:
        in_channels: input channels (2: CT and lung-region map).
        out_channels: output classes (3: background, lung, tumour); raw logits are returned.
        levels: number of resolution levels (paper: 5); input sizes must be divisible by
            ``2 ** (levels - 1)``.
        base_filters: filters at level 0 when ``filters`` is None; level ``i`` gets
            ``base_filters * 2**i`` (32-64-128-256-512 for the paper).
        filters: explicit output channels per level (length ``levels``), overriding
            ``base_filters``.
        block: level block type, a key of :data:`rrcunet.models.blocks.BLOCK_REGISTRY`:
            ``"rrc"``, ``"cgpd"``, ``"residual"``, ``"recurrent"`` or ``"unet"``.
        t: applications of each Recurrent Block's shared unit (``rrc`` and ``recurrent``
            blocks); an int is used at every level, a list gives one per level.
        join: how the RRc block joins the RB output with its entry convolution: ``"cat"``
            (paper text, default) or ``"add"`` (R2U-Net).
        up_channels: channels after decoder upsampling: ``"keep"`` (Table 1, default) or
            ``"halve"`` (§3.1 text).
        upsample: ``"transpose"`` (ConvTranspose3d k=2 s=2, default) or ``"interp"`` (1×1×1
            conv then trilinear ×2).
        kernel_size: kernel of the block convolutions.
        entry_kernel_size: kernel of the RRc / recurrent blocks' entry convolution (1, as R2U-Net).
        norm_groups: requested GroupNorm groups (``gcd(channels, norm_groups)`` are used).
        dropout: dropout probability after every block (float or one per level). The paper
            gives no value; 0.1 is our default.
        checkpointing: recompute each block in the backward pass instead of storing its
            activations (saves memory during training, costs ~one extra forward).
        deep_supervision: number of decoder levels below the top (1 .. ``levels - 2``) that get an
            auxiliary 1×1×1 head (``aux_heads.{k-1}`` for level k, not in the paper; nnU-Net's deep
            supervision). 0 (default) adds nothing. In training mode the network then returns the list
            ``[logits, logits at 1/2, logits at 1/4, ...]`` for
            :class:`~rrcunet.losses.DeepSupervision`; in eval mode only the full-size logits.

    Shapes:
        input ``(B, in_channels, X, Y, Z)`` → logits ``(B, out_channels, X, Y, Z)`` (a list in
        training mode with ``deep_supervision > 0``).

    Example::

        >>> net = UNet3D(levels=3, base_filters=4)
        >>> net(torch.zeros(1, 2, 16, 16, 8)).shape
        torch.Size([1, 3, 16, 16, 8])
    """

    def __init__(
        self,
        *,
        in_channels: int = 2,
        out_channels: int = 3,
        levels: int = 5,
        base_filters: int = 32,
        filters: Sequence[int] | None = None,
        block: str = "rrc",
        t: int | Sequence[int] = 2,
        join: str = "cat",
        up_channels: str = "keep",
        upsample: str = "transpose",
        kernel_size: int = 3,
        entry_kernel_size: int = 1,
        norm_groups: int = 8,
        dropout: float | Sequence[float] = 0.1,
        checkpointing: bool = False,
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("levels", levels, minimum=2)
        if block not in BLOCK_REGISTRY:
            raise ConfigError(f"unknown block type {block!r}: known block types are {', '.join(sorted(BLOCK_REGISTRY))}")
        check_choice("join", join, JOINS)
        check_choice("up_channels", up_channels, UP_CHANNELS)
        check_choice("upsample", upsample, UPSAMPLE_MODES)
        check_kernel_size("kernel_size", kernel_size)
        check_kernel_size("entry_kernel_size", entry_kernel_size)
        check_positive_int("norm_groups", norm_groups)
        if filters is None:
            check_positive_int("base_filters", base_filters)
            filters = [base_filters * 2**i for i in range(levels)]
        filters = [check_positive_int("filters", int(f)) for f in per_level("filters", list(filters), levels)]
        if up_channels == "halve" and any(f % 2 for f in filters[1:]):
            raise ConfigError(f"up_channels 'halve' needs even filters below level 0, got {filters}; use even filters "
                              "or model.up_channels=keep (up_channels='keep' in Python)")
        t_levels = [check_positive_int("t", v) for v in per_level("t", t, levels)]
        dropout_levels = [float(p) for p in per_level("dropout", dropout, levels)]
        for p in dropout_levels:
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"model option dropout={dropout!r} is invalid: expected probabilities in [0, 1)")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.levels = levels
        self.filters = filters
        self.block_type = block
        block_options: dict[str, object] = {
            "join": join,
            "kernel_size": kernel_size,
            "entry_kernel_size": entry_kernel_size,
            "norm_groups": norm_groups,
        }
        self.encoder = Encoder(
            in_channels=self._stem_channels(in_channels),
            filters=filters,
            block=block,
            t=t_levels,
            dropout=dropout_levels,
            block_options=block_options,
        )
        self.decoder = Decoder(
            encoder_channels=filters,
            block=block,
            up_channels=up_channels,
            upsample=upsample,
            t=t_levels,
            dropout=dropout_levels,
            block_options=block_options,
        )
        self.head = nn.Conv3d(self._head_channels(filters[0]), out_channels, kernel_size=1)
        self.checkpointing = checkpointing
        deep_supervision = int(deep_supervision)
        if not 0 <= deep_supervision <= levels - 2:
            raise ConfigError(f"model option deep_supervision={deep_supervision} is invalid: expected 0 .. {levels - 2} "
                              f"(decoder levels below the top of a {levels}-level network)")
        self.deep_supervision = deep_supervision
        if deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv3d(filters[k], out_channels, kernel_size=1)
                                           for k in range(1, deep_supervision + 1))

    # Hooks for subclasses that add input channels (CoordUNet3D); identity here.
    def _stem_channels(self, in_channels: int) -> int:
        return in_channels

    def _head_channels(self, channels: int) -> int:
        return channels

    @property
    def checkpointing(self) -> bool:
        """Whether every block is recomputed in the backward pass (activation checkpointing)."""
        return self._checkpointing

    @checkpointing.setter
    def checkpointing(self, value: bool) -> None:
        self._checkpointing = bool(value)
        for stage in [*self.encoder.stages, *self.decoder.stages]:
            stage.checkpointing = self._checkpointing

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (self.levels - 1)

    def padded_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest spatial shape >= ``spatial_shape`` that this network accepts."""
        k = self.divisor
        return tuple(int(math.ceil(s / k) * k) for s in spatial_shape)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is ``(B, in_channels, X, Y, Z)`` with sizes divisible by
        :attr:`divisor`; the message gives the padded shape to use. Skipped while tracing (export),
        where shapes are fixed by the example input anyway."""
        if torch.jit.is_tracing():
            return
        name = type(self).__name__
        if x.ndim != 5:
            raise InputError(
                f"{name} expects a 5-D tensor (batch, channels, x, y, z), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"{name} expects {self.in_channels} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        spatial = tuple(int(s) for s in x.shape[2:])
        if any(s % self.divisor for s in spatial):
            raise InputError(
                f"{name} with {self.levels} levels needs every spatial size divisible by {self.divisor} "
                f"(2**(levels-1)), got {spatial}; pad the input to {self.padded_shape(spatial)} "
                f"(e.g. monai.transforms.DivisiblePad(k={self.divisor})) and crop the output back"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        if self.deep_supervision and self.training:
            return self._forward_deep_supervision(self.encoder(x))
        return kernels.conv(self.head, self.decoder(self.encoder(x)))

    def _forward_deep_supervision(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Full-size logits first, then those of decoder levels 1 .. ``deep_supervision``."""
        aux: dict[int, torch.Tensor] = {}
        for level, x in self.decoder.levels(skips):
            if 1 <= level <= self.deep_supervision:
                aux[level] = self.aux_heads[level - 1](x)
        return [kernels.conv(self.head, x)] + [aux[k] for k in range(1, self.deep_supervision + 1)]


def forward_padded(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for any spatial size: ``x`` is zero-padded at the far end of each axis up to a
    multiple of the model's ``divisor`` (2**(levels-1); 1 for models without one) and the output is
    cropped back to ``x``'s size. A grid resampled to a target spacing has whatever size the scan
    gives; a fixed target shape or a sliding window is divisible already, and passes through unpadded.
    Zero is the mean of the z-normalised CT channel and "outside the lung" in the lung channel.
    """
    divisor = int(getattr(model, "divisor", 1))
    pads = [(-int(s)) % divisor for s in x.shape[2:]]
    if not any(pads):
        return model(x)
    padded = torch.nn.functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
    if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        padded = padded.contiguous(memory_format=torch.channels_last_3d)
    out = model(padded)
    return out[..., : x.shape[2], : x.shape[3], : x.shape[4]]
