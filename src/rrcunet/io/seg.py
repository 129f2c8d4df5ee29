"""DICOM Segmentation (SEG) objects ↔ label volumes, through highdicom.

Owns :func:`list_segments`, :func:`read_seg_segments` (one 0/1 volume per segment),
:func:`read_seg` (one label map, segment → label value) and :func:`write_seg` (a label volume as
a BINARY SEG referencing its source CT series, with coded concepts for lung and tumour).

highdicom resolves the frame geometry (``Segmentation.get_volume``); we convert its
``(slice, row, column)`` volume and affine to our ``[x, y, z]`` :class:`~rrcunet.io.volume.Volume` with
k along the slice normal (row × column), the convention of every other reader here.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet import __version__
from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path, check_output_path
from rrcunet.io.dicom_series import (
    SEG_SOP_CLASSES,
    DicomSeriesInfo,
    dcmread_checked,
    load_series_datasets,
    series_geometry,
    zyx_copy,
)
from rrcunet.io.rtstruct import ROI_COLOURS, match_rois
from rrcunet.io.validation import to_label_array
from rrcunet.io.volume import Geometry, Volume

logger = logging.getLogger(__name__)


def _segread(path: str | os.PathLike[str]) -> Any:
    # lazy: highdicom (with pydicom) costs ~0.2 s at start-up; only DICOM SEG input needs it
    import highdicom as hd

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; expected a DICOM SEG file")
    try:
        ds = dcmread_checked(p, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM file ({exc}); expected a DICOM SEG") from None
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in SEG_SOP_CLASSES:
        name = getattr(getattr(ds, "SOPClassUID", None), "name", sop) or "unknown"
        raise InputError(f"{p}: is a {name} object (SOPClassUID {sop}); expected a DICOM Segmentation (SEG)")
    if not ds.get("SegmentSequence"):
        raise InputError(
            f"{p}: the SEG holds zero segments (empty SegmentSequence); expected at least one segment. "
            "The file was written without any label: re-export it"
        )
    try:
        return hd.seg.segread(p)
    except Exception as exc:  # highdicom raises ValueError/AttributeError/KeyError on malformed SEGs
        raise InputError(f"{p}: highdicom cannot parse this SEG ({type(exc).__name__}: {exc})") from None


def list_segments(path: str | os.PathLike[str]) -> list[str]:
    """Segment labels of a SEG file, ordered by segment number (background of a LABELMAP SEG excluded)."""
    seg = _segread(path)
    return [str(d.SegmentLabel) for d in sorted(seg.SegmentSequence, key=lambda d: int(d.SegmentNumber))
            if int(d.SegmentNumber) > 0]


def _from_highdicom(volume: Any) -> tuple[np.ndarray, Geometry]:
    """highdicom ``(slice, row, col[, channel])`` volume → our ``[x, y, z, ...]`` array and Geometry."""
    a = np.asarray(volume.affine, dtype=np.float64)
    arr = np.asarray(volume.array)
    arr = np.moveaxis(arr, (0, 1, 2), (2, 1, 0))  # [col, row, slice, ...]
    cols = a[:3, [2, 1, 0]]
    spacing = np.linalg.norm(cols, axis=0)
    rot = cols / spacing
    origin = a[:3, 3].copy()
    if np.dot(np.cross(rot[:, 0], rot[:, 1]), rot[:, 2]) < 0:
        arr = arr[:, :, ::-1]
        origin = origin + cols[:, 2] * (arr.shape[2] - 1)
        rot[:, 2] = -rot[:, 2]
    arr = np.ascontiguousarray(arr)
    return arr, Geometry(arr.shape[:3], tuple(spacing), tuple(origin), tuple(rot.ravel()))


def _resample_nearest(mask: np.ndarray, geometry: Geometry, reference: Geometry) -> np.ndarray:
    # lazy: SimpleITK costs ~0.05 s at start-up; only a SEG off the reference grid needs it
    import SimpleITK as sitk

    src = Volume(mask, geometry, "label").to_sitk()
    ref = Volume(np.zeros(reference.shape, np.uint8), reference, "label").to_sitk()
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, src.GetPixelID())
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def read_seg_segments(
    path: str | os.PathLike[str],
    *,
    reference: Volume | None = None,
    segments: Sequence[str] | None = None,
) -> dict[str, Volume]:
    """One 0/1 label volume per segment of a DICOM SEG.

    Args:
        path: the SEG file.
        reference: resample (nearest neighbour) every mask onto this volume's grid — e.g. the CT
            the SEG was drawn on, when the SEG omits empty frames. Refused when both carry DICOM
            frame-of-reference UIDs that differ.
        segments: segment labels or fnmatch patterns (case-insensitive); ``None`` = all.

    Returns:
        ``{segment_label: Volume}`` by segment number (duplicate labels get a ``#<number>`` suffix);
        ``meta`` holds ``segment_number``, ``segment_label`` and ``source``.

    Raises:
        InputError: not a SEG, zero segments, no segment matching, another frame of reference.
    """
    seg = _segread(path)
    p = Path(path)
    descs = sorted((d for d in seg.SegmentSequence if int(d.SegmentNumber) > 0), key=lambda d: int(d.SegmentNumber))
    if not descs:
        raise InputError(f"{p}: the SEG holds zero segments besides background; expected at least one segment")
    labels = [str(d.SegmentLabel) for d in descs]
    numbers = [int(d.SegmentNumber) for d in descs]
    chosen_labels = set(match_rois(list(dict.fromkeys(labels)), segments, p))
    keep = [(n, lab) for n, lab in zip(numbers, labels) if lab in chosen_labels]
    if reference is not None:
        info = reference.meta.get("dicom")
        seg_for = str(seg.get("FrameOfReferenceUID", ""))
        if isinstance(info, DicomSeriesInfo) and seg_for and info.frame_of_reference_uid and \
                seg_for != info.frame_of_reference_uid:
            raise InputError(
                f"{p}: the SEG has FrameOfReferenceUID {seg_for}, but the reference CT {info.folder} has "
                f"{info.frame_of_reference_uid}; expected the same frame of reference. Pass the CT the SEG was "
                "drawn on"
            )
    try:
        hvol = seg.get_volume(segment_numbers=[n for n, _ in keep], combine_segments=False)
    except Exception as exc:
        raise InputError(
            f"{p}: cannot arrange the SEG frames into a 3D volume ({type(exc).__name__}: {exc}); expected "
            "parallel, evenly spaced frames"
        ) from None
    arr, geometry = _from_highdicom(hvol)
    if arr.ndim == 3:
        arr = arr[..., None]
    out: dict[str, Volume] = {}
    for c, (n, lab) in enumerate(keep):
        channel = arr[..., c]
        # FRACTIONAL SEGs come back as probabilities/occupancies in [0, 1]: inside = at least half
        mask = ((channel >= 0.5) if channel.dtype.kind == "f" else (channel > 0)).astype(np.uint8)
        geom = geometry
        if reference is not None and not geometry.same_grid(reference.geometry):
            mask = _resample_nearest(mask, geometry, reference.geometry)
            geom = reference.geometry
        key = lab if labels.count(lab) == 1 else f"{lab}#{n}"
        out[key] = Volume(mask, geom, "label", {"source": str(p), "segment_number": n, "segment_label": lab})
    return out


def read_seg(
    path: str | os.PathLike[str],
    *,
    reference: Volume | None = None,
    label_values: Mapping[int | str, int] | None = None,
) -> Volume:
    """A DICOM SEG as one integer label map.

    Args:
        path: the SEG file.
        reference: resample onto this volume's grid (see :func:`read_seg_segments`).
        label_values: segment number or segment label (case-insensitive) → label value; segments not
            listed are dropped. Default: segment number n → label n.

    Raises:
        InputError: overlapping segments (a label map cannot hold them: use
            :func:`read_seg_segments`), plus the errors of :func:`read_seg_segments`.

    Example::

        label = read_seg("pred_seg.dcm", reference=ct, label_values={"Lung": 1, "Tumour": 2})
    """
    masks = read_seg_segments(path, reference=reference)
    lut: dict[int, int] = {}
    for vol in masks.values():
        n, lab = vol.meta["segment_number"], vol.meta["segment_label"]
        if label_values is None:
            lut[n] = n
            continue
        for key, value in label_values.items():
            if (isinstance(key, int) and key == n) or (isinstance(key, str) and key.lower() == lab.lower()):
                lut[n] = int(value)
    if not lut:
        raise InputError(
            f"{path}: none of the segments {[v.meta['segment_label'] for v in masks.values()]} is listed in "
            f"label_values {dict(label_values or {})}; expected at least one match"
        )
    first = next(iter(masks.values()))
    out = np.zeros(first.shape, dtype=np.int32)
    owner = np.zeros(first.shape, dtype=np.int32)
    for vol in masks.values():
        n = vol.meta["segment_number"]
        if n not in lut:
            continue
        on = vol.array > 0
        clash = on & (owner > 0) & (out != lut[n])
        if clash.any():
            other = int(np.bincount(owner[clash]).argmax())
            raise InputError(
                f"{path}: segments {other} and {n} overlap on {int(clash.sum()):,} voxels with different label "
                "values; a label map cannot hold overlapping segments. Use read_seg_segments() for one mask per "
                "segment, or map both to the same value"
            )
        out[on] = lut[n]
        owner[on] = n
    return Volume(to_label_array(out, path), first.geometry, "label",
                  {"source": str(path), "segments": {v.meta["segment_label"]: lut.get(v.meta["segment_number"])
                                                     for v in masks.values()}})


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def _coded_concepts(name: str) -> tuple[Any, Any]:
    """(property category, property type) SNOMED CT codes for a segment name."""
    # lazy: pydicom costs ~0.15 s at start-up; only writing a SEG needs it
    from pydicom.sr.codedict import codes

    low = name.lower()
    if "lung" in low:
        return codes.SCT.AnatomicalStructure, codes.SCT.Lung
    if any(t in low for t in ("tumour", "tumor", "gtv", "neoplasm", "nodule", "lesion", "cancer")):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_seg(
    label_volume: Volume,
    source_ct: DicomSeriesInfo | str | os.PathLike[str] | Sequence[Any],
    out_path: str | os.PathLike[str],
    *,
    segment_labels: Mapping[int, str] | None = None,
    algorithm_name: str | None = "rrcunet",
    series_description: str = "rrcunet segmentation",
    overwrite: bool = False,
) -> Path:
    """Write a label volume as a BINARY DICOM SEG referencing its source CT series (highdicom).

    Args:
        label_volume: integer label map on the source CT grid (same shape, spacing, origin, direction).
        source_ct: the CT series: ``ct.meta["dicom"]`` (a :class:`DicomSeriesInfo`), its folder, or its
            files / pydicom datasets (e.g. the list :func:`write_ct_series` returns).
        out_path: the SEG file (written atomically).
        segment_labels: label value → segment label; default ``{1: "Lung", 2: "Tumour"}``. Lung
            segments are coded SCT 91723000 "Anatomical Structure" / 39607008 "Lung"; tumour names
            (tumour, tumor, GTV, …) SCT 49755003 "Morphologically Abnormal Structure" / 108369006
            "Neoplasm"; others "Tissue".
        algorithm_name: AUTOMATIC segmentation by this algorithm; ``None`` writes MANUAL segments.
        series_description: SeriesDescription of the SEG.
        overwrite: replace an existing file.

    Returns:
        ``Path(out_path)``.

    Raises:
        InputError: label grid ≠ CT grid, label values without a segment label, empty label map.
    """
    # lazy: highdicom (with pydicom) costs ~0.2 s at start-up; only writing a SEG needs it
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    out_p = check_output_path(out_path, overwrite=overwrite)
    segment_labels = dict(segment_labels or {1: "Lung", 2: "Tumour"})
    if any(int(v) <= 0 for v in segment_labels):
        raise InputError(f"write_seg: segment_labels keys must be positive label values, not {sorted(segment_labels)}")
    sources = load_series_datasets(source_ct, stop_before_pixels=True)
    geom = series_geometry(sources, "source CT")
    if not geom.same_grid(label_volume.geometry):
        raise InputError(
            f"{out_p}: the label volume ({label_volume.geometry.describe()}) is not on the source CT grid "
            f"({geom.describe()}); expected the CT's own grid. Resample the labels onto the CT first"
        )
    labels = np.asarray(label_volume.array)
    if not np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        if labels.size and not np.array_equal(labels, np.rint(labels)):
            raise InputError(f"{out_p}: the label map holds non-integer values ({labels.dtype}); expected integer "
                             "label values")
        labels = labels.astype(np.int64)
    values = sorted(segment_labels)
    # label value -> segment number through a lookup table, on the array's own layout (comparing the
    # transposed view value by value, and np.unique, were the slow part of writing a SEG)
    top = int(labels.max()) if labels.size else 0
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and int(labels.min()) < 0:
        raise InputError(f"{out_p}: the label map has negative values; expected label values >= 0")
    if values == list(range(1, len(values) + 1)) and top <= len(values):
        # value n is segment n (predict's 1 = lung, 2 = tumour) and every value present has a name:
        # no lookup, no search for unnamed values (issue 23: ``python benchmarks/dicom_io_speed.py``,
        # alternating with the code before, twice: the SEG of LUNG1-001 0.353 and 0.380 s against 0.480
        # and 0.494 s)
        numbers = labels if labels.dtype == np.uint8 else labels.astype(np.uint8)
        unnamed_voxels = None
    else:
        lut = np.zeros(max(top, max(values)) + 1, dtype=np.uint8)
        for number, value in enumerate(values, start=1):
            lut[value] = number
        numbers = lut[labels]
        unnamed_voxels = (labels != 0) & (numbers == 0)
    if unnamed_voxels is not None and unnamed_voxels.any():
        unnamed = sorted(int(v) for v in np.unique(labels[unnamed_voxels]))
        raise InputError(
            f"{out_p}: label values {unnamed} have no segment label (segment_labels={segment_labels}); expected "
            "a name for every non-zero label value"
        )
    pixel = zyx_copy(numbers)  # (slices, rows, cols)
    if algorithm_name:
        algo = hd.AlgorithmIdentificationSequence(name=algorithm_name, version=__version__,
                                                  family=pydicom.sr.codedict.codes.DCM.ArtificialIntelligence)
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, ptype = _coded_concepts(segment_labels[value])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment_labels[value],
            segmented_property_category=category,
            segmented_property_type=ptype,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm_name
            else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            algorithm_identification=algo if algorithm_name else None,
            # the RTSTRUCT writer's colour of the same ROI, so both outputs look alike in a viewer
            display_color=hd.color.CIELabColor.from_rgb(*ROI_COLOURS[(number - 1) % len(ROI_COLOURS)]),
        ))
    try:
        with warnings.catch_warnings():
            # the source's PatientName (e.g. "LUNG1-001") is copied as it is; highdicom's style hint about it is noise
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=pixel,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=generate_uid(),
                series_number=900,
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer="rrcunet",
                manufacturer_model_name="rrcunet",
                software_versions=__version__,
                device_serial_number="0",
                series_description=series_description,
                omit_empty_frames=False,
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{out_p}: highdicom refused to build the SEG ({exc})") from None
    src0 = sources[0]
    if str(getattr(seg, "PatientIdentityRemoved", "")).upper() == "YES":
        # copied from the source by highdicom; then a method is required (Type 1C). TCIA's LUNG1-001 states
        # YES without one, which dciodvfy reports as an error in every object derived from it.
        if "DeidentificationMethodCodeSequence" in src0:
            seg.DeidentificationMethodCodeSequence = src0.DeidentificationMethodCodeSequence
        seg.DeidentificationMethod = str(src0.get("DeidentificationMethod") or "as stated by the source CT series")
    with atomic_path(out_p) as tmp:
        seg.save_as(tmp)
    logger.info("wrote SEG %s (%d segments: %s)", out_p, len(values), [segment_labels[v] for v in values])
    return out_p
