"""Read and write whole volumes: the format-dispatching entry points of :mod:`rrcunet.io`.

Owns :func:`read_image` (NIfTI, NRRD, MetaImage through SimpleITK; a DICOM series folder or one of
its files through :mod:`rrcunet.io.dicom_series`; a DICOM-SEG file through :mod:`rrcunet.io.seg`) and
:func:`write_volume` (NIfTI, NRRD, MetaImage, atomically). Every read goes through the checks of
:mod:`rrcunet.io.validation`: the header is validated before voxels are allocated, then the voxels.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path, check_output_path
from rrcunet.io.dicom_series import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASSES, dcmread_checked, read_dicom_series
from rrcunet.io.seg import read_seg
from rrcunet.io.validation import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_SPACING_RANGE,
    check_ct_intensity,
    check_finite,
    check_header,
    to_label_array,
)
from rrcunet.io.volume import Volume

logger = logging.getLogger(__name__)

#: Image-file suffixes (lower case, longest first), read and written through SimpleITK.
ITK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Suffixes :func:`write_volume` accepts.
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
_KINDS = ("image", "label")


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The :data:`ITK_SUFFIXES` entry ``path``'s name ends with (case-insensitive), else ``None``."""
    name = Path(path).name.lower()
    return next((s for s in ITK_SUFFIXES if name.endswith(s)), None)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file starting with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_image(
    path: str | os.PathLike[str],
    *,
    kind: str = "image",
    check_intensity: bool = True,
    max_voxels: int | None = None,
    spacing_range: tuple[float, float] = DEFAULT_SPACING_RANGE,
    **dicom_options: Any,
) -> Volume:
    """Read one 3D volume from a file or a DICOM folder.

    Dispatch (on the path, then on the file content):

    * ``.nii`` / ``.nii.gz`` / ``.nrrd`` / ``.nhdr`` / ``.mha`` / ``.mhd`` → SimpleITK;
    * a folder → the DICOM series it holds (:func:`rrcunet.io.dicom_series.read_dicom_series`, which
      chooses the CT series when there are several — see docs/io.md);
    * a DICOM file → a SEG object is read as a label map (:func:`rrcunet.io.seg.read_seg`); an image
      file stands for its whole series (the other files of that series in the same folder);
      an RTSTRUCT is refused (it needs a CT grid: use :func:`rrcunet.io.read_rtstruct`).

    Args:
        path: file or folder.
        kind: ``"image"`` (a CT in HU; ``float32``/``int16`` kept as stored) or ``"label"``
            (an integer label map, returned as ``uint8`` or ``int16``; non-integer values are refused).
        check_intensity: for ``kind="image"``, refuse values that cannot be HU (all within
            [0, 255] or no negative value; see :func:`~rrcunet.io.validation.check_ct_intensity`).
        max_voxels: refuse (before allocating) grids larger than this; default
            :data:`~rrcunet.io.validation.DEFAULT_MAX_VOXELS`.
        spacing_range: accepted voxel size in mm.
        dicom_options: passed to :func:`~rrcunet.io.dicom_series.read_dicom_series` for DICOM input
            (``series_uid=``, ``allow_non_ct=``, ``allow_nonuniform=``, ``min_slices=``).

    Returns:
        A :class:`Volume` whose ``meta["source"]`` is the path read (and ``meta["dicom"]`` a
        :class:`~rrcunet.io.dicom_series.DicomSeriesInfo` for DICOM input).

    Raises:
        InputError: missing / unreadable / truncated file, unsupported format, 2D or 4D image,
            absurd spacing, too many voxels, NaN/Inf voxels, non-HU intensities, non-integer labels.

    Example::

        ct = read_image("LUNG1-001/image")          # DICOM folder
        lab = read_image("labels/case1.nii.gz", kind="label")
    """
    if kind not in _KINDS:
        raise InputError(f"read_image: kind must be one of {_KINDS}, not {kind!r}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; check the path")
    if p.is_dir():
        vol = read_dicom_series(p, max_voxels=max_voxels, spacing_range=spacing_range, **dicom_options)
        return _finish(vol, p, kind, check_intensity)
    if not p.is_file():  # a FIFO, a device, a socket: reading it may block forever or never end
        raise InputError(f"{p}: not a regular file (a pipe, device or socket); expected an image file or a DICOM folder")
    if image_suffix(p) is not None:
        check_detached_data(p)
        vol = _read_itk(p, kind=kind, max_voxels=max_voxels, spacing_range=spacing_range)
        return _finish(vol, p, kind, check_intensity)
    if is_dicom_file(p) or p.suffix.lower() in (".dcm", ".ima", ".dicom"):
        return _read_dicom_file(p, kind=kind, check_intensity=check_intensity, max_voxels=max_voxels,
                                spacing_range=spacing_range, **dicom_options)
    raise InputError(
        f"{p}: unrecognised format (suffix {''.join(p.suffixes) or 'none'!r}, no DICOM preamble); expected "
        f"one of {', '.join(ITK_SUFFIXES)}, a DICOM file or a DICOM series folder. Convert the file, or "
        "rename it with the right suffix"
    )


