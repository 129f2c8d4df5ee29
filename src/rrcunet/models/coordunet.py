"""Coordinate-UNet 3D: the lung-parenchyma model that makes the second input channel (paper ref [31]).

Le & Saut (2023) describe a U-Net "using the Coordinate Convolutional layer as the final layer"
and only sketch the levels; the paper we implement uses it as a lung extractor (§4.1). We keep
the same U-Net wiring and block machinery as :class:`~rrcunet.models.unet3d.UNet3D` and add
CoordConv (Liu et al. 2018) coordinate channels, normalised x, y, z in [-1, 1]:

* ``"input"`` in ``coords_at``: concatenated to the CT before the first convolution;
* ``"head"`` in ``coords_at``: concatenated to the last decoder features before the 1×1×1 head,
  which makes the head a CoordConv layer, as in [31]'s abstract.

Defaults (plain Conv-GN-PReLU blocks, 4 levels, 16 base filters) are ours: [31] does not give
them in a form we could check, and lung parenchyma is a large, high-contrast structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rrcunet.errors import ConfigError
from rrcunet.models.blocks.coords import AddCoords
from rrcunet.models.unet3d import UNet3D

COORD_PLACES = ("input", "head")


class CoordUNet3D(UNet3D):
    """U-Net with CoordConv coordinate channels at the input and/or the head.

    Args:
        in_channels: image channels (1: CT); the 3 coordinate channels are added internally.
        out_channels: classes (2: background, lung).
        levels: resolution levels.
        base_filters: filters at level 0.
        block: level block type (default ``"unet"``: two Conv-GN-PReLU units).
        coords_at: where coordinate channels are concatenated: any of ``"input"``, ``"head"``.
        kwargs: any other :class:`UNet3D` option (``filters``, ``dropout``, ``checkpointing``, ...).

    Shapes:
        input ``(B, in_channels, X, Y, Z)`` → logits ``(B, out_channels, X, Y, Z)``.

    Example::

        >>> net = CoordUNet3D(levels=3, base_filters=4)
        >>> net(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 2, 16, 16, 8])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 2,
        levels: int = 4,
        base_filters: int = 16,
        block: str = "unet",
        coords_at: Sequence[str] = COORD_PLACES,
        dropout: float | Sequence[float] = 0.0,
        **kwargs: object,
    ) -> None:
        places = (coords_at,) if isinstance(coords_at, str) else tuple(coords_at)
        unknown = [p for p in places if p not in COORD_PLACES]
        if unknown:
            raise ConfigError(
                f"model option coords_at={list(places)!r} is invalid: expected a subset of {list(COORD_PLACES)}"
            )
        self.coords_at = tuple(p for p in COORD_PLACES if p in places)
        if kwargs.get("deep_supervision"):
            raise ConfigError("model option deep_supervision is not available for coordunet (its head is a CoordConv "
                              "layer); use it with rrcunet, cgpd, residual, recurrent or unet")
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            levels=levels,
            base_filters=base_filters,
            block=block,
            dropout=dropout,
            **kwargs,  # type: ignore[arg-type]
        )
        self.add_coords = AddCoords()

    def _stem_channels(self, in_channels: int) -> int:
        return in_channels + (3 if "input" in self.coords_at else 0)

    def _head_channels(self, channels: int) -> int:
        return channels + (3 if "head" in self.coords_at else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if "input" in self.coords_at:
            x = self.add_coords(x)
        features = self.decoder(self.encoder(x))
        if "head" in self.coords_at:
            features = self.add_coords(features)
        return self.head(features)
