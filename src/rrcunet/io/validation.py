"""Checks every reader applies before handing a :class:`~rrcunet.io.volume.Volume` to the pipeline.

Owns the rules that turn a hostile or surprising file into one clear :class:`~rrcunet.errors.InputError`
(naming the file, what was found, what was expected and the fix) instead of a crash or a silently
wrong volume:

* :func:`check_header` — dimensionality, components, voxel budget (checked from the header, *before*
  any voxel is allocated) and plausible spacing;
* :func:`check_finite` — NaN / Inf voxels;
* :func:`check_ct_intensity` — an image declared as CT must hold Hounsfield units;
* :func:`to_label_array` / :func:`validate_label` — integer label maps with allowed values;
* :func:`check_same_grid` — an image and its label map must share one voxel grid.

The limits are module constants so that callers (and the CLI) can pass other values explicitly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from rrcunet.errors import InputError
from rrcunet.io.volume import Geometry, Volume

logger = logging.getLogger(__name__)

#: Largest number of voxels a reader allocates by default (≈ 2 GiB as float32). A chest CT is
#: ~512×512×(100…1000) = 26–262 M voxels. Override with ``max_voxels=`` or ``$RRCUNET_MAX_VOXELS``.
DEFAULT_MAX_VOXELS: int = int(os.environ.get("RRCUNET_MAX_VOXELS", 512 * 512 * 2048))

#: Plausible voxel size in mm for a CT (both bounds inclusive). Micro-CT is below, nothing clinical
#: is above; a value outside is almost always a broken header (e.g. spacing written in metres).
DEFAULT_SPACING_RANGE: tuple[float, float] = (0.01, 50.0)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def check_header(
    path: str | os.PathLike[str],
    *,
    size: Sequence[int],
    spacing: Sequence[float],
    components: int = 1,
    max_voxels: int | None = None,
    spacing_range: tuple[float, float] = DEFAULT_SPACING_RANGE,
) -> None:
    """Validate what a file header declares, before reading its voxels.

    Args:
        path: the file or folder, named in error messages.
        size: declared grid size (any dimensionality; only 3D is accepted).
        spacing: declared voxel size in mm, one value per dimension.
        components: values per voxel (1 for a scalar image).
        max_voxels: refuse grids with more voxels than this (default :data:`DEFAULT_MAX_VOXELS`).
        spacing_range: accepted ``(min, max)`` voxel size in mm.

    Raises:
        InputError: 2D / 4D images, vector images, single-slice volumes, grids too large to
            allocate, zero / negative / absurd spacing.
    """
    max_voxels = DEFAULT_MAX_VOXELS if max_voxels is None else int(max_voxels)
    size = [int(s) for s in size]
    if len(size) != 3:
        hint = (
            "a single 2D slice cannot be segmented in 3D; provide the whole CT series"
            if len(size) == 2
            else "split the time/channel dimension and pass one 3D volume"
        )
        raise InputError(
            f"{path}: found a {len(size)}D image of size {_fmt_shape(size)}; expected a 3D volume. {hint}"
        )
    if components != 1:
        raise InputError(
            f"{path}: found {components} values per voxel (vector/RGB image); expected a scalar CT or label "
            "volume. Export a single-channel (grey-level) image"
        )
    if any(s <= 1 for s in size):
        raise InputError(
            f"{path}: found a volume of size {_fmt_shape(size)} (a single slice along one axis); expected a 3D "
            "volume with at least 2 voxels along every axis. Provide the whole CT series, not one slice"
        )
    n_vox = int(np.prod(np.asarray(size, dtype=np.int64)))
    if n_vox > max_voxels:
        raise InputError(
            f"{path}: declared size {_fmt_shape(size)} = {n_vox:,} voxels exceeds the limit of {max_voxels:,} "
            "voxels (refused before allocating memory). If the header is right and you have the memory, raise "
            "the limit (max_voxels= / $RRCUNET_MAX_VOXELS); otherwise the header is corrupt"
        )
    lo, hi = spacing_range
    spacing = [float(s) for s in spacing]
    bad = [s for s in spacing if not np.isfinite(s) or s < lo or s > hi]
    if len(spacing) != 3 or bad:
        raise InputError(
            f"{path}: found voxel spacing {tuple(round(s, 6) for s in spacing)} mm; expected 3 finite values "
            f"between {lo} and {hi} mm. The header is corrupt or in other units (e.g. metres): fix the "
            "spacing in the file, or pass spacing_range= if this really is your data"
        )


def check_finite(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse NaN / ±Inf voxels (they poison normalisation and every loss)."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum() - n_nan)
        raise InputError(
            f"{path}: found {n_nan:,} NaN and {n_inf:,} infinite voxels; expected finite values everywhere. "
            "Replace them first (e.g. numpy.nan_to_num(a, nan=-1024) for CT outside the field of view)"
        )


def check_ct_intensity(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse an image declared as CT whose values cannot be Hounsfield units.

    The rule (documented in docs/io.md): a CT in HU has negative values (air ≈ −1000 HU, lung
    ≈ −850 HU). We refuse

    * values all within [0, 255] — an 8-bit screenshot or an image already normalised to [0, 1];
    * no negative value at all — stored values without the rescale intercept (HU + 1024) or a
      non-CT modality;
    * values no CT stores: NaN or Inf, or beyond [−65536, 65535] (HU are 12- to 16-bit numbers; a
      RescaleSlope of 1e30 gave values of 1e33).

    Pass ``check_intensity=False`` to the reader to skip this check (e.g. for a synthetic image).
    """
    if array.size == 0:
        return
    lo = float(np.min(array))
    hi = float(np.max(array))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -65536.0 or hi > 65535.0:
        raise InputError(
            f"{path}: found intensities in [{lo:g}, {hi:g}]; expected CT in Hounsfield units, which scanners store "
            "as 12- to 16-bit numbers (about −1024 to 3071, up to ±32768). Check the scan's RescaleSlope and "
            "RescaleIntercept (or the NIfTI scl_slope), or pass --no-intensity-check (check_intensity=False in "
            "Python) to use the values as they are"
        )
    if lo >= 0.0 and hi <= 255.0:
        what = "[0, 1] (a normalised image)" if hi <= 1.0 else "[0, 255] (an 8-bit image)"
        raise InputError(
            f"{path}: found intensities in [{lo:g}, {hi:g}], i.e. within {what}; expected CT in Hounsfield units "
            "(air ≈ −1000, soft tissue 0–100, bone > 300). Provide the original CT, or pass "
            "--no-intensity-check (check_intensity=False in Python) if the image is not meant to be in HU"
        )
    if lo >= 0.0:
        raise InputError(
            f"{path}: found no negative intensity (range [{lo:g}, {hi:g}]); expected CT in Hounsfield units, "
            "where air and lung are negative. The values look like stored pixel values without the rescale "
            "intercept (HU + 1024) or a non-CT image. Subtract the intercept, or pass --no-intensity-check "
            "(check_intensity=False in Python) to use the values as they are"
        )


