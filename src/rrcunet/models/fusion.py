"""Inference-time fusion of a decoder level's ×2 upsampling with its block's 1×1×1 entry convolution.

A decoder level of RRc-UNet 3D computes ``block(cat(deconv(x), skip))``, and the RRc (and
recurrent) block starts with a 1×1×1 ``entry`` convolution. Both the transposed convolution
(kernel 2, stride 2) and the entry convolution are linear, so with the entry weights split into
the columns that see the upsampled channels (``W_up``) and those that see the skip (``W_skip``)::

    entry(cat(deconv(x), skip)) = deconv'(x) + conv1x1(skip; W_skip)
    deconv'.weight[i, e] = sum_u W_up[e, u] * deconv.weight[i, u]      (kernel 2, stride 2)
    deconv'.bias         = W_up @ deconv.bias + entry.bias

``deconv'`` produces the entry's ``C_e`` channels directly instead of the upsampling's ``C_up``
(``C_e = C_up / 4`` at every level of the paper's network), so neither the ``C_up``-channel
upsampled tensor nor the ``C_up + C_skip`` concatenation is ever built. At 256×256×48 with 32 base
filters those two are 0.8 GB and 1.2 GB at level 0 alone, and the transposed convolutions were the
most expensive CPU operator after the 3×3×3 convolutions. The result is the same function up to
floating-point rounding (tested against the unfused path).

The fused path runs only when autograd is off (``torch.no_grad`` / ``torch.inference_mode``, i.e.
prediction, validation and export); training always runs the network as written, so gradients and
the state-dict keys are untouched. The fused weights are recomputed at every call (a few
kilobytes of matrix products), so there is no cache to go stale when weights are loaded.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from rrcunet.models.switch import Switch


_SWITCH = Switch(True)
#: Whether the decoder takes the fused path when autograd is off (default True); ``set_enabled`` switches
#: it for the process, ``disabled()`` for a block (benchmarks measure the gain with it).
enabled, set_enabled, disabled = _SWITCH.enabled, _SWITCH.set_enabled, _SWITCH.disabled


def deconv_of(upsample: nn.Module) -> nn.ConvTranspose3d | None:
    deconv = getattr(upsample, "deconv", None)
    if (
        isinstance(deconv, nn.ConvTranspose3d)
        and len(upsample) == 1  # MONAI UpSample("deconv") is a Sequential holding only it
        and tuple(deconv.kernel_size) == (2, 2, 2)
        and tuple(deconv.stride) == (2, 2, 2)
        and tuple(deconv.padding) == (0, 0, 0)
        and tuple(deconv.output_padding) == (0, 0, 0)
        and tuple(deconv.dilation) == (1, 1, 1)
        and deconv.groups == 1
    ):
        return deconv
    return None


def can_fuse(upsample: nn.Module, block: nn.Module) -> bool:
    """Whether ``block`` (after ``upsample``) starts with a fusable 1×1×1 entry convolution."""
    entry = getattr(block, "entry", None)
    return (
        deconv_of(upsample) is not None
        and callable(getattr(block, "after_entry", None))
        and isinstance(entry, nn.Conv3d)
        and tuple(entry.kernel_size) == (1, 1, 1)
        and tuple(entry.stride) == (1, 1, 1)
        and entry.groups == 1
    )


def fused_entry(upsample: nn.Module, block: nn.Module, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``block.entry(cat(upsample(x), skip))`` without building either operand of the concatenation.

    Args:
        upsample: a MONAI ``UpSample(mode="deconv")`` with kernel 2 / stride 2 (see :func:`can_fuse`).
        block: a block with a 1×1×1 ``entry`` convolution and an ``after_entry`` method.
        x: the deeper level's output ``(B, C_in, X, Y, Z)``.
        skip: the encoder skip ``(B, C_skip, 2X, 2Y, 2Z)``.

    Returns:
        the entry convolution's output ``(B, C_e, 2X, 2Y, 2Z)``.
    """
    deconv = deconv_of(upsample)
    entry = block.entry
    c_up = deconv.out_channels
    c_in = deconv.in_channels
    c_e = entry.out_channels
    # Fold the weights in float32 even under autocast; the convolutions below autocast as usual.
    device_type = x.device.type
    amp = device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type)
    with torch.autocast(device_type=device_type, enabled=False) if amp else contextlib.nullcontext():
        w_entry = entry.weight.float().reshape(c_e, -1)
        w_up, w_skip = w_entry[:, :c_up], w_entry[:, c_up:]
        w_deconv = deconv.weight.float().transpose(0, 1).reshape(c_up, c_in * 8)
        weight = torch.matmul(w_up, w_deconv).reshape(c_e, c_in, 2, 2, 2).transpose(0, 1).contiguous()
        bias = entry.bias.float() if entry.bias is not None else torch.zeros(c_e, device=x.device)
        if deconv.bias is not None:
            bias = bias + torch.matmul(w_up, deconv.bias.float())
        w_skip = w_skip.reshape(c_e, -1, 1, 1, 1).contiguous()
    if not amp:
        weight, bias, w_skip = weight.to(x.dtype), bias.to(x.dtype), w_skip.to(skip.dtype)
    out = F.conv_transpose3d(x, weight, bias, stride=2)
    return out.add_(F.conv3d(skip, w_skip))  # in place: autograd is off on this path
