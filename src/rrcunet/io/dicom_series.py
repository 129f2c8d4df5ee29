"""DICOM CT series: find, choose, read (:func:`read_dicom_series`) and write (:func:`write_ct_series`).

Reading, step by step (why we do not just call ``sitk.ImageSeriesReader``: we need the per-slice
UIDs kept for SEG/RTSTRUCT writers, the documented series-choice rule, the missing-slice report
naming the gap positions, and one clear error per hostile input):

1. scan the folder (recursively by default) with ``pydicom.dcmread(stop_before_pixels=True)``;
   files that are not DICOM are skipped;
2. group the image files by SeriesInstanceUID and choose one series — **the rule**: an explicit
   ``series_uid`` wins; otherwise keep the series whose Modality is CT (``allow_non_ct=True``
   admits any image series) and take the one with the most slices; a tie between CT series with
   the same number of slices is an error asking for ``series_uid``. The choice and the skipped
   series are logged at INFO level;
3. sort the slices by their position along the slice normal (ImagePositionPatient · (row cosine ×
   column cosine)); refuse duplicates, too few slices, gantry tilt, and missing or unevenly spaced
   slices (the error names the folder and the gap positions; ``allow_nonuniform=True`` resamples
   linearly onto the median step instead);
4. decode the pixels (compressed transfer syntaxes such as JPEG 2000 and lossless JPEG through the
   pylibjpeg plugins) and apply RescaleSlope / RescaleIntercept per slice;
5. build the exact :class:`~rrcunet.io.volume.Geometry`: origin = first slice's IPP, direction
   columns = (row cosine, column cosine, normal), spacing = (PixelSpacing[1], PixelSpacing[0],
   median slice step).

The DICOM identity of the series (study/series/frame-of-reference UIDs, per-slice SOP instance UIDs
and files in slice order) is kept as a :class:`DicomSeriesInfo` in ``Volume.meta["dicom"]``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.errors import InputError
from rrcunet.io.atomic import no_room_error, out_of_space
from rrcunet.io.validation import DEFAULT_SPACING_RANGE, check_header
from rrcunet.io.volume import Geometry, Volume

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
_CT_SOP_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)

#: Slices count as evenly spaced when every step is within this fraction of the median step
#: (plus 5 µm for rounding in the text-encoded positions).
SLICE_STEP_RTOL: float = 0.01
SLICE_STEP_ATOL: float = 0.005


@dataclass(frozen=True)
class DicomSeriesInfo:
    """DICOM identity of a series read by :func:`read_dicom_series` (``Volume.meta["dicom"]``).

    ``files``, ``sop_instance_uids`` and ``slice_positions`` are in slice (k) order. When the series
    was resampled to uniform spacing (``resampled=True``) they describe the *source* slices, which
    then no longer correspond one-to-one to the k index.
    """

    folder: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    modality: str
    sop_class_uid: str
    patient_id: str
    series_description: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[str, ...]
    slice_positions: tuple[float, ...]
    resampled: bool = False


@dataclass(frozen=True)
class SeriesSummary:
    """One series found in a folder (see :func:`list_dicom_series`)."""

    series_uid: str
    modality: str
    sop_class_uid: str
    description: str
    n_files: int
    is_image: bool
    files: tuple[str, ...]
    patient_id: str = ""
    study_date: str = ""
    series_number: int = 0

    def describe(self) -> str:
        what = "image" if self.is_image else "non-image"
        desc = f" {self.description!r}" if self.description else ""
        return f"{self.modality or '?'}{desc} ({self.n_files} {what} file(s), SeriesInstanceUID {self.series_uid})"


# --------------------------------------------------------------------------------------------------
# scanning and choosing
# --------------------------------------------------------------------------------------------------
#: How deep :func:`walk_files` descends (DICOM trees from PACS and TCIA are under 10 levels).
MAX_FOLDER_DEPTH = 32


def walk_files(folder: str | os.PathLike[str], *, max_depth: int = MAX_FOLDER_DEPTH) -> Iterator[Path]:
    """Every file under ``folder``, iteratively (1,100 nested folders gave ``Path.rglob`` a
    RecursionError), without following links to folders, skipping hidden folders, and at most
    ``max_depth`` levels deep (deeper folders are skipped with a warning)."""
    stack = [(Path(folder), 0)]
    too_deep: list[Path] = []
    while stack:  # depth first, files before sub-folders, both by name: the order of a sorted os.walk
        here, depth = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as exc:
            logger.warning("%s: cannot list (%s); skipped", here, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    continue
                if depth + 1 > max_depth:
                    too_deep.append(Path(entry.path))
                    continue
                subfolders.append((Path(entry.path), depth + 1))
            else:
                yield Path(entry.path)
        stack.extend(reversed(subfolders))
    if too_deep:
        logger.warning("%s: %d folder(s) more than %d levels deep were not searched (e.g. %s)", folder, len(too_deep),
                       max_depth, too_deep[0])


def _iter_files(folder: Path, recursive: bool) -> list[Path]:
    it = walk_files(folder) if recursive else folder.iterdir()
    files = []
    for f in it:
        if f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            continue
        if f.is_file():
            files.append(f)
    return sorted(files)


def _modality(ds: Any) -> str:
    modality = str(ds.get("Modality", "") or "").upper()
    if not modality and str(ds.get("SOPClassUID", "")) in _CT_SOP_CLASSES:
        modality = "CT"  # Modality is Type 1 but some re-saved files lack it; the SOP class says CT
    return modality


def _is_image(ds: Any) -> bool:
    if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES + (RTSTRUCT_SOP_CLASS,):
        return False
    return "Rows" in ds and "Columns" in ds and (
        "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds
    )


#: headers kept by :func:`_read_header` (files; a CT series is one file per slice)
HEADER_CACHE_FILES = 2048
#: files modified less than this many seconds ago are read every time (:func:`_read_header`)
HEADER_SETTLE_S = 2.0
_header_cache: OrderedDict[str, tuple[tuple[int, int, int], Any]] = OrderedDict()
_header_lock = threading.Lock()


def _read_header(path: Path) -> Any:
    """``dcmread_checked(path, stop_before_pixels=True)``, kept for the file while it is unchanged.

    ``rrcunet predict`` on a DICOM folder reads every header twice: once to find the cases
    (:func:`list_dicom_series`) and once to read the chosen series (:func:`read_dicom_series`);
    parsing is most of a DICOM read (issue 23: docs/inference.md, "The stages around the network"). A file
    is read again when its size, modification time or inode differs from the reading kept. A file
    modified less than :data:`HEADER_SETTLE_S` before it is read is not kept at all (as git treats
    "racily clean" files): file times are coarse (a few ms), so a file rewritten at the same size
    within that tick would otherwise look unchanged. At most :data:`HEADER_CACHE_FILES` headers are
    kept, the least recently used dropped first. Callers must not modify the returned dataset (it
    may be handed out again).
    """
    st = path.stat()
    key, stamp = str(path.resolve()), (st.st_size, st.st_mtime_ns, st.st_ino)
    with _header_lock:
        kept = _header_cache.get(key)
        if kept is not None and kept[0] == stamp:
            _header_cache.move_to_end(key)
            return kept[1]
    settled = time.time_ns() - st.st_mtime_ns > HEADER_SETTLE_S * 1e9
    ds = dcmread_checked(path, stop_before_pixels=True)
    if not settled:
        return ds
    with _header_lock:
        _header_cache[key] = (stamp, ds)
        _header_cache.move_to_end(key)
        while len(_header_cache) > HEADER_CACHE_FILES:
            _header_cache.popitem(last=False)
    return ds


def _scan(folder: Path, recursive: bool) -> dict[str, list[tuple[Path, Any]]]:
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    from pydicom.errors import InvalidDicomError

    if not folder.exists():
        raise InputError(f"{folder}: no such folder; check the path")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; expected a folder holding a DICOM series")
    files = _iter_files(folder, recursive)
    if not files:
        raise InputError(f"{folder}: the folder is empty; expected the DICOM files of a CT series")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    n_bad = 0
    for f in files:
        try:
            ds = _read_header(f)
        except (InvalidDicomError, Exception) as exc:  # any unreadable file is "not part of a series"
            n_bad += 1
            (logger.warning if isinstance(exc, InputError) else logger.debug)("skipping %s: %s", f, exc)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or f"<no SeriesInstanceUID: {f.parent}>")
        groups.setdefault(uid, []).append((f, ds))
    if not groups:
        raise InputError(
            f"{folder}: none of its {len(files)} file(s) is a DICOM file; expected the DICOM files of a CT "
            "series (files with the 'DICM' preamble)"
        )
    if n_bad:
        logger.info("%s: skipped %d file(s) that are not DICOM", folder, n_bad)
    return groups


def _summaries(groups: dict[str, list[tuple[Path, Any]]]) -> list[SeriesSummary]:
    out = []
    for uid, items in groups.items():
        ds0 = items[0][1]
        out.append(SeriesSummary(
            series_uid=uid,
            modality=_modality(ds0),
            sop_class_uid=str(ds0.get("SOPClassUID", "")),
            description=str(ds0.get("SeriesDescription", "") or ""),
            n_files=len(items),
            is_image=_is_image(ds0),
            files=tuple(str(f) for f, _ in items),
            patient_id=str(ds0.get("PatientID", "") or "").strip(),
            study_date=str(ds0.get("StudyDate", "") or ""),
            series_number=int(ds0.get("SeriesNumber", 0) or 0),
        ))
    return sorted(out, key=lambda s: (-s.n_files, s.series_uid))


def list_dicom_series(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[SeriesSummary]:
    """List the series in ``folder`` (most files first), reading headers only."""
    return _summaries(_scan(Path(folder), recursive))


def _n_slices(items: list[tuple[Path, Any]]) -> int:
    """Number of distinct slice positions (duplicated files of one slice count once)."""
    ds0 = items[0][1]
    if "PerFrameFunctionalGroupsSequence" in ds0:
        return int(ds0.get("NumberOfFrames", 1))
    positions = set()
    for f, ds in items:
        value = ds.get("ImagePositionPatient", [0, 0, 0])
        try:
            positions.add(tuple(round(float(v), 3) for v in value))
        except (TypeError, ValueError):
            raise InputError(f"{f}: ImagePositionPatient is {value!r}; expected 3 numbers. The file lacks the "
                             "geometry needed to place the slice in 3D") from None
    return len(positions)


def _choose_series(folder: Path, groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None,
                   allow_non_ct: bool) -> str:
    summaries = _summaries(groups)
    found = "; ".join(s.describe() for s in summaries)
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(
                f"{folder}: series_uid {series_uid} is not in this folder; found: {found}. Pass one of these UIDs"
            )
        chosen = series_uid
        summary = next(s for s in summaries if s.series_uid == chosen)
        if not summary.is_image:
            raise InputError(f"{folder}: series {chosen} is {summary.describe()}, not an image series; found: {found}")
        if summary.modality != "CT" and not allow_non_ct:
            raise InputError(
                f"{folder}: series {chosen} has modality {summary.modality or 'unknown'}; expected CT. "
                "Pass --allow-non-ct (allow_non_ct=True in Python) to read it anyway"
            )
    else:
        images = [s for s in summaries if s.is_image]
        if not images:
            raise InputError(
                f"{folder}: holds no image series; found: {found}. Expected the slices of a CT series "
                "(an RTSTRUCT or SEG needs its CT series alongside)"
            )
        candidates = [s for s in images if s.modality == "CT"]
        if not candidates:
            if not allow_non_ct:
                raise InputError(
                    f"{folder}: holds no CT series; found: {found}. Expected modality CT; pass "
                    "--allow-non-ct (allow_non_ct=True in Python) to read another modality"
                )
            candidates = images
        counts = {s.series_uid: _n_slices(groups[s.series_uid]) for s in candidates}
        best = max(counts.values())
        top = [s for s in candidates if counts[s.series_uid] == best]
        if len(top) > 1:
            raise InputError(
                f"{folder}: holds {len(top)} CT series with {best} slices each (" +
                "; ".join(s.describe() for s in top) +
                "); cannot choose. Pass series_uid= (--series-uid) to pick one"
            )
        chosen = top[0].series_uid
    skipped = [s for s in summaries if s.series_uid != chosen]
    logger.info("%s: reading series %s (%d files)", folder, chosen, len(groups[chosen]))
    for s in skipped:
        logger.info("%s: skipped series %s", folder, s.describe())
    return chosen


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
#: The most a deflated DICOM file may inflate to (pydicom inflates it whole in memory, even to read
#: the header): far above any CT slice or SEG, far below the 1 GiB private element of a hostile file.
MAX_INFLATED_BYTES = 256 * 1024 * 1024
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _check_inflated_size(path: Any) -> None:
    """The size guard of a deflated-transfer-syntax file: stream-inflate it (bounded memory) and
    refuse it when it grows past :data:`MAX_INFLATED_BYTES`, before pydicom inflates it whole."""
    import zlib  # stdlib, but only deflated files need it

    try:
        with open(path, "rb") as fh:
            head = fh.read(144)
            if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
                return  # no standard file meta: pydicom decides
            meta_len = int.from_bytes(head[140:144], "little")
            fh.seek(144)
            meta = fh.read(meta_len)
            if _DEFLATED.encode() not in meta:
                return
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            while chunk := fh.read(1 << 20):
                data = inflate.decompress(chunk, MAX_INFLATED_BYTES + 1 - total)
                total += len(data)
                while inflate.unconsumed_tail and total <= MAX_INFLATED_BYTES:
                    data = inflate.decompress(inflate.unconsumed_tail, MAX_INFLATED_BYTES + 1 - total)
                    total += len(data)
                if total > MAX_INFLATED_BYTES:
                    raise InputError(
                        f"{path}: a deflated DICOM file that inflates to more than {MAX_INFLATED_BYTES // 2**20} MiB; "
                        "expected a CT slice, RTSTRUCT or SEG (a few MB). Remove this file from the folder")
    except (OSError, zlib.error):
        return  # unreadable or not deflate data: pydicom's own error follows


def dcmread_checked(path: Any, **kwargs: Any) -> Any:
    """``pydicom.dcmread`` that also decodes every element now.

    pydicom decodes elements lazily, so a corrupt element (an unknown VR, a bad length) would
    otherwise fail later, far from the ``try`` that turns read errors into :class:`InputError`.
    Callers wrap this in that ``try``. A deflated file is first checked against
    :data:`MAX_INFLATED_BYTES` (:class:`InputError` when above).
    """
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    import pydicom

    if isinstance(path, (str, os.PathLike)):
        _check_inflated_size(path)
    ds = pydicom.dcmread(path, **kwargs)
    for _ in ds.iterall():
        pass
    return ds


def _floats(ds: Any, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(
            f"{path}: {keyword} is {value!r}; expected {n} numbers. The file lacks the geometry needed to "
            "place the slice in 3D"
        )
    return arr


def _orientation(iop: np.ndarray, path: Path) -> np.ndarray:
    """3×3 matrix whose columns are the row cosine, column cosine and slice normal."""
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 1e-2 or abs(nc - 1) > 1e-2 or abs(np.dot(row, col)) > 1e-2:
        raise InputError(
            f"{path}: ImageOrientationPatient {tuple(iop)} is not two orthogonal unit vectors; the header is corrupt"
        )
    row, col = row / nr, col / nc
    normal = np.cross(row, col)
    return np.column_stack([row, col, normal / np.linalg.norm(normal)])


@dataclass(frozen=True)
class _SeriesPlan:
    """A chosen, sorted and validated series, before any pixel is decoded."""

    entries: list[tuple[float, np.ndarray, Path, Any]]
    positions: np.ndarray
    geometry: Geometry
    info: DicomSeriesInfo


def _plan_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None,
    allow_non_ct: bool,
    allow_nonuniform: bool,
    min_slices: int,
    recursive: bool,
    max_voxels: int | None,
    spacing_range: tuple[float, float],
) -> _SeriesPlan:
    folder_p = Path(folder)
    groups = _scan(folder_p, recursive)
    uid = _choose_series(folder_p, groups, series_uid, allow_non_ct)
    items = groups[uid]
    ds0 = items[0][1]
    if "PerFrameFunctionalGroupsSequence" in ds0 or int(ds0.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(
            f"{items[0][0]}: is a multi-frame (enhanced) image with {ds0.get('NumberOfFrames', '?')} frames; "
            "expected a classic one-file-per-slice CT series. Convert it first (e.g. `dcm2niix` or "
            "`highdicom.imread(path).get_volume()` → NIfTI)"
        )

    # -- per-slice geometry, consistency --------------------------------------------------------
    first_path = items[0][0]
    iop0 = _floats(ds0, "ImageOrientationPatient", 6, first_path)
    rot = _orientation(iop0, first_path)
    normal = rot[:, 2]
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    if "PixelSpacing" not in ds0:
        raise InputError(f"{first_path}: has no PixelSpacing; expected the in-plane voxel size of the CT")
    ps0 = _floats(ds0, "PixelSpacing", 2, first_path)
    entries = []
    modality0 = _modality(ds0)
    for f, ds in items:
        if _modality(ds) != modality0:
            raise InputError(
                f"{f}: modality {_modality(ds) or 'unknown'} inside a {modality0 or 'unknown'} series ({first_path}); "
                "expected one modality for the whole series (a slice of another scan was saved into it). Remove "
                "that file from the folder"
            )
        if int(ds.get("Rows", -1)) != rows or int(ds.get("Columns", -1)) != cols:
            raise InputError(
                f"{f}: slice size {ds.get('Columns')}×{ds.get('Rows')} differs from {cols}×{rows} in {first_path}; "
                "expected one size for the whole series (the folder mixes series or reconstructions)"
            )
        iop = _floats(ds, "ImageOrientationPatient", 6, f)
        if not np.allclose(iop, iop0, atol=1e-4):
            raise InputError(
                f"{f}: ImageOrientationPatient {tuple(iop)} differs from {tuple(iop0)} in {first_path}; expected "
                "one orientation for the whole series"
            )
        ps = _floats(ds, "PixelSpacing", 2, f)
        if not np.allclose(ps, ps0, rtol=1e-4):
            raise InputError(
                f"{f}: PixelSpacing {tuple(ps)} differs from {tuple(ps0)} in {first_path}; expected one pixel "
                "size for the whole series"
            )
        ipp = _floats(ds, "ImagePositionPatient", 3, f)
        entries.append((float(ipp @ normal), ipp, f, ds))
    entries.sort(key=lambda e: e[0])

    # -- duplicates -------------------------------------------------------------------------------
    unique: list[tuple[float, np.ndarray, Path, Any]] = []
    for e in entries:
        if unique and abs(e[0] - unique[-1][0]) < 1e-3:
            prev = unique[-1]
            if str(e[3].get("SOPInstanceUID")) == str(prev[3].get("SOPInstanceUID")):
                logger.info("%s: duplicate file of slice %s (same SOPInstanceUID) ignored", e[2], prev[2])
                continue
            raise InputError(
                f"{folder_p}: two different slices at the same position {e[0]:.3f} mm ({prev[2].name} and "
                f"{e[2].name}); expected one slice per position. The series holds several acquisitions or "
                "echoes: split them into separate folders"
            )
        unique.append(e)
    entries = unique
    n = len(entries)
    if n < min_slices:
        raise InputError(
            f"{folder_p}: series {uid} has {n} slice(s); expected a 3D CT with at least {min_slices} slices. "
            "This looks like a single-slice (2D) export: provide the whole CT series"
        )

    positions = np.array([e[0] for e in entries])
    steps = np.diff(positions)
    step = float(np.median(steps))

    # -- gantry tilt / sheared stack: IPP must move along the normal ---------------------------------
    offsets = np.array([e[1] for e in entries]) - entries[0][1]
    inplane = offsets - np.outer(offsets @ normal, normal)
    drift = np.linalg.norm(inplane, axis=1)
    if np.max(drift) > max(0.01, 0.01 * step):
        k = int(np.argmax(drift))
        angle = float(np.degrees(np.arctan2(drift[k], abs(positions[k] - positions[0]) + 1e-12)))
        raise InputError(
            f"{folder_p}: slice positions drift {drift[k]:.2f} mm sideways over the stack (gantry tilt ≈ "
            f"{angle:.1f}°); expected slices stacked along the slice normal. Tilted series are not supported: "
            "resample to a regular grid first (e.g. 3D Slicer's 'Acquisition Transform' or dcm2niix)"
        )

    # -- missing / uneven slices -------------------------------------------------------------------
    tol = SLICE_STEP_RTOL * step + SLICE_STEP_ATOL
    irregular = np.nonzero(np.abs(steps - step) > tol)[0]
    resample = False
    if irregular.size:
        parts = []
        for idx in irregular[:10]:
            a, b = positions[idx], positions[idx + 1]
            gap = b - a
            if gap > 1.5 * step:
                parts.append(f"gap {gap:.3f} mm between {a:.3f} and {b:.3f} mm (≈{round(gap / step) - 1} missing "
                             f"slice(s) after {entries[idx][2].name})")
            else:
                parts.append(f"step {gap:.3f} mm between {a:.3f} and {b:.3f} mm")
        more = f" and {irregular.size - 10} more" if irregular.size > 10 else ""
        msg = (f"{folder_p}: slices are not evenly spaced (median step {step:.3f} mm): {'; '.join(parts)}{more}. "
               "Expected a complete series with a constant slice step")
        if not allow_nonuniform:
            raise InputError(msg + ". Re-export the complete series, or pass --allow-nonuniform "
                             "(allow_nonuniform=True in Python) to resample onto a uniform grid")
        logger.warning("%s; resampling linearly onto a %.3f mm step", msg, step)
        resample = True

    n_out = int(round((positions[-1] - positions[0]) / step)) + 1 if resample else n
    spacing = (float(ps0[1]), float(ps0[0]), step)
    check_header(folder_p, size=(cols, rows, n_out), spacing=spacing, max_voxels=max_voxels,
                 spacing_range=spacing_range)

    geometry = Geometry((cols, rows, n_out), spacing, tuple(entries[0][1]), tuple(rot.ravel()))
    info = DicomSeriesInfo(
        folder=str(folder_p),
        study_uid=str(ds0.get("StudyInstanceUID", "")),
        series_uid=uid,
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "")),
        modality=_modality(ds0),
        sop_class_uid=str(ds0.get("SOPClassUID", "")),
        patient_id=str(ds0.get("PatientID", "")),
        series_description=str(ds0.get("SeriesDescription", "") or ""),
        sop_instance_uids=tuple(str(e[3].get("SOPInstanceUID", "")) for e in entries),
        files=tuple(str(e[2]) for e in entries),
        slice_positions=tuple(float(p) for p in positions),
        resampled=resample,
    )
    return _SeriesPlan(entries, positions, geometry, info)


def read_dicom_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_non_ct: bool = False,
    allow_nonuniform: bool = False,
    min_slices: int = 3,
    recursive: bool = True,
    max_voxels: int | None = None,
    spacing_range: tuple[float, float] = DEFAULT_SPACING_RANGE,
) -> Volume:
    """Read one DICOM image series from ``folder`` as a :class:`Volume` in HU.

    Args:
        folder: folder holding the series (sub-folders are searched when ``recursive``).
        series_uid: read this SeriesInstanceUID instead of applying the choice rule.
        allow_non_ct: accept a modality other than CT (otherwise an InputError).
        allow_nonuniform: resample missing / unevenly spaced slices linearly onto the median slice
            step (with a warning) instead of refusing them.
        min_slices: fewer distinct slices than this is refused (a 2D export is not a 3D CT).
        recursive: search sub-folders too.
        max_voxels: refuse (before decoding) series larger than this.
        spacing_range: accepted voxel size in mm.

    Returns:
        ``Volume(kind="image")``; ``int16`` when every slice has slope 1 and an integer intercept and
        the values fit, ``float32`` otherwise. ``meta["dicom"]`` is a :class:`DicomSeriesInfo`.

    Raises:
        InputError: see docs/io.md for the list (empty folder, no / ambiguous CT series, non-CT
            modality, mixed slice sizes or orientations, duplicates, single slice, tilt, missing
            slices, undecodable pixels, absurd spacing, too many voxels).
    """
    plan = _plan_series(folder, series_uid=series_uid, allow_non_ct=allow_non_ct,
                        allow_nonuniform=allow_nonuniform, min_slices=min_slices, recursive=recursive,
                        max_voxels=max_voxels, spacing_range=spacing_range)
    nx, ny, nz = plan.geometry.shape
    array = _read_pixels(plan.entries, ny, nx)
    if plan.info.resampled:
        target = plan.positions[0] + plan.geometry.spacing[2] * np.arange(nz)
        array = _resample_slices(array, plan.positions, target)
    return Volume(array, plan.geometry, "image", {"source": plan.info.folder, "dicom": plan.info})


def _rescale_value(ds: Any, keyword: str, default: float, path: Path) -> float:
    """RescaleSlope / RescaleIntercept as one finite number, or one error naming the file."""
    value = ds.get(keyword, default)
    try:
        number = float(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (keyword == "RescaleSlope" and number == 0):
        raise InputError(f"{path}: {keyword} is {value!r}; expected one finite number (the slice's HU scaling). "
                         "The file is corrupt: re-export the series")
    return number


#: Tile of :func:`zyx_copy`: voxels along the first, second and third source axes.
ZYX_TILE = (64, 8, 64)


def zyx_copy(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` with its first and third axes swapped, tile by tile:
    ``(x, y, z[, ...])`` → ``(z, y, x[, ...])``, and back.

    ``np.ascontiguousarray(array.swapaxes(0, 2))`` walks one side of the copy with a stride of a
    whole plane per element; copying 64×8×64 tiles keeps both sides in cache. Used for the reader's
    decoded slices and the SEG writer's frames (issue 23; ``python benchmarks/dicom_io_speed.py``
    times both stages).
    """
    ni, nj, nk = array.shape[:3]
    out = np.empty((nk, nj, ni, *array.shape[3:]), dtype=array.dtype)
    ti, tj, tk = ZYX_TILE
    for i0 in range(0, ni, ti):
        for k0 in range(0, nk, tk):
            for j0 in range(0, nj, tj):
                out[k0:k0 + tk, j0:j0 + tj, i0:i0 + ti] = array[i0:i0 + ti, j0:j0 + tj, k0:k0 + tk].swapaxes(0, 2)
    return out