def to_label_array(array: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """Return ``array`` as the smallest integer type holding its labels (``uint8`` or ``int16``).

    Raises:
        InputError: non-integer values (a probability map or an interpolated mask) or values
            that fit neither uint8 nor int16.
    """
    a = np.asarray(array)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        check_finite(a, path)
        if not np.all(np.mod(a, 1) == 0):
            frac = a[np.mod(a, 1) != 0]
            raise InputError(
                f"{path}: found non-integer label values (e.g. {float(frac.flat[0]):g}, {frac.size:,} voxels); "
                "expected an integer label map. Threshold a probability map, or resample masks with nearest "
                "neighbour"
            )
    if a.dtype.kind not in "biuf":
        raise InputError(f"{path}: found voxel type {a.dtype}; expected an integer label map")
    lo = int(a.min()) if a.size else 0
    hi = int(a.max()) if a.size else 0
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8, copy=False)
    if lo >= -32768 and hi <= 32767:
        return a.astype(np.int16, copy=False)
    raise InputError(
        f"{path}: found label values in [{lo}, {hi}]; expected labels that fit int16 (rrcunet uses 0, 1, 2)"
    )


def validate_label(volume: Volume, path: str | os.PathLike[str], allowed: Iterable[int] = (0, 1, 2)) -> Volume:
    """Check that a label volume holds only ``allowed`` values; return it as an integer label Volume.

    Args:
        volume: the label volume (any integer or integral float dtype).
        path: the file it came from, named in the error.
        allowed: accepted label values; the project convention is 0 background, 1 lung, 2 tumour.

    Raises:
        InputError: listing the unexpected values and how many voxels carry each.

    Example::

        label = validate_label(read_image("case1_label.nii.gz", kind="label"), "case1_label.nii.gz")
    """
    array = to_label_array(volume.array, path)
    allowed_set = sorted({int(a) for a in allowed})
    values, counts = np.unique(array, return_counts=True)
    extra = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in allowed_set]
    if extra:
        found = ", ".join(f"{v} ({c:,} voxels)" for v, c in extra[:10])
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        raise InputError(
            f"{path}: found label values {found}{more}; expected only {allowed_set} "
            "(0 background, 1 lung, 2 tumour). Remap the labels before use"
        )
    if array is volume.array and volume.kind == "label":
        return volume
    return Volume(array, volume.geometry, "label", dict(volume.meta))


def check_same_grid(
    image: Volume | Geometry,
    label: Volume | Geometry,
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    *,
    atol: float = 1e-4,
) -> None:
    """Refuse an image and a label map that do not share one voxel grid.

    Shape must match exactly; spacing and direction to ``atol``; origin to ``10 * atol`` mm (the
    tolerances of :meth:`Geometry.same_grid`). The message shows both geometries and every field
    that differs.
    """
    g_img = image.geometry if isinstance(image, Volume) else image
    g_lab = label.geometry if isinstance(label, Volume) else label
    if g_img.same_grid(g_lab, atol=atol):
        return
    diffs = []
    if g_img.shape != g_lab.shape:
        diffs.append(f"shape {g_img.shape} vs {g_lab.shape}")
    if not np.allclose(g_img.spacing, g_lab.spacing, atol=atol):
        diffs.append(f"spacing {g_img.spacing} vs {g_lab.spacing}")
    if not np.allclose(g_img.origin, g_lab.origin, atol=atol * 10):
        diffs.append(f"origin {g_img.origin} vs {g_lab.origin}")
    if not np.allclose(g_img.direction, g_lab.direction, atol=atol):
        diffs.append(f"direction {g_img.direction} vs {g_lab.direction}")
    raise InputError(
        f"image {image_path} and label {label_path} are on different voxel grids ({'; '.join(diffs)}); "
        "expected the label to share the image's grid. Resample the label onto the image with nearest "
        "neighbour (or export both from the same series)"
    )
