"""Intensity steps of §4.1: HU clipping and per-scan z-normalisation.

Owns :class:`IntensityStep` (the clip window and the mean/std that were used) and the functions
that compute and apply it. The statistics are taken over the **whole clipped scan** (every voxel
of the CT, before the lung crop), as the paper says "z-normalization was performed on each CT
scan"; they are recorded so the same mapping can be re-applied or reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Standard deviations below this (a constant image) are replaced by 1 so nothing divides by ~0.
MIN_STD: float = 1e-3


@dataclass(frozen=True)
class IntensityStep:
    """``(clip(hu, low, high) - mean) / std``, with mean/std of the whole clipped scan."""

    clip_low: float
    clip_high: float
    mean: float
    std: float

    def apply(self, hu: np.ndarray) -> np.ndarray:
        """Clip and z-normalise ``hu`` (any shape) into a new float32 array."""
        out = np.array(hu, dtype=np.float32, copy=True)
        np.clip(out, self.clip_low, self.clip_high, out=out)
        out -= np.float32(self.mean)
        out /= np.float32(self.std)
        return out


def clipped_mean_std(hu: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Mean and standard deviation of ``clip(hu, low, high)`` over all voxels, in float64.

    Computed in slabs of ~4 M voxels along the first (slowest, contiguous) axis, so a
    512×512×600 scan never needs a float64 copy; integer scans with integral bounds are clipped
    in their own dtype (exact, and 2× faster than promoting to float first).
    """
    count = hu.size
    if count == 0:
        raise ValueError("cannot normalise an empty array")
    lo: float | int = low
    hi: float | int = high
    if np.issubdtype(hu.dtype, np.integer) and float(low).is_integer() and float(high).is_integer():
        info = np.iinfo(hu.dtype)
        lo, hi = int(min(max(low, info.min), info.max)), int(min(max(high, info.min), info.max))
    total = 0.0
    total_sq = 0.0
    per_slab = max(1, 4_000_000 // max(1, hu.shape[1] * hu.shape[2]))
    for i in range(0, hu.shape[0], per_slab):
        x = np.clip(hu[i:i + per_slab], lo, hi).astype(np.float64).ravel()
        total += float(x.sum())
        total_sq += float(np.dot(x, x))
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return mean, float(np.sqrt(var))


def intensity_step(hu: np.ndarray, clip: tuple[float, float]) -> IntensityStep:
    """Measure the per-scan statistics of ``hu`` clipped to ``clip`` and return the step."""
    low, high = float(clip[0]), float(clip[1])
    mean, std = clipped_mean_std(hu, low, high)
    if std < MIN_STD:
        std = 1.0
    return IntensityStep(low, high, mean, std)