#: Transfer syntaxes whose pixel data :func:`_native_pixels` reads: implicit and explicit VR little endian.
_NATIVE_LE = {"1.2.840.10008.1.2": 8, "1.2.840.10008.1.2.1": 12}  # UID → bytes of the PixelData element's header


def _native_pixels(path: Path, header: Any) -> np.ndarray | None:
    """The pixels of an uncompressed 16-bit slice read straight from the end of its file, or None
    where that does not apply (then :func:`_decode_pixels` asks pydicom).

    Written here rather than left to ``pydicom.pixels.pixel_array``: that parses the whole header a
    second time to find the pixel data, most of the cost of reading a slice whose header the scan
    already parsed (issue 23: ``python benchmarks/dicom_io_speed.py``, alternating with the code
    before, twice: reading LUNG1-001 0.272 and 0.237 s against 0.417 and 0.330 s). Nothing is decoded: an
    uncompressed slice's pixel data is its file's last ``rows × columns × 2`` bytes whenever nothing
    follows it, and the 8 or 12 bytes before them must be exactly the PixelData element's header
    (tag (7FE0,0010), VR OW or OB, that length); any other file (compressed, big endian, 8 or 32
    bits, several frames or samples, elements after the pixel data) goes to pydicom. The values
    are pydicom's: the same dtype (int16 or uint16 by PixelRepresentation) and, when BitsStored is
    below 16, the same shift that ignores the unused high bits (tested against pydicom on every real
    series).
    """
    meta = getattr(header, "file_meta", None)
    head = _NATIVE_LE.get(str(getattr(meta, "TransferSyntaxUID", "") or ""))
    try:
        rows, cols = int(header.Rows), int(header.Columns)
        allocated, stored = int(header.BitsAllocated), int(header.get("BitsStored", 16) or 16)
        signed = int(header.get("PixelRepresentation", 0) or 0)
        single = int(header.get("SamplesPerPixel", 1) or 1) == 1 and int(header.get("NumberOfFrames", 1) or 1) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if head is None or allocated != 16 or not 0 < stored <= 16 or signed not in (0, 1) or not single:
        return None
    n = rows * cols * 2
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size < n + head:
                return None
            fp.seek(size - n - head)
            buf = fp.read(n + head)
    except OSError:
        return None
    tag = buf[:4] == b"\xe0\x7f\x10\x00"
    if head == 12:
        ok = tag and buf[4:6] in (b"OW", b"OB") and buf[6:8] == b"\0\0" and int.from_bytes(buf[8:12], "little") == n
    else:
        ok = tag and int.from_bytes(buf[4:8], "little") == n
    if not ok or len(buf) != n + head:
        return None
    arr = np.frombuffer(buf, dtype="<i2" if signed else "<u2", offset=head).reshape(rows, cols)
    if stored < 16:  # pydicom's correction of the unused bits: shift them out and back
        arr = arr.copy()
        np.left_shift(arr, 16 - stored, out=arr)
        np.right_shift(arr, 16 - stored, out=arr)
    return arr


