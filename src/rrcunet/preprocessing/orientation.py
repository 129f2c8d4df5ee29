"""Canonical orientation by axis permutation and flips: exact, invertible, no interpolation.

Owns :class:`OrientationStep` and the functions that reorder a voxel grid so that its direction
matrix is as close as possible to a fixed canonical frame (by default the identity, i.e. LPS:
``i`` towards the patient's left, ``j`` towards posterior, ``k`` towards superior).

Only the *order* and *sense* of the array axes change; voxel values are never interpolated, so
applying the step and then its inverse gives back the input bit for bit. A scan acquired with an
oblique (tilted) direction keeps the oblique remainder in its new direction matrix, which is
recorded in :attr:`OrientationStep.output_geometry`; nothing is resampled to remove the tilt.

This is what ``SimpleITK.DICOMOrient`` / nibabel's ``as_closest_canonical`` do; we reimplement the
few lines here because we need the permutation and flips as plain data (to undo them on network
outputs of any channel count without a SimpleITK round trip) and to keep the choice of axes
deterministic for exactly 45° obliques (ties are broken by the lowest axis order).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from rrcunet.io.volume import Geometry

#: The canonical direction: the identity, i.e. array axes (i, j, k) along LPS (+x left, +y
#: posterior, +z superior), the frame of DICOM and ITK.
CANONICAL_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

_PERMUTATIONS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations(range(3)))  # type: ignore[assignment]


@dataclass(frozen=True)
class OrientationStep:
    """How an input grid was re-ordered into the canonical frame.

    Args:
        permutation: ``permutation[n]`` is the input axis that became output axis ``n``
            (the ``axes`` argument of ``numpy.transpose``).
        flips: ``flips[n]`` is True when output axis ``n`` was reversed (after the transpose).
        input_geometry: geometry of the grid before the step.
        output_geometry: geometry after the step (same voxels, re-ordered; the direction keeps any
            oblique remainder).
    """

    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    input_geometry: Geometry
    output_geometry: Geometry

    @property
    def is_identity(self) -> bool:
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Re-order the last three axes of ``array`` (``(..., X, Y, Z)``) into the canonical frame.

        Returns a view when possible (no copy); call ``np.ascontiguousarray`` if you need one.
        """
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.permutation))
        flip_axes = tuple(lead + n for n, f in enumerate(self.flips) if f)
        return np.flip(out, flip_axes) if flip_axes else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply` on the last three axes of ``array``: flip back, then un-transpose."""
        lead = array.ndim - 3
        flip_axes = tuple(lead + n for n, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = tuple(int(i) for i in np.argsort(self.permutation))
        return np.transpose(out, tuple(range(lead)) + tuple(lead + p for p in inverse))


def closest_axes(
    direction: tuple[float, ...] | np.ndarray, canonical: tuple[float, ...] = CANONICAL_DIRECTION
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Return the permutation and flips that bring ``direction`` closest to ``canonical``.

    The permutation maximises ``sum_n |<c_n, d_perm[n]>|`` over the 6 axis orders, where ``c_n``
    and ``d_i`` are the columns (axis unit vectors) of the canonical and input direction matrices;
    output axis ``n`` is then flipped when its input axis points against ``c_n``. Ties (exact 45°
    obliques) are broken deterministically by the first permutation in lexicographic order.

    Args:
        direction: 9 values, row-major 3×3, columns = axis unit vectors (SimpleITK layout).
        canonical: the target direction in the same layout; the identity (LPS) by default.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    c = np.asarray(canonical, dtype=np.float64).reshape(3, 3)
    dots = c.T @ d  # dots[n, i] = <c_n, d_i>
    best = max(_PERMUTATIONS, key=lambda p: (round(sum(abs(dots[n, p[n]]) for n in range(3)), 9), tuple(-x for x in p)))
    flips = tuple(bool(dots[n, best[n]] < 0) for n in range(3))
    return tuple(int(p) for p in best), flips  # type: ignore[return-value]


def oriented_geometry(geometry: Geometry, permutation: tuple[int, int, int],
                      flips: tuple[bool, bool, bool]) -> Geometry:
    """Geometry of ``geometry``'s grid after transposing by ``permutation`` and flipping ``flips``."""
    d = geometry.direction_matrix
    shape = tuple(geometry.shape[p] for p in permutation)
    spacing = tuple(geometry.spacing[p] for p in permutation)
    signs = np.array([-1.0 if f else 1.0 for f in flips])
    new_d = d[:, list(permutation)] * signs[None, :]
    # The new voxel (0, 0, 0) is the old voxel whose index is 0 on un-flipped axes and N-1 on
    # flipped ones.
    old_index = np.zeros(3)
    for n, (p, f) in enumerate(zip(permutation, flips)):
        if f:
            old_index[p] = geometry.shape[p] - 1
    origin = geometry.index_to_physical(old_index)
    return Geometry(shape, spacing, tuple(origin), tuple(new_d.reshape(-1)))  # type: ignore[arg-type]


def orientation_step(geometry: Geometry, canonical: tuple[float, ...] = CANONICAL_DIRECTION) -> OrientationStep:
    """Build the :class:`OrientationStep` that brings ``geometry`` closest to ``canonical``."""
    permutation, flips = closest_axes(geometry.direction, canonical)
    return OrientationStep(permutation, flips, geometry, oriented_geometry(geometry, permutation, flips))
