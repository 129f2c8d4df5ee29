"""Importer for TCIA DICOM downloads (``nsclc``): NSCLC-Radiomics, NSCLC-Radiomics-Interobserver1 and
any tree of CT series with RTSTRUCT or DICOM-SEG contours.

Owns the scan of a DICOM tree (headers only), the pairing of every CT series with the contour
objects that reference it, the choice of the tumour and lung ROIs, and the per-case loader.

* **Tree.** Any depth and naming: the TCIA layout ``<patient>/<study>/<series>/*.dcm`` as well as a
  flat folder. Files that are not DICOM (licences, CSVs, the macOS ``._*`` forks) are ignored. Cases
  are grouped by PatientID.
* **Pairing.** An RTSTRUCT references its CT through
  ``ReferencedFrameOfReferenceSequence/RTReferencedStudySequence/RTReferencedSeriesSequence``; a SEG
  through ``ReferencedSeriesSequence``. A contour object naming the CT's SeriesInstanceUID belongs to
  it; one naming no series at all belongs to the CT of the same patient and FrameOfReferenceUID. A CT
  series that no contour object references is left out (listed as ignored); a patient with no
  referenced CT at all is reported as a skipped case.
* **Tumour ROI.** Default: the ROI named ``GTV-1`` (case-insensitive); when there is none, the ROI
  matching ``GTV-1*`` — several matches (e.g. the observers' ``GTV-1vis-1`` … in Interobserver1)
  are refused with their names, so the user picks one with ``rois=`` / ``--roi``. Explicit ``rois``
  (names or fnmatch patterns) select the union of every matching ROI (``--roi GTV-1 --roi GTV-2``).
  RTSTRUCTs are preferred over SEGs; the tumour must come from one contour object (several objects
  holding matches are refused, listing them).
* **Lung ROI.** From the same contour object, ROIs matching :data:`DEFAULT_LUNG_ROIS` (or ``lung_rois``),
  excluding margin structures (PTV/CTV/ITV/PRV…). By default they count only when they cover both
  lungs (a left and a right ROI, or one ``Lungs``-type ROI); otherwise the lung extractor is used.
  Radiotherapy lung contours exclude the tumour; :func:`~rrcunet.data.importers.base.compose_labels`
  puts it back into the lung region.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.data.importers.base import Discovery, LoadedCase, SourceCase, escape_pattern
from rrcunet.errors import InputError
from rrcunet.io.convert import safe_filename
from rrcunet.io.dicom_series import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASSES, walk_files
from rrcunet.io.image import read_image
from rrcunet.io.rtstruct import list_rois, read_rtstruct
from rrcunet.io.seg import list_segments, read_seg_segments

logger = logging.getLogger(__name__)

#: Default tumour ROI: this exact name, else the single ROI matching :data:`DEFAULT_TUMOUR_FALLBACK`.
DEFAULT_TUMOUR_ROI = "GTV-1"
DEFAULT_TUMOUR_FALLBACK = "GTV-1*"
#: Lung ROI names / fnmatch patterns tried by default (case-insensitive).
DEFAULT_LUNG_ROIS: tuple[str, ...] = (
    "Lung-Left", "Lung-Right", "Lung_Left", "Lung_Right", "Lung Left", "Lung Right", "Left Lung", "Right Lung",
    "Lung-L", "Lung-R", "Lung_L", "Lung_R", "LungL", "LungR", "Lung-Lt", "Lung-Rt", "Lung_Lt", "Lung_Rt",
    "Lung", "Lungs", "Lungs*", "Lung-Total", "Lung_Total", "Total-Lung", "Total_Lung", "Lungs-Total",
)
#: ROIs derived from the lungs minus a margin volume: their hole is larger than the GTV, so never lung GT.
_MARGIN_STRUCTURES = re.compile(r"ptv|ctv|itv|prv|avoid|ring|expand|\+\d|dose|opt", re.IGNORECASE)

_SCAN_TAGS = [
    "PatientID", "StudyInstanceUID", "StudyDate", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "SOPClassUID", "SOPInstanceUID", "Modality", "FrameOfReferenceUID", "Rows", "ImagePositionPatient",
    "ReferencedFrameOfReferenceSequence", "ReferencedSeriesSequence",
]
_CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")


@dataclass
class _CtSeries:
    uid: str
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    study_date: str
    series_number: int
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Annotation:
    path: Path
    kind: str  # "RTSTRUCT" or "SEG"
    patient_id: str
    sop_instance_uid: str
    series_uid: str
    ref_series: frozenset[str]
    ref_frames: frozenset[str]


def _patient_of(ds: Any, path: Path, src: Path) -> str:
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    rel = path.relative_to(src).parts
    return rel[0] if len(rel) > 1 else src.name


def _annotation(ds: Any, path: Path, kind: str, patient: str, refs: set[str], frames: set[str]) -> _Annotation:
    return _Annotation(path, kind, patient, str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
                       frozenset(refs), frozenset(frames))


def _scan(src: Path) -> tuple[dict[str, _CtSeries], list[_Annotation]]:
    """Headers of every DICOM file under ``src``: CT series and contour objects."""
    # lazy: pydicom costs ~0.15 s at start-up; only the NSCLC (DICOM) import needs it
    import pydicom

    series: dict[str, _CtSeries] = {}
    annotations: list[_Annotation] = []
    n_files = 0
    for path in walk_files(src):  # iterative: a deep folder tree is no RecursionError
        name = path.name
        if name.startswith(".") or name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
        except Exception as exc:  # any unreadable file is "not part of the tree"
            logger.debug("ignoring %s: not readable as DICOM (%s)", path, exc)
            continue
        n_files += 1
        sop = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", "") or "").upper()
        patient = _patient_of(ds, path, src)
        if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
            refs, frames = set(), set()
            for fr in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
                if fr.get("FrameOfReferenceUID"):
                    frames.add(str(fr.FrameOfReferenceUID))
                for st in fr.get("RTReferencedStudySequence", []) or []:
                    for se in st.get("RTReferencedSeriesSequence", []) or []:
                        if se.get("SeriesInstanceUID"):
                            refs.add(str(se.SeriesInstanceUID))
            annotations.append(_annotation(ds, path, "RTSTRUCT", patient, refs, frames))
        elif sop in SEG_SOP_CLASSES or modality == "SEG":
            refs = {str(se.SeriesInstanceUID) for se in ds.get("ReferencedSeriesSequence", []) or []
                    if se.get("SeriesInstanceUID")}
            frames = {str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set()
            annotations.append(_annotation(ds, path, "SEG", patient, refs, frames))
        elif (modality == "CT" or (not modality and sop in _CT_SOP_CLASSES)) and "Rows" in ds:
            uid = str(ds.get("SeriesInstanceUID", "") or f"<no SeriesInstanceUID: {path.parent}>")
            s = series.get(uid)
            if s is None:
                try:
                    number = int(ds.get("SeriesNumber", 0) or 0)
                except (TypeError, ValueError):
                    number = 0
                s = series[uid] = _CtSeries(uid, patient, str(ds.get("StudyInstanceUID", "")),
                                            str(ds.get("FrameOfReferenceUID", "")), str(ds.get("StudyDate", "")),
                                            number)
            s.files.append(path)
    logger.info("%s: %d DICOM file(s): %d CT series, %d RTSTRUCT and %d SEG file(s)", src, n_files, len(series),
                sum(a.kind == "RTSTRUCT" for a in annotations), sum(a.kind == "SEG" for a in annotations))
    if n_files == 0:
        raise InputError(
            f"{src}: no DICOM file found; expected a TCIA download tree (patient/study/series folders with the "
            "CT slices and an RTSTRUCT or SEG file)"
        )
    return series, annotations


# --------------------------------------------------------------------------------------------------
# ROI choice
# --------------------------------------------------------------------------------------------------
def _match(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n.lower(), p.lower()) for p in patterns)]


def select_tumour_rois(names: Sequence[str], rois: Sequence[str] | None, where: str) -> list[str]:
    """The tumour ROI names among ``names`` (see the module docstring for the default rule).

    Raises:
        InputError: the default rule finds several ``GTV-1*`` ROIs and no exact ``GTV-1``.
    """
    unique = list(dict.fromkeys(names))
    if rois is not None:
        return _match(unique, rois)
    exact = [n for n in unique if n.lower() == DEFAULT_TUMOUR_ROI.lower()]
    if exact:
        return exact
    hits = _match(unique, [DEFAULT_TUMOUR_FALLBACK])
    if len(hits) > 1:
        raise InputError(
            f"{where}: no ROI is named {DEFAULT_TUMOUR_ROI!r} and {len(hits)} match {DEFAULT_TUMOUR_FALLBACK!r} "
            f"({', '.join(repr(h) for h in hits)}), e.g. several observers' delineations; choose one with "
            f"--roi NAME (rois=[...]), e.g. --roi {hits[0]!r}"
        )
    return hits


def _side(name: str) -> str:
    low = name.lower()
    tokens = set(re.split(r"[^a-z]+", low))
    if "left" in low or tokens & {"l", "lt"} or low.endswith("l") and low[:-1].rstrip("-_ ") == "lung":
        return "left"
    if "right" in low or tokens & {"r", "rt"} or low.endswith("r") and low[:-1].rstrip("-_ ") == "lung":
        return "right"
    return "both"


def select_lung_rois(names: Sequence[str], lung_rois: Sequence[str] | None, exclude: Sequence[str],
                     where: str) -> list[str]:
    """The lung ROI names among ``names``; ``[]`` when they do not cover both lungs (default patterns only)."""
    unique = [n for n in dict.fromkeys(names) if n not in exclude]
    if lung_rois is not None:
        return _match(unique, lung_rois)
    hits = [n for n in _match(unique, DEFAULT_LUNG_ROIS) if not _MARGIN_STRUCTURES.search(n)]
    sides = {_side(n) for n in hits}
    if hits and not ("both" in sides or {"left", "right"} <= sides):
        logger.warning("%s: lung ROI(s) %s cover one side only; using the lung extractor instead", where, hits)
        return []
    return hits


def _roi_names(ann: _Annotation) -> list[str]:
    if ann.kind == "RTSTRUCT":
        return list_rois(ann.path)
    return list_segments(ann.path)


def _choose_annotation(annotations: Sequence[_Annotation], rois: Sequence[str] | None,
                       ct_where: str) -> tuple[_Annotation, list[str], list[str]]:
    """(contour object, its ROI names, tumour ROI names): RTSTRUCTs first, exactly one holding the tumour."""
    found: list[tuple[_Annotation, list[str], list[str]]] = []
    listing = []
    for ann in annotations:
        names = _roi_names(ann)
        listing.append(f"{ann.path.name} ({ann.kind}): {', '.join(repr(n) for n in names) or 'no ROI'}")
        hits = select_tumour_rois(names, rois, f"{ann.path}")
        if hits:
            found.append((ann, names, hits))
    wanted = f"--roi {' --roi '.join(rois)}" if rois is not None else f"the default {DEFAULT_TUMOUR_ROI!r}"
    if not found:
        raise InputError(
            f"{ct_where}: no ROI matches {wanted}; contour objects referencing this CT: {'; '.join(listing)}. "
            "Choose the tumour ROI with --roi NAME (names and patterns such as 'GTV*' ignore case)"
        )
    rt = [f for f in found if f[0].kind == "RTSTRUCT"]
    pool = rt or found
    if len(pool) > 1:
        raise InputError(
            f"{ct_where}: {len(pool)} contour objects hold a tumour ROI matching {wanted}: "
            + "; ".join(f"{a.path} ({', '.join(h)})" for a, _, h in pool)
            + ". Expected one: pass --roi with a name found in one of them only, or remove the others from SRC"
        )
    return pool[0]


# --------------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------------
def _load_case(src: Path, ct_series: _CtSeries, annotations: Sequence[_Annotation], rois: Sequence[str] | None,
               lung_rois: Sequence[str] | None) -> LoadedCase:
    folder = Path(os.path.commonpath([str(f.parent) for f in ct_series.files]))
    ct_where = f"CT series {ct_series.uid} in {folder}"
    ann, names, tumour_names = _choose_annotation(annotations, rois, ct_where)
    lung_names = select_lung_rois(names, lung_rois, tumour_names, str(ann.path))
    ct = read_image(folder, kind="image", series_uid=ct_series.uid)
    wanted = [escape_pattern(n) for n in tumour_names + lung_names]
    if ann.kind == "RTSTRUCT":
        read = read_rtstruct(ann.path, ct, rois=wanted)
        name_key = "roi_name"
    else:
        read = read_seg_segments(ann.path, reference=ct, segments=wanted)
        name_key = "segment_label"
    masks: dict[str, np.ndarray] = {}
    for v in read.values():  # ROIs sharing a name (keys "name#number") are combined
        name = v.meta[name_key]
        on = np.asarray(v.array) > 0
        masks[name] = on if name not in masks else (masks[name] | on)
    tumour = np.zeros(ct.shape, dtype=bool)
    for n in tumour_names:
        tumour |= masks[n]
    lung = None
    if lung_names:
        lung = np.zeros(ct.shape, dtype=bool)
        for n in lung_names:
            lung |= masks[n]
    info = ct.meta.get("dicom")
    provenance: dict[str, Any] = {
        "dataset": "nsclc",
        "source_root": str(src),
        "image": str(folder),
        "label": str(ann.path),
        "annotation_kind": ann.kind,
        "tumour_rois": list(tumour_names),
        "lung_rois": list(lung_names),
        "dicom": {
            "patient_id": ct_series.patient_id,
            "study_uid": ct_series.study_uid,
            "series_uid": ct_series.uid,
            "frame_of_reference_uid": getattr(info, "frame_of_reference_uid", ct_series.frame_of_reference_uid),
            "annotation_sop_instance_uid": ann.sop_instance_uid,
            "annotation_series_uid": ann.series_uid,
        },
    }
    return LoadedCase(ct=ct, tumour=tumour, lung=lung, provenance=provenance)


def _missing_case(message: str) -> LoadedCase:
    raise InputError(message)


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------
def discover_nsclc(src: Path, rois: Sequence[str] | None = None,
                   lung_rois: Sequence[str] | None = None) -> Discovery:
    """Cases of a TCIA DICOM tree: one per CT series that an RTSTRUCT or SEG references.

    Case id = PatientID (made file-safe), with ``_1``, ``_2``… (by study date, series number) when a
    patient has several referenced CT series; the patient id groups them in the split.
    """
    series, annotations = _scan(src)
    by_series: dict[str, list[_Annotation]] = {uid: [] for uid in series}
    ignored: list[tuple[str, str]] = []
    for ann in annotations:
        targets = [uid for uid in ann.ref_series if uid in series]
        if not targets and not ann.ref_series:
            targets = [uid for uid, s in series.items()
                       if s.patient_id == ann.patient_id and s.frame_of_reference_uid in ann.ref_frames]
        if not targets:
            ignored.append((str(ann.path), f"{ann.kind} references CT series {sorted(ann.ref_series) or '?'} "
                                           f"(frame of reference {sorted(ann.ref_frames) or '?'}), not found in SRC"))
        for uid in targets:
            by_series[uid].append(ann)
    for anns in by_series.values():
        anns.sort(key=lambda a: (a.kind != "RTSTRUCT", str(a.path)))

    patients: dict[str, list[_CtSeries]] = {}
    for s in series.values():
        patients.setdefault(s.patient_id, []).append(s)
    cases: list[SourceCase] = []
    taken: set[str] = set()
    for pid in sorted(patients):
        all_series = sorted(patients[pid], key=lambda s: (s.study_date, s.series_number, s.uid))
        annotated = [s for s in all_series if by_series[s.uid]]
        for s in all_series:
            if not by_series[s.uid] and annotated:
                ignored.append((str(s.files[0].parent), f"CT series {s.uid} of patient {pid}: no RTSTRUCT or SEG "
                                                        "references it"))
        base = safe_filename(pid)
        if not annotated:
            case_id = safe_filename(base, taken)
            folders = sorted({str(f.parent) for s in all_series for f in s.files})
            message = (f"patient {pid}: no RTSTRUCT or SEG file references its CT series "
                       f"({', '.join(s.uid for s in all_series)}) in {', '.join(folders)}; expected the contour file "
                       "of the download in a sibling series folder")
            cases.append(SourceCase(case_id=case_id, patient=pid, files=tuple(folders),
                                    load=lambda message=message: _missing_case(message)))
            continue
        for k, s in enumerate(annotated, start=1):
            case_id = safe_filename(base if len(annotated) == 1 else f"{base}_{k}", taken)
            anns = by_series[s.uid]
            files = (str(s.files[0].parent),) + tuple(str(a.path) for a in anns)
            cases.append(SourceCase(
                case_id=case_id, patient=pid, files=files,
                load=lambda s=s, anns=anns: _load_case(src, s, anns, rois, lung_rois),
            ))
    if not series:
        raise InputError(
            f"{src}: holds DICOM files but no CT series; expected CT slices with their RTSTRUCT or SEG"
        )
    tumour = ", ".join(rois) if rois else DEFAULT_TUMOUR_ROI
    return Discovery(cases=tuple(cases), ignored=tuple(ignored),
                     description=f"TCIA DICOM tree {src} (tumour ROI {tumour})")