def _finish(vol: Volume, path: Path, kind: str, check_intensity: bool) -> Volume:
    """Apply the voxel checks that depend on ``kind`` and stamp the provenance."""
    meta = dict(vol.meta)
    meta.setdefault("source", str(path))
    if kind == "label":
        return Volume(to_label_array(vol.array, path), vol.geometry, "label", meta)
    check_finite(vol.array, path)
    info = meta.get("dicom")
    declared_ct = info is None or getattr(info, "modality", "CT") == "CT"  # allow_non_ct: not HU
    if check_intensity and declared_ct:
        check_ct_intensity(vol.array, path)
    return Volume(vol.array, vol.geometry, "image", meta)


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """Voxel counts per axis from an image file's header only (no voxel data read); ``None`` when the
    header cannot be read (the full read then reports why)."""
    # lazy: SimpleITK costs ~0.05 s at start-up; only image files need it
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(int(n) for n in reader.GetSize())


def _read_itk(path: Path, *, kind: str, max_voxels: int | None, spacing_range: tuple[float, float]) -> Volume:
    # lazy: SimpleITK costs ~0.05 s at start-up; only reading a NIfTI / NRRD / MHA file needs it
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: cannot read the image header ({_itk_reason(exc)}); expected a valid "
            f"{image_suffix(path)} file. The file is corrupt, truncated or not in that format: re-export it"
        ) from None
    size = reader.GetSize()
    check_header(path, size=size, spacing=reader.GetSpacing(), components=reader.GetNumberOfComponents(),
                 max_voxels=max_voxels, spacing_range=spacing_range)
    _check_direction(path, reader.GetDirection())
    _check_data_bytes(path, size, sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    if image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_data(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: the header declares {'×'.join(map(str, size))} voxels but the voxel data cannot be read "
            f"({_itk_reason(exc)}); the file is truncated or corrupt (e.g. a header-only NIfTI or an "
            "interrupted download). Re-export or re-download it"
        ) from None
    return Volume.from_sitk(image, kind="image", meta={"source": str(path)})


#: The most voxel data a file may declare: the largest accepted grid (:data:`DEFAULT_MAX_VOXELS`) in
#: float32. A 4 MB ``.nii.gz`` declaring 512×512×2048 float64 voxels (4.3 GB, 13 GB at peak) is refused.
MAX_DATA_BYTES = 4 * DEFAULT_MAX_VOXELS


def _check_data_bytes(path: Path, size: Sequence[int], pixel_type: str) -> None:
    """The size guard on the declared voxel data (ITK's pixel type, e.g. ``"64-bit float"``), before reading."""
    match = re.search(r"(\d+)-bit", pixel_type)
    n_bytes = math.prod(int(s) for s in size) * (int(match.group(1)) // 8 if match else 8)
    if n_bytes > MAX_DATA_BYTES:
        raise InputError(
            f"{path}: declares {'×'.join(map(str, size))} voxels of {pixel_type} ({n_bytes / 1e9:.1f} GB of data); "
            f"the bound is {MAX_DATA_BYTES / 1e9:.1f} GB. Store the CT as int16 or float32 (e.g. with "
            "`rrcunet convert`, or SimpleITK's Cast), or crop it")


def _check_nifti_data(path: Path, *, finite: bool = True) -> None:
    """Refuse a truncated NIfTI and (``finite``) a float NIfTI holding NaN/Inf, which ITK would hide.

    ITK's NIfTI reader (nifti1_io) zero-fills a short read and silently replaces NaN/Inf by 0, so
    both checks must look at the file itself:

    * size: ``vox_offset + voxels × bytes`` must be present — for ``.nii`` from the file size, for
      ``.nii.gz`` from the gzip trailer (ISIZE, the uncompressed size mod 2³²), falling back to a
      streaming decompression when the trailer disagrees (multi-member gzip) ;
    * float data: streamed in chunks and tested with ``numpy.isfinite``.
    """
    # lazy: nibabel costs ~0.2 s at start-up; only NIfTI input needs it
    import nibabel as nib

    try:
        image = nib.load(str(path))
        header = image.header
        offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))
        dtype = np.dtype(header.get_data_dtype())
        n_bytes = int(np.prod(header.get_data_shape(), dtype=np.int64)) * dtype.itemsize
    except Exception as exc:  # nibabel raises several types for a broken header
        raise InputError(f"{path}: cannot parse the NIfTI header ({exc}); the file is corrupt or truncated") from None
    gz = path.name.lower().endswith(".gz")
    # nifti1_io (and nibabel's header check) replace a zero / NaN / infinite pixdim by 1 mm without an
    # error, so read the header as stored (check=False) and refuse such a voxel size here.
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            stored = type(header).from_fileobj(fh, check=False)
        pixdim = [float(v) for v in np.asarray(stored["pixdim"], dtype=np.float64).ravel()[1:4]]
    except Exception as exc:  # noqa: BLE001 - nibabel parsed this header a moment ago; any failure = corrupt
        raise InputError(f"{path}: cannot parse the NIfTI header ({exc}); the file is corrupt or truncated") from None
    if not all(np.isfinite(v) and v > 0 for v in pixdim):
        raise InputError(
            f"{path}: the NIfTI header declares voxel spacing (pixdim) {tuple(pixdim)} mm; expected 3 finite values "
            "> 0 (ITK would silently read 1 mm instead). The header is corrupt: fix pixdim in the file"
        )
    expected = offset + n_bytes
    scan_floats = finite and dtype.kind == "f"
    stream_needed = scan_floats
    if not gz:
        size = path.stat().st_size
        if size < expected:
            raise InputError(
                f"{path}: the file holds {size:,} bytes but its header declares {expected:,} (header + voxel data); "
                "the file is truncated or header-only. Re-export or re-download it"
            )
    else:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        if isize != expected % 2**32:
            stream_needed = True
    if not stream_needed:
        return
    opener = gzip.open if gz else open
    total = offset
    bad = 0
    try:
        with opener(path, "rb") as fh:
            fh.seek(offset)
            remaining = n_bytes
            while remaining > 0:
                chunk = fh.read(min(1 << 24, remaining))  # a multiple of every itemsize
                if not chunk:
                    break
                total += len(chunk)
                remaining -= len(chunk)
                if scan_floats:
                    values = np.frombuffer(chunk[: len(chunk) // dtype.itemsize * dtype.itemsize], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(
            f"{path}: the compressed data ends early ({exc}); expected {expected:,} bytes. The file is truncated "
            "(an interrupted copy or download): re-export or re-download it"
        ) from None
    if total < expected:
        raise InputError(
            f"{path}: holds {total:,} bytes of header + voxel data but its header declares {expected:,}; the file "
            "is truncated or header-only. Re-export or re-download it"
        )
    if bad:
        raise InputError(
            f"{path}: found {bad:,} NaN or infinite voxels; expected finite values everywhere. Replace them first "
            "(e.g. numpy.nan_to_num(a, nan=-1024) for CT outside the field of view)"
        )


def _check_direction(path: Path, direction: tuple[float, ...]) -> None:
    m = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(m)) or abs(abs(np.linalg.det(m)) - 1.0) > 1e-3:
        raise InputError(
            f"{path}: found direction cosines {tuple(round(float(d), 4) for d in direction)} that are not a "
            "rotation (|det| ≠ 1); expected an orthonormal orientation. The header is corrupt: fix the "
            "orientation (e.g. the NIfTI sform/qform)"
        )


