"""×2 upsampling for the decoder, from MONAI's :class:`~monai.networks.blocks.UpSample`.

* ``mode="transpose"``: ``ConvTranspose3d(kernel_size=2, stride=2)`` (key ``deconv.weight``).
* ``mode="interp"``: a 1×1×1 convolution, then trilinear ×2 interpolation (keys
  ``preconv.weight``). The convolution runs *before* the interpolation, at the low resolution:
  8× cheaper than after it, and the same linear map.

Both map ``(B, in_channels, X, Y, Z)`` to ``(B, out_channels, 2X, 2Y, 2Z)``.
"""

from __future__ import annotations

from monai.networks.blocks import UpSample
from torch import nn

UPSAMPLE_MODES = ("transpose", "interp")


def upsample2x(in_channels: int, out_channels: int, mode: str = "transpose") -> nn.Module:
    """The decoder's ×2 upsampling, ``mode`` one of :data:`UPSAMPLE_MODES`."""
    if mode == "transpose":
        return UpSample(3, in_channels, out_channels, scale_factor=2, mode="deconv")
    return UpSample(
        3,
        in_channels,
        out_channels,
        scale_factor=2,
        mode="nontrainable",
        pre_conv=nn.Conv3d(in_channels, out_channels, kernel_size=1),
        interp_mode="trilinear",
        align_corners=False,
    )