def _decode_pixels(path: Path, header: Any) -> np.ndarray:
    """The decoded pixel array of one slice whose header (``header``) the scan already read.

    ``pydicom.pixels.pixel_array(path)`` parses only the pixel data and the elements that describe
    it: the scan decoded every header element (:func:`dcmread_checked`), so they are not parsed a
    second time (issue 23). It reads the file as stored and takes the transfer syntax from its file
    meta, so a deflated file, or one without file meta, goes through :func:`dcmread_checked` as before.
    """
    native = _native_pixels(path, header)
    if native is not None:
        return native
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    from pydicom.pixels import pixel_array
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax or syntax == DeflatedExplicitVRLittleEndian:
        return dcmread_checked(path).pixel_array
    return pixel_array(path)


def _read_pixels(entries: list[tuple[float, np.ndarray, Path, Any]], rows: int, cols: int) -> np.ndarray:
    rescale = []
    for _, _, f, ds in entries:
        rescale.append((_rescale_value(ds, "RescaleSlope", 1.0, f), _rescale_value(ds, "RescaleIntercept", 0.0, f)))
    integer = all(s == 1.0 and float(i).is_integer() for s, i in rescale)
    # slices decoded into (z, y, x), each a contiguous write, then one tiled copy to (x, y, z)
    out = np.empty((len(entries), rows, cols), dtype=np.int16 if integer else np.float32)
    for k, (_, _, f, hdr) in enumerate(entries):
        try:
            raw = _decode_pixels(f, hdr)
        except Exception as exc:  # decoders raise many types; all mean "cannot decode this file"
            ts = getattr(getattr(hdr, "file_meta", None), "TransferSyntaxUID", None)
            ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown"
            raise InputError(
                f"{f}: cannot decode the pixel data (transfer syntax {ts_name}: {exc}); expected a decodable CT "
                "slice. For JPEG 2000 install pylibjpeg-openjpeg, for lossless JPEG pylibjpeg-libjpeg (or "
                "python-gdcm); otherwise the file is truncated or corrupt"
            ) from None
        if raw.shape != (rows, cols):
            raise InputError(
                f"{f}: decoded pixel array has shape {raw.shape}; expected ({rows}, {cols}) (one grey-level frame)"
            )
        slope, intercept = rescale[k]
        hu = raw.astype(np.float64) * slope + intercept if not integer else raw.astype(np.int32) + int(intercept)
        if out.dtype == np.int16 and (hu.min() < -32768 or hu.max() > 32767):
            out = out.astype(np.float32)
        out[k] = hu
    return zyx_copy(out)


