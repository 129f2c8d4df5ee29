"""``rrcunet convert``: a CT (DICOM folder or any volume file) plus its contours → NIfTI files.

Owns :func:`convert`, the library function behind the CLI command, and :func:`safe_filename`.
Everything is read, rasterised and validated *before* the first file is written, and every file is
written atomically, so a failure never leaves a half-converted case behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_write_text, check_output_path, remove_stale_temporaries
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
    settings = {"input": str(Path(input_path).resolve()), "rtstruct": str(Path(rtstruct).resolve()) if rtstruct else None,
                "seg": str(Path(seg).resolve()) if seg else None, "rois": list(rois) if rois is not None else None}
    ours = _unfinished_outputs(out, settings)  # a killed run of this same conversion: its files may be replaced
    for _, _, path in plan:  # refuse before writing anything
        check_output_path(path, inputs=inputs, overwrite=overwrite or path.name in ours)
    remove_stale_temporaries(out)  # a killed earlier convert's half-written files
    record = {"schema": "rrcunet-convert", "settings": settings, "outputs": [p.name for _, _, p in plan]}
    atomic_write_text(out / RECORD, json.dumps({**record, "status": "started"}, indent=1))
    written: dict[str, Path] = {}
    for name, vol, path in plan:
        written[name] = write_volume(vol, path, overwrite=overwrite or path.name in ours)
        if name != "ct":
            logger.info("%s: %s (%d voxels, %.1f mL)", path.name, name, int(vol.array.sum()),
                        float(vol.array.sum()) * vol.geometry.voxel_volume_ml)
    (out / RECORD).unlink(missing_ok=True)  # finished: the folder holds the outputs only
    logger.info("converted %s → %s (%d file(s))", input_path, out, len(written))
    return written


#: convert's record in its output folder while it writes: what it is converting ("started"); removed when
#: it finishes. A rerun of the same conversion after a kill finds it and replaces that run's files without
#: --overwrite.
RECORD = ".rrcunet-convert.json"


def _unfinished_outputs(out: Path, settings: dict[str, Any]) -> set[str]:
    """Names of the outputs a killed earlier run of the same conversion (same inputs and ROIs) left in ``out``."""
    try:
        doc = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(doc, dict) or doc.get("status") != "started" or doc.get("settings") != settings:
        return set()
    return {str(n) for n in doc.get("outputs", []) if isinstance(n, str)}