def _itk_reason(exc: Exception) -> str:
    """The informative last line of an ITK exception message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def _read_dicom_file(path: Path, *, kind: str, check_intensity: bool, max_voxels: int | None,
                     spacing_range: tuple[float, float], **dicom_options: Any) -> Volume:
    try:
        ds = dcmread_checked(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for a broken file
        raise InputError(f"{path}: not a readable DICOM file ({exc}); expected a DICOM image, SEG or folder") from None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in SEG_SOP_CLASSES:
        return read_seg(path)
    if sop_class == RTSTRUCT_SOP_CLASS:
        raise InputError(
            f"{path}: is an RTSTRUCT (contours), which has no voxel grid of its own; expected an image. "
            "Read the CT first and rasterise with rrcunet.io.read_rtstruct(path, ct) (or `rrcunet convert "
            "CT_DIR --rtstruct FILE`)"
        )
    series_uid = dicom_options.pop("series_uid", None) or str(ds.get("SeriesInstanceUID", "")) or None
    vol = read_dicom_series(path.parent, series_uid=series_uid, max_voxels=max_voxels,
                            spacing_range=spacing_range, recursive=False, **dicom_options)
    return _finish(vol, path, kind, check_intensity)


#: The header keys that name a separate data file: MetaImage (``.mha``/``.mhd``) and NRRD (``.nrrd``/``.nhdr``).
_DATA_FILE_KEY = re.compile(rb"^\s*(ElementDataFile\s*=|data ?file\s*:)\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)


def check_detached_data(path: Path) -> None:
    """Refuse a MetaImage or NRRD header whose pixel data lives in a file that is not a plain file beside
    it: an absolute path, ``..``, a sub-folder, a list or pattern of files, or a file that is not there.
    Otherwise SimpleITK reads whatever the header names (``/bin/ls``, ``../../../etc/passwd``) as voxels."""
    if image_suffix(path) not in (".mha", ".mhd", ".nrrd", ".nhdr"):
        return
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if image_suffix(path) in (".nrrd", ".nhdr"):
        head = head.split(b"\n\n", 1)[0]  # the NRRD header ends at the first blank line
    for match in _DATA_FILE_KEY.finditer(head):
        name = match.group(2).decode("latin-1").strip()
        if name.upper() == "LOCAL":
            continue
        target = path.parent / name
        plain = (name and " " not in name and "%" not in name and name.upper() != "LIST"
                 and Path(name).name == name and name not in (".", ".."))
        if not plain or not target.is_file():
            found = ("a path outside the header folder" if not plain else "no such file" if not target.exists()
                     else "a pipe, device or socket, not a regular file" if not target.is_dir() else "a folder")
            raise InputError(f"{path}: its header reads the voxels from {name!r}; expected a data file beside the "
                             f"header (a plain name in {path.parent}, no folder, no '..', no list), found {found}. "
                             "Keep the header and its data file together, or convert the image to .nii.gz")


def _verify_written(tmp: Path, final: Path, image: Any) -> None:
    """Check a written image before it is renamed into place: SimpleITK does not raise when a write comes
    up short (a full disk, a file-size limit), and its NIfTI reader reads a truncated file without
    complaint, so a NIfTI goes through the reader's own truncation check (:func:`_check_nifti_data`)
    and any other format is read back."""
    # lazy: SimpleITK costs ~0.05 s at start-up; `import rrcunet.io` does not need it
    import SimpleITK as sitk

    reason = None
    if image_suffix(final) in (".nii", ".nii.gz"):
        try:
            _check_nifti_data(tmp, finite=False)  # what was asked to be written, NaN included
        except InputError as exc:
            reason = str(exc).removeprefix(f"{tmp}: ")
    else:
        try:
            back = sitk.ReadImage(str(tmp))
            if back.GetSize() != image.GetSize():
                reason = f"size {back.GetSize()} instead of {image.GetSize()}"
        except RuntimeError as exc:
            reason = _itk_reason(exc)
    if reason is not None:
        raise InputError(f"{final}: the file written cannot be read back whole ({reason}); the disk is probably full "
                         "or a file-size limit was hit. Free space (or choose another -o) and run the command again")


def write_volume(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False,
                 compress: bool = True) -> Path:
    """Write ``volume`` to a NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``) or MetaImage (``.mha``) file.

    The geometry (spacing, origin, direction) is written as is. Label volumes are stored as
    ``uint8`` (or ``int16`` when labels exceed 255 or are negative); images keep their dtype
    (``bool`` → ``uint8``). The file appears atomically: a crash never leaves a partial file.

    Args:
        volume: what to write.
        path: destination; its suffix selects the format.
        overwrite: replace an existing file (otherwise an existing file is an error).
        compress: compress NRRD / MHA voxel data (``.nii.gz`` is always compressed, ``.nii`` never).

    Returns:
        ``Path(path)``.

    Raises:
        InputError: unsupported suffix, existing output without ``overwrite``, non-integer labels.
    """
    # lazy: SimpleITK costs ~0.05 s at start-up; only writing a file needs it
    import SimpleITK as sitk

    p = Path(path)
    suffix = image_suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(
            f"{p}: cannot write suffix {''.join(p.suffixes) or 'none'!r}; expected one of "
            f"{', '.join(WRITE_SUFFIXES)} (use write_ct_series / write_seg / write_rtstruct for DICOM)"
        )
    check_output_path(p, overwrite=overwrite)
    array = volume.array
    if volume.kind == "label":
        array = to_label_array(array, p)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = volume.with_array(array).to_sitk()
    with atomic_path(p) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress or suffix == ".nii.gz")
        except RuntimeError as exc:
            raise InputError(f"{p}: SimpleITK could not write the volume ({_itk_reason(exc)})") from None
        _verify_written(tmp, p, image)
    logger.debug("wrote %s (%s, %s)", p, volume.kind, volume.geometry.describe())
    return p
