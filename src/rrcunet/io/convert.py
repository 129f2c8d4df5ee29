"""``rrcunet convert``: a CT (DICOM folder or any volume file) plus its contours → NIfTI files.

Owns :func:`convert`, the library function behind the CLI command, and :func:`safe_filename`.
Everything is read, rasterised and validated *before* the first file is written, and every file is
written atomically, so a failure never leaves a half-converted case behind.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rrcunet.errors import InputError
from rrcunet.io.atomic import check_output_path, remove_stale_temporaries
from rrcunet.io.image import read_image, write_volume
from rrcunet.io.rtstruct import read_rtstruct
from rrcunet.io.seg import read_seg_segments
from rrcunet.io.volume import Volume

logger = logging.getLogger(__name__)

_RESERVED = {"ct", "con", "prn", "aux", "nul"}


MAX_STEM = 100


def safe_filename(name: str, taken: set[str] | None = None) -> str:
    """A portable file stem for an ROI name (``"GTV 1/left"`` → ``"GTV_1_left"``), unique within ``taken``.

    Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``; leading dots are
    removed; names reserved by us (``ct``) or by Windows get an ``roi_`` prefix; a clash with a name
    in ``taken`` (compared case-insensitively) gets ``_2``, ``_3``…; ``taken`` is updated. Stems
    are cut to :data:`MAX_STEM` characters, so a 10,000-character ROI name still makes a file name
    that every file system takes (255 bytes at most, with room for suffixes).
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")[:MAX_STEM] or "roi"
    if stem.lower() in _RESERVED:
        stem = f"roi_{stem}"
    taken = taken if taken is not None else set()
    candidate, n = stem, 2
    while candidate.lower() in taken:
        candidate = f"{stem}_{n}"
        n += 1
    taken.add(candidate.lower())
    return candidate


def convert(
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    rtstruct: str | os.PathLike[str] | None = None,
    seg: str | os.PathLike[str] | None = None,
    rois: Sequence[str] | None = None,
    overwrite: bool = False,
    series_uid: str | None = None,
    allow_non_ct: bool = False,
    allow_nonuniform: bool = False,
    check_intensity: bool = True,
    check_references: bool = True,
) -> dict[str, Path]:
    """Convert a CT and (optionally) its RTSTRUCT or SEG into ``ct.nii.gz`` + one mask per ROI.

    Args:
        input_path: DICOM series folder (or one of its files), or a NIfTI / NRRD / MHA volume.
        out_dir: output folder (created); receives ``ct.nii.gz`` and ``<roi>.nii.gz`` (names from
            :func:`safe_filename`), every mask on the CT's grid.
        rtstruct: RTSTRUCT whose ROIs to rasterise (mutually exclusive with ``seg``).
        seg: DICOM SEG whose segments to extract (resampled onto the CT grid when needed).
        rois: ROI / segment names or fnmatch patterns (case-insensitive); ``None`` = all.
        overwrite: replace existing output files (otherwise an existing file is an error, raised
            before anything is written).
        series_uid / allow_non_ct / allow_nonuniform: DICOM series options of
            :func:`~rrcunet.io.dicom_series.read_dicom_series`.
        check_intensity: refuse a CT whose values cannot be HU.
        check_references: refuse an RTSTRUCT drawn on another series or frame of reference.

    Returns:
        ``{"ct": path, <roi name>: path, ...}``.

    Example::

        convert("LUNG1-001/image", "out/LUNG1-001", rtstruct="LUNG1-001/mask_rtstruct/1-1.dcm",
                rois=["GTV*", "Lung*"])
    """
    if rtstruct is not None and seg is not None:
        raise InputError("convert: pass either an RTSTRUCT or a SEG file, not both")
    if rois is not None and rtstruct is None and seg is None:
        raise InputError("convert: ROI names were given but no --rtstruct or --seg file to take them from")
    out = Path(out_dir)
    dicom_options = {}
    if series_uid is not None:
        dicom_options["series_uid"] = series_uid
    if allow_non_ct:
        dicom_options["allow_non_ct"] = True
    if allow_nonuniform:
        dicom_options["allow_nonuniform"] = True
    ct = read_image(input_path, kind="image", check_intensity=check_intensity, **dicom_options)

    masks: dict[str, Volume] = {}
    if rtstruct is not None:
        masks = read_rtstruct(rtstruct, ct, rois=rois, check_references=check_references)
    elif seg is not None:
        masks = read_seg_segments(seg, reference=ct, segments=rois)

    taken: set[str] = {"ct"}
    plan: list[tuple[str, Volume, Path]] = [("ct", ct, out / "ct.nii.gz")]
    for name, vol in masks.items():
        plan.append((name, vol, out / f"{safe_filename(name, taken)}.nii.gz"))
    inputs = [p for p in (input_path, rtstruct, seg) if p is not None]
    for _, _, path in plan:  # refuse before writing anything
        check_output_path(path, inputs=inputs, overwrite=overwrite)
    remove_stale_temporaries(out)  # a killed earlier convert's half-written files
    written: dict[str, Path] = {}
    for name, vol, path in plan:
        written[name] = write_volume(vol, path, overwrite=overwrite)
        if name != "ct":
            logger.info("%s: %s (%d voxels, %.1f mL)", path.name, name, int(vol.array.sum()),
                        float(vol.array.sum()) * vol.geometry.voxel_volume_ml)
    logger.info("converted %s → %s (%d file(s))", input_path, out, len(written))
    return written
