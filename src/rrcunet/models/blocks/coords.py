"""Coordinate channels (CoordConv, Liu et al. 2018) for the Coordinate-UNet 3D lung model [31].

:class:`AddCoords` appends three channels holding each voxel's normalised x, y, z position in
[-1, 1] (first voxel -1, last voxel +1, along tensor axes 2, 3, 4), so the following convolution
can learn position-dependent filters (left/right lung, apex/base). MONAI has no CoordConv layer,
hence this small module.
"""

from __future__ import annotations

import torch
from torch import nn


class AddCoords(nn.Module):
    """Concatenate normalised x, y, z coordinate channels to a ``(B, C, X, Y, Z)`` tensor.

    Shapes:
        ``(B, C, X, Y, Z)`` → ``(B, C + 3, X, Y, Z)``; the new channels have the input's dtype and
        device. A size-1 axis gets the coordinate 0.

    Example::

        >>> AddCoords()(torch.zeros(1, 1, 3, 2, 2))[0, 1, :, 0, 0]
        tensor([-1.,  0.,  1.])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, *spatial = x.shape
        axes = [
            torch.linspace(-1.0, 1.0, n, device=x.device, dtype=x.dtype) if n > 1 else x.new_zeros(1)
            for n in spatial
        ]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, X, Y, Z)
        return torch.cat((x, grid.unsqueeze(0).expand(b, -1, -1, -1, -1)), dim=1)