def _resample_slices(array: np.ndarray, positions: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Linear interpolation along k from slices at ``positions`` onto ``target`` (both ascending)."""
    hi = np.clip(np.searchsorted(positions, target, side="left"), 1, len(positions) - 1)
    lo = hi - 1
    w = (target - positions[lo]) / (positions[hi] - positions[lo])
    w = np.clip(w, 0.0, 1.0).astype(np.float32)
    src = array.astype(np.float32, copy=False)
    return src[:, :, lo] * (1 - w) + src[:, :, hi] * w


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def new_instance(sop_class_uid: str, modality: str) -> Any:
    """An empty DICOM instance written by rrcunet: file meta (explicit VR little endian), a fresh
    SOPInstanceUID, UTF-8 character set, the SOP class, modality and manufacturer."""
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.Manufacturer = "rrcunet"
    return ds


def _ds(value: float) -> Any:
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


@contextlib.contextmanager
def atomic_dir(final: Path, *, overwrite: bool) -> Any:
    """Yield a temporary folder next to ``final``; on success it replaces ``final`` (atomic rename)."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise InputError(f"output {final} exists and is a file; expected a folder path")
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise InputError(f"output folder {final} already exists and is not empty; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give the folder the usual permissions
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = out_of_space(exc)
        if reason is not None:
            raise no_room_error(final, reason) from None
        raise


def _right_handed(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (array, origin, rotation) with k along row×column, flipping k when needed."""
    g = volume.geometry
    rot = g.direction_matrix.copy()
    normal = np.cross(rot[:, 0], rot[:, 1])
    along = float(np.dot(normal, rot[:, 2]))
    if abs(abs(along) - 1.0) > 1e-4 or abs(np.dot(rot[:, 0], rot[:, 1])) > 1e-4:
        raise InputError(
            f"cannot write a DICOM series for direction {g.direction}: its axes are not orthonormal; DICOM "
            "slices are stacked along the normal of the image plane. Resample the volume first"
        )
    array = volume.array
    origin = np.asarray(g.origin, dtype=np.float64)
    if along < 0:
        logger.info("k axis points against row×column: writing the slices in reverse order")
        array = array[:, :, ::-1]
        origin = origin + rot[:, 2] * g.spacing[2] * (g.shape[2] - 1)
        rot[:, 2] = -rot[:, 2]
    return array, origin, rot


def write_ct_series(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str,
    patient_name: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "rrcunet CT",
    series_number: int = 1,
    study_description: str = "",
    overwrite: bool = False,
) -> list[Path]:
    """Write a HU :class:`Volume` as a CT Image Storage series, one file per slice.

    Pixels are stored as signed 16-bit integers with RescaleSlope 1 and a RescaleIntercept chosen so
    that they fit (−1024 when possible); non-integer HU are rounded to the nearest integer. The
    geometry tags reproduce ``volume.geometry`` exactly (to the 16-character DS precision):
    ImageOrientationPatient = direction columns 0 and 1, ImagePositionPatient of slice k = origin +
    k · spacing[2] · direction column 2, PixelSpacing = (spacing[1], spacing[0]). A volume whose k
    axis points against row×column is written with its slices reversed (same physical image).

    Args:
        volume: the CT (``kind="image"``).
        out_dir: folder to create (``CT_0001.dcm`` …); replaced atomically.
        patient_id / patient_name: patient module (name defaults to the ID).
        study_uid / series_uid / frame_of_reference_uid: reuse UIDs (new ones are generated by default).
        series_description / series_number / study_description: descriptive tags.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        The written files in slice order.

    Example::

        files = write_ct_series(phantom_ct, "out/phantom_dicom", patient_id="PHANTOM-001")
        ct = read_image("out/phantom_dicom")
    """
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    import pydicom
    from pydicom.uid import generate_uid

    if volume.kind != "image":
        raise InputError("write_ct_series: expected an image volume in HU, got a label volume (use write_seg)")
    sources = [volume.meta.get("source")]
    info = volume.meta.get("dicom")
    if isinstance(info, DicomSeriesInfo):
        sources.append(info.folder)
    for src in sources:
        if src and Path(src).resolve() == Path(out_dir).resolve():
            raise InputError(f"output {out_dir} is the folder the volume was read from; choose another output folder")
    array, origin, rot = _right_handed(volume)
    g = volume.geometry
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError("write_ct_series: the volume holds NaN/Inf voxels; expected finite HU values")
    values = np.rint(values)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo > 65535:
        raise InputError(f"write_ct_series: HU range [{lo:g}, {hi:g}] does not fit 16 bits; clip it first")
    intercept = -1024.0
    if lo - intercept < -32768 or hi - intercept > 32767:
        intercept = float(np.floor(lo)) + 32768.0
    stored = (values - intercept).astype(np.int16)

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    nx, ny, nz = g.shape
    out_p = Path(out_dir)
    written: list[Path] = []
    with atomic_dir(out_p, overwrite=overwrite) as tmp:
        for k in range(nz):
            ds = new_instance(CT_IMAGE_STORAGE, "CT")
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.PatientName = patient_name or f"{patient_id}^"  # family^given; the ID as family name
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.Laterality = ""  # General Series, Type 2C: a chest is unpaired, so empty
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = study_description
            ds.SeriesDescription = series_description
            ds.SeriesNumber = int(series_number)
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            ds.KVP = ""
            ds.PatientPosition = "HFS"
            ipp = origin + rot[:, 2] * g.spacing[2] * k
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds(v) for v in (*rot[:, 0], *rot[:, 1])]
            ds.SliceLocation = _ds(float(ipp @ rot[:, 2]))
            ds.SliceThickness = _ds(g.spacing[2])
            ds.PixelSpacing = [_ds(g.spacing[1]), _ds(g.spacing[0])]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ny
            ds.Columns = nx
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(1.0)
            ds.RescaleType = "HU"
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            name = f"CT_{k + 1:04d}.dcm"
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
            written.append(out_p / name)
    logger.info("wrote %d CT slices to %s (series %s)", nz, out_p, series_uid)
    return written


def load_series_datasets(info_or_dir: DicomSeriesInfo | str | os.PathLike[str] | Sequence[Any],
                         *, stop_before_pixels: bool = False) -> list[Any]:
    """The pydicom datasets of a CT series in slice order.

    ``info_or_dir`` is a :class:`DicomSeriesInfo` (from ``Volume.meta["dicom"]``), a folder (read with
    the series-choice rule of :func:`read_dicom_series`), or a sequence of file paths or pydicom
    datasets (sorted here along the slice normal).
    """
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    import pydicom

    if isinstance(info_or_dir, DicomSeriesInfo):
        files = info_or_dir.files
    elif isinstance(info_or_dir, (str, os.PathLike)):
        files = _plan_series(info_or_dir, series_uid=None, allow_non_ct=False, allow_nonuniform=False,
                             min_slices=1, recursive=True, max_voxels=None,
                             spacing_range=DEFAULT_SPACING_RANGE).info.files
    else:
        items = list(info_or_dir)
        datasets = [pydicom.dcmread(d, stop_before_pixels=stop_before_pixels)
                    if isinstance(d, (str, os.PathLike)) else d for d in items]
        return _with_uids(_sorted_by_position(datasets))
    if stop_before_pixels:  # the headers the reader parsed (a SEG or RTSTRUCT written right after the read)
        return _with_uids([_read_header(Path(f)) for f in files])
    return _with_uids([pydicom.dcmread(f) for f in files])


def _with_uids(datasets: list[Any]) -> list[Any]:
    """``datasets`` with the study, series, frame-of-reference and instance UIDs that the source lacks
    (empty or missing, as in some anonymised exports) filled in, so a SEG or RTSTRUCT can reference
    them; said in a warning. The UIDs are derived from the files' content, so a rerun gives the same."""
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM input and output need it
    from pydicom.uid import generate_uid

    if not datasets:
        return datasets
    if not all(str(ds.get(keyword, "") or "") for ds in datasets
               for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPClassUID",
                               "SOPInstanceUID")):
        # filled in on copies: the datasets may be the reader's kept headers (_read_header)
        datasets = [copy.deepcopy(ds) for ds in datasets]
    seed = [str(datasets[0].get("FrameOfReferenceUID", "")), str(datasets[0].get("ImagePositionPatient", "")),
            str(len(datasets))]
    filled = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not all(str(ds.get(keyword, "") or "") for ds in datasets):
            uid = next((str(ds.get(keyword)) for ds in datasets if ds.get(keyword)), None)
            uid = uid or generate_uid(entropy_srcs=[keyword, *seed])
            for ds in datasets:
                setattr(ds, keyword, uid)
            filled.append(keyword)
    if not all(str(ds.get("SOPClassUID", "") or "") for ds in datasets) and _modality(datasets[0]) in ("CT", ""):
        for ds in datasets:
            ds.SOPClassUID = CT_IMAGE_STORAGE
        filled.append("SOPClassUID (set to CT Image Storage)")
    for k, ds in enumerate(datasets):
        if not str(ds.get("SOPInstanceUID", "") or ""):
            ds.SOPInstanceUID = generate_uid(entropy_srcs=["SOPInstanceUID", str(k), *seed])
            if "SOPInstanceUID" not in filled:
                filled.append("SOPInstanceUID")
    if filled:
        logger.warning("the source CT series lacks %s; generated UIDs so the SEG / RTSTRUCT can reference its slices "
                       "(they will not match the original files in an archive)", ", ".join(filled))
    return datasets


def _sorted_by_position(datasets: list[Any]) -> list[Any]:
    """Datasets sorted ascending along their slice normal (unchanged when they lack geometry)."""
    try:
        rot = _orientation(np.asarray([float(v) for v in datasets[0].ImageOrientationPatient]), Path("."))
        return sorted(datasets, key=lambda d: float(np.asarray([float(v) for v in d.ImagePositionPatient]) @ rot[:, 2]))
    except (AttributeError, IndexError, TypeError, ValueError, InputError):
        return datasets


def series_geometry(datasets: Sequence[Any], source: str | os.PathLike[str] = "DICOM series") -> Geometry:
    """The :class:`Geometry` of a single-frame image series given as pydicom datasets in slice order.

    Uses the same rules as :func:`read_dicom_series` (origin = first IPP, direction = row, column,
    normal; spacing = PixelSpacing[1], PixelSpacing[0], median step). The datasets must be sorted
    ascending along the normal (as :func:`load_series_datasets` returns them).
    """
    if not datasets:
        raise InputError(f"{source}: no DICOM datasets given; expected the slices of the source CT series")
    ds0 = datasets[0]
    src = Path(str(getattr(ds0, "filename", source) or source))
    rot = _orientation(_floats(ds0, "ImageOrientationPatient", 6, src), src)
    ipps = np.array([_floats(d, "ImagePositionPatient", 3, src) for d in datasets])
    pos = ipps @ rot[:, 2]
    if len(pos) > 1 and np.any(np.diff(pos) <= 0):
        raise InputError(f"{source}: the source datasets are not in ascending slice order; pass them sorted "
                         "(load_series_datasets does this)")
    step = float(np.median(np.diff(pos))) if len(pos) > 1 else float(ds0.get("SliceThickness", 1.0) or 1.0)
    ps = _floats(ds0, "PixelSpacing", 2, src)
    return Geometry((int(ds0.Columns), int(ds0.Rows), len(datasets)), (float(ps[1]), float(ps[0]), step),
                    tuple(ipps[0]), tuple(rot.ravel()))
