"""Resizing voxel grids with PyTorch, and the geometry of a resized grid.

Owns the one convention used for every resize in the package: *voxel centres*, i.e.
``torch.nn.functional.interpolate(..., align_corners=False)`` for linear modes and
``mode="nearest-exact"`` for labels. Output voxel ``j`` of an axis resized from ``N`` to ``M`` voxels
samples input position ``(j + 0.5) * N / M - 0.5``, so the resized grid covers exactly the same
physical box (same outer voxel edges) and :func:`resized_geometry` gives its spacing and origin.

We call ``interpolate`` directly instead of ``monai.transforms.Resize`` because we need the same
call on (C, X, Y, Z) network outputs of any channel count in both directions, the channel argmax
without allocating an int64 copy, and no metadata tensor round trip; the maths is MONAI's own
(``Resize`` uses the same ``interpolate`` call and ``align_corners=False`` default).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rrcunet.io.volume import Geometry


def resized_geometry(geometry: Geometry, shape: tuple[int, int, int]) -> Geometry:
    """Geometry of ``geometry``'s physical box sampled on ``shape`` voxels (voxel-centre convention)."""
    scale = np.asarray(geometry.shape, dtype=np.float64) / np.asarray(shape, dtype=np.float64)
    spacing = np.asarray(geometry.spacing) * scale
    first_centre = 0.5 * scale - 0.5  # in input voxel indices
    origin = geometry.index_to_physical(first_centre)
    new_shape = tuple(int(s) for s in shape)
    return Geometry(new_shape, tuple(spacing), tuple(origin), geometry.direction)  # type: ignore[arg-type]


def shape_for_spacing(geometry: Geometry, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """Number of voxels per axis that sample ``geometry``'s box closest to ``spacing`` mm (≥ 1)."""
    extent = np.asarray(geometry.shape) * np.asarray(geometry.spacing)
    return tuple(max(1, int(round(e / s))) for e, s in zip(extent, spacing))  # type: ignore[return-value]


def resize(array: np.ndarray | torch.Tensor, shape: tuple[int, int, int], *, mode: str = "linear") -> torch.Tensor:
    """Resize the last three axes of a ``(C, X, Y, Z)`` array to ``shape``.

    Args:
        array: ``(C, X, Y, Z)`` numpy array or tensor. ``mode="linear"`` needs a floating dtype
            (it is computed in float32 and returned as float32); ``mode="nearest"`` keeps the dtype.
        shape: output ``(X', Y', Z')``.
        mode: ``"linear"`` (trilinear, voxel centres) or ``"nearest"`` (``nearest-exact``).

    Returns:
        A ``(C, X', Y', Z')`` CPU/GPU tensor on the input's device. When ``shape`` equals the input
        shape the input is returned unchanged (as a tensor).
    """
    t = torch.as_tensor(array)
    if t.ndim != 4:
        raise ValueError(f"resize expects a (C, X, Y, Z) array, not shape {tuple(t.shape)}")
    if tuple(t.shape[1:]) == tuple(shape):
        return t
    if mode == "linear":
        if not t.is_floating_point():
            t = t.float()
        out = F.interpolate(t[None].float(), size=tuple(shape), mode="trilinear", align_corners=False)
    elif mode == "nearest":
        dtype = t.dtype
        if dtype in (torch.bool, torch.int8, torch.int16, torch.int32, torch.int64):
            t = t.to(torch.uint8) if dtype == torch.bool else t.float()
        out = F.interpolate(t[None], size=tuple(shape), mode="nearest-exact")
        out = out.to(dtype)
    else:
        raise ValueError(f"resize mode must be 'linear' or 'nearest', not {mode!r}")
    return out[0]


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Arg-max over the first axis of ``(C, ...)`` scores as uint8 (first index wins ties).

    A running maximum over channels; ``torch.argmax(dim=0)`` is several times slower on CPU for
    large volumes and returns int64 (8 bytes a voxel).
    """
    if scores.shape[0] > 255:
        raise ValueError(f"channel_argmax supports at most 255 classes, not {scores.shape[0]}")
    best = scores[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    for c in range(1, scores.shape[0]):
        better = scores[c] > best
        index[better] = c
        torch.maximum(best, scores[c], out=best)
    return index
