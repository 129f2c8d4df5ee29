"""The one in-memory contract for images and label maps: :class:`Volume`.

Every reader returns a ``Volume`` and every writer takes one, whatever the file format.

Conventions (those of ITK/SimpleITK and DICOM, so nothing is converted on the way in or out):

* ``array`` is indexed ``[i, j, k]`` = ``[x, y, z]`` (column, row, slice), the order of
  ``sitk.Image.GetSize()`` and of MONAI/nibabel tensors. Note that
  ``sitk.GetArrayFromImage`` returns ``[z, y, x]``; use :meth:`Volume.from_sitk` /
  :meth:`Volume.to_sitk`, which transpose.
* ``spacing`` is the voxel size in mm along i, j, k.
* ``origin`` is the physical position (mm, LPS patient frame) of the centre of voxel (0, 0, 0).
* ``direction`` is the 3×3 matrix, row-major as a 9-tuple (SimpleITK's layout), whose *columns*
  are the unit vectors of the i, j, k axes in LPS.

So ``physical = origin + direction @ (spacing * ijk)``, which :attr:`Volume.affine` returns as a
4×4 matrix (LPS; negate the first two rows for the RAS affine NIfTI uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrcunet.errors import InputError


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in patient space. Immutable and hashable."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) <= 0 for s in self.shape):
            raise InputError(f"Geometry shape must be 3 positive ints, not {self.shape}")
        if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise InputError(f"Geometry spacing must be 3 positive finite mm values, not {self.spacing}")
        if len(self.origin) != 3 or not all(np.isfinite(o) for o in self.origin):
            raise InputError(f"Geometry origin must be 3 finite values, not {self.origin}")
        if len(self.direction) != 9:
            raise InputError(f"Geometry direction must have 9 values (3×3 row-major), not {len(self.direction)}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "direction", tuple(float(s) for s in self.direction))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def affine(self) -> np.ndarray:
        """4×4 voxel-index → LPS-mm matrix."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        aff[:3, 3] = self.origin
        return aff

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Map (..., 3) voxel indices (float allowed) to LPS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ (self.direction_matrix @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS mm to continuous voxel indices."""
        xyz = np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)
        inv = np.linalg.inv(self.direction_matrix @ np.diag(self.spacing))
        return xyz @ inv.T

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def same_grid(self, other: "Geometry", atol: float = 1e-4) -> bool:
        """True when ``other`` describes the same voxel grid (shape exact, the rest to ``atol``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol * 10)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def describe(self) -> str:
        return (
            f"shape {self.shape}, spacing {tuple(round(s, 4) for s in self.spacing)} mm, "
            f"origin {tuple(round(o, 3) for o in self.origin)}, "
            f"direction {tuple(round(d, 4) for d in self.direction)}"
        )


@dataclass(frozen=True)
class Volume:
    """A 3D array (``[x, y, z]`` order) plus its :class:`Geometry`.

    ``kind`` is ``"image"`` (intensities, resampled linearly) or ``"label"`` (integer label map,
    always resampled with nearest neighbour). ``meta`` carries provenance such as the source path
    or DICOM UIDs; it never influences geometry.
    """

    array: np.ndarray
    geometry: Geometry
    kind: str = "image"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"Volume array must be 3D, not {self.array.ndim}D with shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise InputError(
                f"Volume array shape {tuple(self.array.shape)} does not match geometry shape {self.geometry.shape}"
            )
        if self.kind not in ("image", "label"):
            raise InputError(f"Volume kind must be 'image' or 'label', not {self.kind!r}")

    # convenience accessors -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        return self.geometry.origin

    @property
    def direction(self) -> tuple[float, ...]:
        return self.geometry.direction

    @property
    def affine(self) -> np.ndarray:
        return self.geometry.affine

    def with_array(self, array: np.ndarray, kind: str | None = None) -> "Volume":
        """A new Volume on the same grid holding ``array``."""
        return Volume(np.asarray(array), self.geometry, kind or self.kind, dict(self.meta))

    # SimpleITK bridge -------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: Any, kind: str = "image", meta: dict[str, Any] | None = None) -> "Volume":
        # lazy: SimpleITK costs ~0.05 s at start-up; `import rrcunet.io` does not need it
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise InputError(f"expected a 3D image, found {image.GetDimension()}D with size {image.GetSize()}")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"expected a scalar image, found {image.GetNumberOfComponentsPerPixel()} components per voxel"
            )
        array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
        geometry = Geometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
        return cls(array, geometry, kind, dict(meta or {}))

    def to_sitk(self) -> Any:
        # lazy: SimpleITK costs ~0.05 s at start-up; `import rrcunet.io` does not need it
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array.transpose(2, 1, 0)))
        image.SetSpacing(self.geometry.spacing)
        image.SetOrigin(self.geometry.origin)
        image.SetDirection(self.geometry.direction)
        return image
