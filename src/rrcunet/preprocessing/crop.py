"""Cropping to the lung bounding box (§4.1 step 3, first half).

Owns :class:`CropStep` and :func:`lung_crop_step`. The box is the bounding box of the lung mask
grown by a margin in millimetres and clipped to the volume, so a lung that touches the edge of
the field of view simply gives a box that ends at the edge (no padding is invented). An empty
lung mask is either an error or, on request, the whole volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rrcunet.io.volume import Geometry


@dataclass(frozen=True)
class CropStep:
    """The index box ``[start, stop)`` kept from the (oriented) full grid.

    Args:
        start: first kept index per axis.
        stop: one past the last kept index per axis.
        input_geometry: the full grid the box was cut from.
        output_geometry: the geometry of the box.
        from_lung: True when the box came from the lung mask; False when it is the whole volume
            (empty lung mask with ``on_empty_lung="full"``).
        clipped: per axis, ``(low, high)`` True when the margin was cut short by the volume edge
            (the lung region may continue outside the scanned field of view there).
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    input_geometry: Geometry
    output_geometry: Geometry
    from_lung: bool
    clipped: tuple[tuple[bool, bool], tuple[bool, bool], tuple[bool, bool]]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]


def cropped_geometry(geometry: Geometry, start: tuple[int, int, int], stop: tuple[int, int, int]) -> Geometry:
    """Geometry of the index box ``[start, stop)`` of ``geometry``."""
    origin = geometry.index_to_physical(np.asarray(start, dtype=np.float64))
    shape = tuple(int(b - a) for a, b in zip(start, stop))
    return Geometry(shape, geometry.spacing, tuple(origin), geometry.direction)  # type: ignore[arg-type]


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """``(start, stop)`` of the non-zero voxels of a 3D mask, or None when it is empty."""
    start: list[int] = []
    stop: list[int] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other))
        if present.size == 0:
            return None
        start.append(int(present[0]))
        stop.append(int(present[-1]) + 1)
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def lung_crop_step(lung: np.ndarray, geometry: Geometry, margin_mm: tuple[float, float, float], *,
                   allow_full: bool) -> CropStep | None:
    """Crop box of ``lung`` (on ``geometry``) grown by ``margin_mm`` per axis.

    Returns None for an empty mask unless ``allow_full``, in which case the box is the whole grid.
    """
    box = bounding_box(lung)
    shape = geometry.shape
    if box is None:
        if not allow_full:
            return None
        start, stop = (0, 0, 0), shape
        clipped = ((False, False),) * 3
        return CropStep(start, tuple(stop), geometry, geometry, False, clipped)  # type: ignore[arg-type]
    lo, hi = box
    margin_vox = [int(math.ceil(m / s - 1e-9)) for m, s in zip(margin_mm, geometry.spacing)]
    start = tuple(max(0, a - m) for a, m in zip(lo, margin_vox))
    stop = tuple(min(n, b + m) for b, m, n in zip(hi, margin_vox, shape))
    clipped = tuple((a - m < 0, b + m > n) for a, b, m, n in zip(lo, hi, margin_vox, shape))
    return CropStep(start, stop, geometry, cropped_geometry(geometry, start, stop), True, clipped)  # type: ignore[arg-type]
