"""Batch prediction: discover cases in files and folders, predict each, write its outputs.

Owns :func:`discover_cases` (which inputs are cases, and their ids), :func:`predict_paths` (the
loop behind ``rrcunet predict``: one model load, a progress bar, resumable, a bad case reported
and skipped) and the output files of one case (:func:`write_case_outputs`, :func:`case_outputs`).

Outputs of case ``<case>`` in ``OUT_DIR`` (schema of the JSON in docs/inference.md):

* ``<case>_seg.nii.gz``: the label map (0 background, 1 lung, 2 tumour; uint8) on exactly the
  input's grid (shape, spacing, origin, direction);
* ``<case>_prob_<class>.nii.gz`` (``save_probabilities``): float32 probability of each
  non-background class (``lung``, ``tumour``) on the same grid; background is 1 − their sum;
* ``<case>_seg.dcm`` (DICOM input): a DICOM SEG (segments "Lung" and "Tumour") referencing the
  source series; ``<case>_rtstruct.dcm`` (DICOM input and ``rtstruct``): the same as RTSTRUCT contours;
* ``<case>.json``: measurements, runtimes, model hash and version, options — written **last**, so
  a case is complete exactly when its JSON exists with every output it lists. Every file is
  written atomically (temporary file renamed into place).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from rrcunet import __version__, heap
from rrcunet.errors import ConfigError, InputError, RRcUNetError
from rrcunet.inference.predictor import PredictionResult, Predictor, PreparedCase
from rrcunet.io import read_image, write_rtstruct, write_seg, write_volume
from rrcunet.io.atomic import atomic_path, atomic_write_text, folder_lock, json_safe, remove_stale_temporaries
from rrcunet.io.convert import safe_filename
from rrcunet.io.dicom_series import list_dicom_series
from rrcunet.io.dicom_series import walk_files
from rrcunet.io.image import ITK_SUFFIXES, image_suffix, is_dicom_file, read_image_size
from rrcunet.io.volume import Geometry, Volume

logger = logging.getLogger(__name__)

SCHEMA = "rrcunet-prediction"
SCHEMA_VERSION = 1
#: Folder names too generic to name a case: ``LUNG1-001/image`` becomes ``LUNG1-001_image``.
GENERIC_FOLDER_NAMES = frozenset({"image", "images", "ct", "dicom", "series", "scan", "data", "input", "img"})
_OUTPUT_NAME = re.compile(r"(_seg|_prob_[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class CaseInput:
    """One case found by :func:`discover_cases`: its id, the path to read, and whether it is DICOM."""

    case_id: str
    path: Path
    is_dicom: bool
    series_uid: str | None = None
    n_slices: int | None = None  # DICOM: files of the series (known at discovery); images: read on demand


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case: ``status`` is ``"done"``, ``"skipped"`` (already complete) or ``"failed"``."""

    case_id: str
    path: Path
    status: str
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchReport:
    """All outcomes of :func:`predict_paths`, in input order."""

    out_dir: Path
    outcomes: list[CaseOutcome]

    def _of(self, status: str) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[CaseOutcome]:
        return self._of("done")

    @property
    def skipped(self) -> list[CaseOutcome]:
        return self._of("skipped")

    @property
    def failed(self) -> list[CaseOutcome]:
        return self._of("failed")


# ---------------------------------------------------------------------------------------------
# discovery


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in (".dcm", ".ima", ".dicom") or is_dicom_file(path)


def _has_dicom(folder: Path, *, recursive: bool) -> bool:
    files = walk_files(folder) if recursive else folder.iterdir()
    return any(p.is_file() and not p.name.startswith(".") and _is_dicom(p) for p in files)


#: The longest case id: its outputs (``<case>_prob_<64-character class>.nii.gz``) and their temporaries
#: stay within the 255 bytes a file name may have.
MAX_CASE_ID = 120


def _clean_id(name: str) -> str:
    """A file-safe case id; a longer one than :data:`MAX_CASE_ID` keeps its start and gets a hash of the rest."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._") or "case"
    if len(clean) > MAX_CASE_ID:
        clean = f"{clean[:MAX_CASE_ID - 9]}-{hashlib.sha1(clean.encode()).hexdigest()[:8]}"
    return clean


def _file_case_id(path: Path) -> str:
    suffix = image_suffix(path) or path.suffix
    return _clean_id(path.name[: len(path.name) - len(suffix)] if suffix else path.name)


def _folder_case_id(folder: Path) -> str:
    folder = folder.resolve()
    if folder.name.lower() in GENERIC_FOLDER_NAMES and folder.parent.name:
        return _clean_id(f"{folder.parent.name}_{folder.name}")
    return _clean_id(folder.name)


def _dicom_cases(folder: Path, *, recursive: bool, only: Path | None = None) -> list[CaseInput]:
    """One case per image series under ``folder``; RTSTRUCT, SEG and other non-image series are skipped with
    a note. A CT series is named by its PatientID (another modality's gets ``_<modality>``, and fails later
    with its reason), with ``_1``, ``_2``… by study date and series number when a patient has several
    (as ``rrcunet import`` names them); by its folder when the PatientID is empty. ``only``: just the
    series holding this file."""
    series = list_dicom_series(folder, recursive=recursive)
    if only is not None:
        series = [s for s in series if str(only) in s.files]
    for s in series:
        if not s.is_image:
            logger.info("%s: skipped %s: not an image series", Path(s.files[0]).parent, s.describe())
    by_patient: dict[tuple[str, str], list[Any]] = {}
    for s in series:
        if s.is_image:  # a non-CT image series stays a case, and fails with its reason
            by_patient.setdefault((s.patient_id, s.modality), []).append(s)
    cases = []
    for (pid, modality), group in sorted(by_patient.items()):
        group.sort(key=lambda s: (s.study_date, s.series_number, s.series_uid))
        for k, s in enumerate(group, start=1):
            where = Path(os.path.commonpath([str(Path(f).parent) for f in s.files]))
            base = safe_filename(pid) if pid else _folder_case_id(where)
            base = base if modality == "CT" else f"{base}_{_clean_id(modality or 'image')}"
            uid = None if s.series_uid.startswith("<") else s.series_uid  # "<no SeriesInstanceUID ...>"
            cases.append(CaseInput(base if len(group) == 1 else f"{base}_{k}", where, True, uid, len(s.files)))
    return cases


def _discover_one(path: Path) -> list[CaseInput]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if not path.is_file() and not path.is_dir():  # read before any byte: a FIFO would block the batch
        raise InputError(f"{path}: not a regular file (a pipe, device or socket); expected an image file or a "
                         "DICOM folder")
    if path.is_file():
        if image_suffix(path):
            return [CaseInput(_file_case_id(path), path, False)]
        if _is_dicom(path):
            return _dicom_cases(path.parent, recursive=False, only=path)
        raise InputError(f"{path}: not an image file (expected {', '.join(ITK_SUFFIXES)}, a DICOM file or a folder)")
    if (path / "manifest.json").is_file() and (path / "images").is_dir():  # a prepared dataset
        return _discover_one(path / "images")
    children = [c for c in sorted(path.iterdir()) if not c.name.startswith(".") and image_suffix(c)]
    odd = [c.name for c in children if not c.is_file() and not c.is_dir()]
    if odd:
        logger.warning("%s: skipped %d entr%s named like images that are not regular files (pipes, devices or "
                       "sockets): %s", path, len(odd), "y" if len(odd) == 1 else "ies", ", ".join(odd[:5]))
    cases = [CaseInput(_file_case_id(child), child, False) for child in children if child.is_file()]
    if _has_dicom(path, recursive=True):
        cases += _dicom_cases(path, recursive=True)
    if not cases:
        raise InputError(f"{path}: found no case: expected image files ({', '.join(ITK_SUFFIXES)}), DICOM files, "
                         "or sub-folders holding DICOM series")
    return cases


def discover_cases(inputs: Iterable[str | os.PathLike[str]]) -> list[CaseInput]:
    """Find the cases in files and folders, in the order given (folders sorted by name).

    Rules (docs/inference.md, "Inputs"):

    * a file with an image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) is a
      case named by its file name without suffix;
    * a DICOM file stands for its series; a folder that directly holds DICOM files is one DICOM
      case named after the folder (``<parent>_<folder>`` for generic names such as ``image``, ``ct``,
      ``dicom``);
    * a prepared dataset folder (``manifest.json`` + ``images/``) means its ``images/``;
    * any other folder: each image file in it is a case, and each sub-folder that contains DICOM files
      (at any depth) is one case named after the sub-folder.

    Raises:
        InputError: a path does not exist, a folder holds no case, or two inputs give the same
            case id (the message names both paths).
    """
    found: list[CaseInput] = []
    for inp in inputs:
        found.extend(_discover_one(Path(inp)))
    seen: dict[str, CaseInput] = {}
    unique = []
    for case in found:
        if case.case_id in seen:
            if Path(seen[case.case_id].path).resolve() == Path(case.path).resolve():
                continue  # the same input given twice
            raise InputError(f"two inputs give the case id {case.case_id!r}: {seen[case.case_id].path} and {case.path}; "
                             "rename one, or predict them into different output folders")
        seen[case.case_id] = case
        unique.append(case)
    return unique


# ---------------------------------------------------------------------------------------------
# parts of a cohort (several processes, GPUs or nodes)


def case_slices(case: CaseInput) -> int:
    """Slices of a case, for balancing parts: the series' file count for DICOM, the image header's last
    dimension otherwise (:func:`rrcunet.io.image.read_image_size`, the header only); 1 when it cannot be read (the case
    then fails in its part with its own message)."""
    if case.n_slices is not None:
        return max(1, int(case.n_slices))
    size = read_image_size(case.path)
    return max(1, size[2]) if size is not None and len(size) > 2 else 1


def split_parts(cases: Sequence[CaseInput], num_parts: int) -> list[list[CaseInput]]:
    """Split cases into ``num_parts`` parts with balanced slice totals, the same in every process.

    Greedy "largest first": cases sorted by slices (most first, then case id) go one by one to the
    part with the fewest slices so far (the lowest part number on a tie). Every process that
    discovers the same inputs computes the same parts, so parts never share a case. Within a part,
    cases keep the discovery order.
    """
    if not isinstance(num_parts, int) or isinstance(num_parts, bool) or num_parts < 1:
        raise InputError(f"--num-parts {num_parts!r}: expected a whole number >= 1")
    order = {c.case_id: i for i, c in enumerate(cases)}
    totals = [0] * num_parts
    members: list[list[CaseInput]] = [[] for _ in range(num_parts)]
    slices = {c.case_id: case_slices(c) for c in cases}  # one header read per case
    for case in sorted(cases, key=lambda c: (-slices[c.case_id], c.case_id)):
        k = min(range(num_parts), key=lambda j: (totals[j], j))
        totals[k] += slices[case.case_id]
        members[k].append(case)
    return [sorted(m, key=lambda c: order[c.case_id]) for m in members]


def select_part(cases: Sequence[CaseInput], num_parts: int, part_id: int) -> list[CaseInput]:
    """Part ``part_id`` (0-based) of :func:`split_parts`."""
    if not isinstance(part_id, int) or isinstance(part_id, bool) or not 0 <= part_id < max(1, num_parts):
        raise InputError(f"--part-id {part_id!r} with --num-parts {num_parts}: expected 0 to {num_parts - 1}")
    return split_parts(cases, num_parts)[part_id]


def part_from_environment(num_parts: int | None, part_id: int | None) -> tuple[int, int]:
    """``(num_parts, part_id)``: as given, else from torchrun's ``WORLD_SIZE`` / ``RANK``, else ``(1, 0)``."""
    if num_parts is not None or part_id is not None:
        if num_parts is None or part_id is None:
            raise InputError("--num-parts and --part-id go together (e.g. --num-parts 4 --part-id 0)")
        return num_parts, part_id
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
    if world is not None and rank is not None:
        try:
            return int(world), int(rank)
        except ValueError:
            raise InputError(f"WORLD_SIZE={world!r} / RANK={rank!r} are not whole numbers; run under torchrun, or "
                             "pass --num-parts N --part-id I") from None
    return 1, 0


#: A failed case's record, next to where its JSON would be; removed when the case later succeeds.
FAILED_SUFFIX = ".failed.json"


def _record_failure(out_dir: Path, outcome: CaseOutcome) -> None:
    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "case": outcome.case_id, "status": "failed",
           "input": str(outcome.path), "error": outcome.message, "seconds": outcome.seconds,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(OSError):  # the failure is reported anyway; the record is for `rrcunet cohort`
        atomic_write_text(out_dir / f"{outcome.case_id}{FAILED_SUFFIX}", dumps_json(doc))


# ---------------------------------------------------------------------------------------------
# outputs of one case


def case_outputs(case: CaseInput, *, label_names: dict[int, str], save_probabilities: bool,
                 rtstruct: bool, uncertainty: bool = False) -> dict[str, Any]:
    """The output file names of ``case`` for these options (JSON excluded)."""
    outputs: dict[str, Any] = {"segmentation": f"{case.case_id}_seg.nii.gz"}
    if uncertainty:
        outputs["uncertainty"] = f"{case.case_id}_uncertainty.nii.gz"
    if save_probabilities:
        outputs["probabilities"] = {name: f"{case.case_id}_prob_{_clean_id(name)}.nii.gz"
                                    for idx, name in sorted(label_names.items()) if idx != 0}
    if case.is_dicom:
        outputs["dicom_seg"] = f"{case.case_id}_seg.dcm"
        if rtstruct:
            outputs["rtstruct"] = f"{case.case_id}_rtstruct.dcm"
    return outputs


def _flat(outputs: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for value in outputs.values():
        names.extend(value.values() if isinstance(value, dict) else [value])
    return names


def is_complete(case: CaseInput, out_dir: Path, outputs: dict[str, Any], doc: dict[str, Any] | None = None) -> bool:
    """True when ``<case>.json`` (``doc``, read here when not given) is a finished rrcunet prediction record
    and every output it and ``outputs`` name exists."""
    doc = doc if doc is not None else read_prediction_json(out_dir / f"{case.case_id}.json")
    if doc is None or doc.get("status") == "started":
        return False
    recorded = doc.get("outputs", {})
    return all((out_dir / n).is_file() for n in _flat(outputs) + _flat(recorded))


#: The prediction options that change a case's result (``inference`` entries of its JSON).
RESULT_OPTIONS = ("bf16", "tta", "sliding_window", "roi_size", "overlap", "target_spacing", "lung_method",
                  "on_empty_lung", "uncertainty", "perturb_hu", "uncertainty_seed")


#: options added after schema v1 was first written, with the value an older JSON implies.
_ADDED_LATER: dict[str, Any] = {"uncertainty": 0, "perturb_hu": 10.0, "uncertainty_seed": 0}


def result_settings(doc: dict[str, Any]) -> dict[str, Any]:
    """What decided a prediction's result, read from its JSON document (or one built like it): the
    model and lung-model files (SHA-256), :data:`RESULT_OPTIONS` and the postprocessing."""
    model, inference, post = (doc.get(k) or {} for k in ("model", "inference", "postprocessing"))
    return {"model": model.get("sha256"), "lung model": (model.get("lung_model") or {}).get("sha256"),
            **{k: inference.get(k, _ADDED_LATER.get(k)) for k in RESULT_OPTIONS},
            "min_tumour_ml": post.get("min_tumour_ml"), "keep_outside_lung": post.get("keep_outside_lung")}


def predictor_settings(predictor: Predictor) -> dict[str, Any]:
    """:func:`result_settings` of the predictions ``predictor`` makes (the same for every case)."""
    return result_settings(json_safe({
        "model": predictor.describe(), "inference": predictor.config.to_dict(),
        "postprocessing": {"min_tumour_ml": predictor.config.postprocess.min_tumour_ml,
                           "keep_outside_lung": predictor.config.postprocess.keep_outside_lung}}))


def changed_settings(doc: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The settings ``now`` (:func:`predictor_settings`) that differ from those recorded in the prediction
    JSON ``doc``, as ``"name old -> new"`` (model hashes shortened); empty when the recorded result is this one's."""
    recorded = result_settings(doc)
    short = {"model", "lung model"}
    return [f"{k} {str(recorded[k])[:12] if k in short else recorded[k]} -> {str(v)[:12] if k in short else v}"
            for k, v in now.items() if recorded[k] != v]


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*|null)(?:,\s*(?:-?[0-9][0-9.eE+-]*|null))*)\s*\]")


def dumps_json(doc: Any) -> str:
    """``json.dumps`` with 2-space indentation, but lists of numbers kept on one line."""
    text = json.dumps(doc, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def _geometry_dict(geometry: Geometry) -> dict[str, Any]:
    return {"shape": list(geometry.shape), "spacing": list(geometry.spacing), "origin": list(geometry.origin),
            "direction": list(geometry.direction)}


def prediction_json(case: CaseInput, ct: Volume, result: PredictionResult, predictor: Predictor,
                    outputs: dict[str, Any],
                    runtime: dict[str, float]) -> dict[str, Any]:
    """The ``<case>.json`` document (schema ``rrcunet-prediction`` v1, docs/inference.md)."""
    info = ct.meta.get("dicom")
    dicom = None
    if info is not None:
        dicom = {"study_uid": info.study_uid, "series_uid": info.series_uid,
                 "frame_of_reference_uid": info.frame_of_reference_uid, "patient_id": info.patient_id,
                 "modality": info.modality, "series_description": info.series_description}
    summary = result.summary()
    summary["postprocessing"] = {"min_tumour_ml": predictor.config.postprocess.min_tumour_ml,
                                 "min_tumour_ml_source": predictor.postprocess_source,
                                 "keep_outside_lung": predictor.config.postprocess.keep_outside_lung,
                                 **summary["postprocessing"]}
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "case": case.case_id,
        "input": {"path": str(case.path), "dicom": dicom, "geometry": _geometry_dict(ct.geometry)},
        "outputs": outputs,
        "labels": {str(k): v for k, v in sorted(result.label_names.items())},
        **summary,
        "runtime_s": runtime,
        "model": predictor.describe(),
        "inference": {**predictor.config.to_dict(), "device_used": str(predictor.device),
                      "sliding_window_used": predictor.uses_sliding_window,
                      "tta_flips_used": ([[d - 2 for d in f] for f in predictor.tta_flips]
                                         if predictor.config.tta else [[]]),
                      "lung_method_used": "given" if predictor.meta.task == "lung" else predictor.config.lung_method},
        "preprocessing_record": result.record.to_dict(),
        "rrcunet_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return json_safe(doc)


def _write_nifti_like(volume: Any, source: Path, out: Path) -> bool:
    """Write ``volume`` with the NIfTI header of ``source`` (only the data type changed); False if not applicable.

    For a NIfTI input this makes the output's orientation fields (sform, qform, pixdim) the very
    bytes of the input's, so any reader gives both files the same geometry; going through
    ``write_volume`` would re-encode the orientation (NIfTI keeps it in float32) and could move it
    by ~1e-10.
    """
    if not source.name.lower().endswith((".nii", ".nii.gz")):
        return False
    header = nib.load(str(source)).header.copy()
    if tuple(int(s) for s in header.get_data_shape()[:3]) != tuple(volume.shape) or len(header.get_data_shape()) != 3:
        return False
    array = np.asarray(volume.array)
    header.set_data_dtype(array.dtype)
    image = nib.Nifti1Image(array, None, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 0
    with atomic_path(out) as tmp:
        nib.save(image, str(tmp))
    return True


def _write_volume(volume: Any, source: Path, out: Path) -> None:
    if not _write_nifti_like(volume, source, out):
        write_volume(volume, out, overwrite=True)


def write_case_outputs(case: CaseInput, ct: Volume, result: PredictionResult, out_dir: Path,
                       outputs: dict[str, Any]) -> dict[str, str]:
    """Write the image outputs of one case (not the JSON), each atomically, replacing older ones.

    Returns the optional DICOM outputs (``dicom_seg``, ``rtstruct``) that could not be written, with
    the reason: their failure is reported without discarding the mask and the other outputs."""
    labels = result.labels.with_array(np.asarray(result.labels.array, dtype=np.uint8))
    if "dicom_seg" in outputs or "rtstruct" in outputs:
        # the mask's NIfTI in a second thread while the DICOM objects are built: its gzip (zlib
        # releases the GIL) overlaps their Python work (issue 23). Its error, if any, is raised below.
        pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrcunet-write")
        mask_written = pool.submit(_write_volume, labels, Path(case.path), out_dir / outputs["segmentation"])
        pool.shutdown(wait=False)
    else:
        _write_volume(labels, Path(case.path), out_dir / outputs["segmentation"])
        mask_written = None
    try:
        return _write_other_outputs(case, ct, result, out_dir, outputs)
    finally:
        if mask_written is not None:
            mask_written.result()


def _write_other_outputs(case: CaseInput, ct: Volume, result: PredictionResult, out_dir: Path,
                         outputs: dict[str, Any]) -> dict[str, str]:
    """:func:`write_case_outputs` after the mask: probabilities, uncertainty, DICOM SEG, RTSTRUCT."""
    if "probabilities" in outputs:
        if result.probabilities is None:
            raise RuntimeError("probabilities were requested but not computed")
        by_name = {name: idx for idx, name in result.label_names.items()}
        for name, fname in outputs["probabilities"].items():
            array = np.ascontiguousarray(result.probabilities.array[by_name[name]], dtype=np.float32)
            _write_volume(ct.with_array(array, kind="image"), Path(case.path), out_dir / fname)
    if "uncertainty" in outputs:
        if result.uncertainty is None:
            raise RuntimeError("an uncertainty map was requested but not computed")
        # rounded to 1/1000: the map compresses several times smaller, and no reader needs more
        array = np.round(np.asarray(result.uncertainty.array, dtype=np.float32), 3)
        _write_volume(ct.with_array(array, kind="image"), Path(case.path), out_dir / outputs["uncertainty"])
    names = {v: n.capitalize() for v, n in result.label_names.items() if v != 0}
    writers = {"dicom_seg": lambda path: write_seg(result.labels, ct.meta["dicom"], path, segment_labels=names,
                                                   overwrite=True),
               "rtstruct": lambda path: write_rtstruct(result.labels, ct.meta["dicom"], path, roi_names=names,
                                                       overwrite=True)}
    errors = {}
    for key, write in writers.items():
        if key in outputs:
            try:
                write(out_dir / outputs[key])
            except Exception as exc:  # noqa: BLE001 - an optional output never costs the mask
                errors[key] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RRcUNetError) else str(exc)
                logger.warning("%s: %s not written (%s); the NIfTI mask and the other outputs are", case.case_id,
                               outputs[key], errors[key])
    return errors


def _claim_outputs(case: CaseInput, out_dir: Path) -> None:
    """Before writing a case's outputs, mark ``<case>.json`` as "started": a rerun after a crash
    then knows the half-written outputs are predict's own (and redoes them), while a user's file of
    the same name is never replaced. The finished document replaces this record last."""
    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "case": case.case_id, "status": "started"}
    atomic_write_text(out_dir / f"{case.case_id}.json", dumps_json(doc))


def read_prediction_json(path: Path) -> dict[str, Any] | None:
    """``<case>.json`` when it is an rrcunet prediction record, else ``None``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def foreign_outputs(case: CaseInput, out_dir: Path, outputs: dict[str, Any]) -> list[str]:
    """Output names of ``case`` that exist in ``out_dir`` but were not written by rrcunet predict.

    Outputs are ours when ``<case>.json`` is an rrcunet prediction record (finished, or marked
    "started" before the outputs were written); anything else of those names (ground truth called
    ``<case>_seg.nii.gz``, a BIDS ``<case>.json`` sidecar) belongs to the user and must not be
    replaced without ``--overwrite``.
    """
    if read_prediction_json(out_dir / f"{case.case_id}.json") is not None:
        return []
    names = _flat(outputs) + [f"{case.case_id}.json"]
    return [n for n in names if (out_dir / n).exists()]


def predict_case(predictor: Predictor, case: CaseInput, out_dir: Path, *, save_probabilities: bool = False,
                 rtstruct: bool = False, read_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read, predict and write one case; return its JSON document (already written).
    ``read_options``: keywords of :func:`rrcunet.io.read_image` (``check_intensity``, ``allow_non_ct``, ...)."""
    t0 = time.perf_counter()
    with heap.temporaries_allowed():  # the lung extractor's working arrays reuse freed heap memory
        ct, prepared, t_read = read_and_prepare(predictor, case, read_options)
    probs = predictor.run_prepared(prepared)
    # (rrcunet.heap, the CLI's settings only) the stages after the network in a heap-reuse block of
    # their own, like the network's pass; not those before it: their long-lived arrays on a kept heap
    # fragmented it for the float32 pass
    with heap.network_pass():
        return finish_and_write(predictor, case, ct, prepared, probs, out_dir, t_read=t_read, t0=t0,
                                save_probabilities=save_probabilities, rtstruct=rtstruct)


def read_and_prepare(predictor: Predictor, case: CaseInput,
                     read_options: dict[str, Any] | None = None) -> tuple[Volume, PreparedCase, float]:
    """Stage 1 of a case: read the CT, then :meth:`Predictor.prepare` (lung region, preprocessing).
    Returns the CT, the prepared case and the reading time."""
    t0 = time.perf_counter()
    series = {"series_uid": case.series_uid} if case.series_uid else {}
    with heap.no_huge_pages():  # the slices' arrays first touched in 4 KiB pages (rrcunet.heap)
        ct = read_image(case.path, **series, **(read_options or {}))
    t_read = time.perf_counter() - t0
    return ct, predictor.prepare(ct), t_read


def finish_and_write(predictor: Predictor, case: CaseInput, ct: Volume, prepared: PreparedCase, probs: Any,
                     out_dir: Path, *, t_read: float, t0: float, save_probabilities: bool,
                     rtstruct: bool) -> dict[str, Any]:
    """Stage 3 of a case: :meth:`Predictor.finish`, then its outputs and its JSON (written last)."""
    if case.is_dicom != ("dicom" in ct.meta):
        case = CaseInput(case.case_id, case.path, "dicom" in ct.meta, case.series_uid, case.n_slices)
    outputs = case_outputs(case, label_names=dict(predictor.meta.labels), save_probabilities=save_probabilities,
                           rtstruct=rtstruct, uncertainty=bool(predictor.config.uncertainty))
    result = predictor.finish(prepared, probs, return_probabilities=save_probabilities)
    t = time.perf_counter()
    _claim_outputs(case, out_dir)
    errors = write_case_outputs(case, ct, result, out_dir, outputs)
    t_write = time.perf_counter() - t
    runtime = {"read": t_read, **result.timings, "write": t_write}
    runtime["total"] = time.perf_counter() - t0
    written = {k: v for k, v in outputs.items() if k not in errors}
    doc = prediction_json(case, ct, result, predictor, written, runtime)
    if errors:
        doc["output_errors"] = errors
    atomic_write_text(out_dir / f"{case.case_id}.json", dumps_json(doc))
    return doc


def predict_paths(predictor: Predictor, inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str], *, save_probabilities: bool = False, rtstruct: bool = False,
                  overwrite: bool = False, progress: bool = True,
                  on_case: Callable[[CaseOutcome], None] | None = None,
                  read_options: dict[str, Any] | None = None, num_parts: int = 1, part_id: int = 0,
                  workers: int | None = None, worker_kind: str = "thread") -> BatchReport:
    """Predict every case of ``inputs`` into ``out_dir``; a failing case is reported and skipped.

    Args:
        predictor: a loaded :class:`~rrcunet.inference.Predictor`.
        inputs: files and folders (:func:`discover_cases`).
        out_dir: output folder (created). Files that look like outputs of a previous run in it
            (``*_seg.*``, ``*_prob_*``) are never taken as inputs.
        save_probabilities: also write ``<case>_prob_<class>.nii.gz``.
        rtstruct: also write ``<case>_rtstruct.dcm`` for DICOM inputs (ignored, with a warning, for others).
        overwrite: redo cases that are already complete (default: skip them, so an interrupted run
            resumes where it stopped). A complete case whose JSON records another model file, lung
            model, :data:`RESULT_OPTIONS` value or postprocessing is predicted again, with a warning.
        progress: show a tqdm progress bar (on stderr, only when it is a terminal).
        on_case: called with each :class:`CaseOutcome` as it is decided.
        read_options: keywords of :func:`rrcunet.io.read_image` for every case (``check_intensity``,
            ``allow_non_ct``, ``allow_nonuniform``: ``rrcunet predict``'s reading flags).
        workers: processes that read and prepare the next cases while the network runs (and one
            thread writes the previous case); 0 runs the stages one after the other. Default
            :func:`default_workers`, for cohorts of at least :data:`MIN_CASES_TO_OVERLAP` cases.
        worker_kind: ``"thread"`` (default: threads of this process, sharing its model and memory)
            or ``"process"`` (spawned processes, each with its own torch runtime and model). On 2
            cores threads gave more throughput for less memory (docs/inference.md, "Cohorts"):
            reading, lung extraction and the network spend most of their time in NumPy, SciPy,
            SimpleITK and torch code that releases Python's lock.
        num_parts, part_id: predict only part ``part_id`` of :func:`split_parts` (balanced by slices,
            the same in every process), so that several processes share one cohort and one
            ``out_dir``. Each part holds its own lock; parts never share a case.

    Returns:
        a :class:`BatchReport` (of this part's cases).

    Raises:
        InputError: an input path is missing, a folder holds no case, two cases share an id, or
            another live ``predict`` is writing into ``out_dir`` (:func:`rrcunet.io.atomic.folder_lock`).
    """
    with heap.fewer_collections():  # the collector's walks of long-lived objects were ~0.6 s of a case (rrcunet.heap)
        return _predict_paths(predictor, inputs, out_dir, save_probabilities=save_probabilities, rtstruct=rtstruct,
                              overwrite=overwrite, progress=progress, on_case=on_case, read_options=read_options,
                              num_parts=num_parts, part_id=part_id, workers=workers, worker_kind=worker_kind)


def _predict_paths(predictor: Predictor, inputs: Any, out_dir: str | os.PathLike[str], *, save_probabilities: bool,
                   rtstruct: bool, overwrite: bool, progress: bool, on_case: Callable[[CaseOutcome], None] | None,
                   read_options: dict[str, Any] | None, num_parts: int, part_id: int, workers: int | None,
                   worker_kind: str) -> BatchReport:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if worker_kind not in ("process", "thread"):
        raise ConfigError(f"worker kind must be 'process' or 'thread', not {worker_kind!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose a folder path for -o")
    out_resolved = out.resolve()
    cases = [c for c in discover_cases(inputs)
             if not (Path(c.path).resolve().parent == out_resolved and _OUTPUT_NAME.search(c.case_id))]
    if not cases:
        raise InputError(f"no input case left to predict in {', '.join(map(str, inputs))} (only earlier outputs)")
    if num_parts != 1 or part_id != 0:
        cases = select_part(cases, num_parts, part_id)
    out.mkdir(parents=True, exist_ok=True)  # only now: an input error leaves no empty folder behind
    lock = "predict" if num_parts == 1 else f"predict-part{part_id}-of-{num_parts}"
    with folder_lock(out, lock):  # one predict (per part) per output folder at a time
        return _predict_cases(predictor, cases, out, save_probabilities=save_probabilities, rtstruct=rtstruct,
                              overwrite=overwrite, progress=progress, on_case=on_case, read_options=read_options,
                              workers=workers, worker_kind=worker_kind)


#: Environment variable for the default number of prediction workers (``--workers`` overrides it).
WORKERS_ENV = "RRCUNET_WORKERS"


def default_workers() -> int:
    """Workers that read and prepare cases ahead of the network: ``$RRCUNET_WORKERS`` if set, else 1
    on a machine with more than one core (0 on one core).

    One, not one per core, so that a cohort's peak memory stays within 1.3× of a single case's
    (issue 21): each further worker holds one more CT and its lung-extraction arrays (~0.3 GB for
    LUNG1-001), which is what a cluster job's memory request would have to cover. Measured on 2
    cores, 40 cases (docs/inference.md, "Cohorts"): 1 thread, 1.20× the sequential throughput at
    1.27× a single case's memory; 2 threads (``--workers 2``), 1.69× at 1.53×."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            raise InputError(f"{WORKERS_ENV}={value!r} is not a whole number; set it to 0, 1, 2, ... or unset it") from None
    return 1 if (os.cpu_count() or 1) > 1 else 0


#: Without an explicit ``workers``, cohorts smaller than this run sequentially: starting a worker
#: process (torch, the model, the lung extractor) costs a few seconds, which a few cases do not repay.
MIN_CASES_TO_OVERLAP = 5


def _outcome_of(case: CaseInput, t: float, work: Callable[[], dict[str, Any]], changed: list[str]) -> CaseOutcome:
    """Run one case's work and turn its result or error into a :class:`CaseOutcome`."""
    try:
        doc = work()
    except (KeyboardInterrupt, SystemExit):
        raise
    except RRcUNetError as exc:
        return CaseOutcome(case.case_id, case.path, "failed", str(exc), seconds=time.perf_counter() - t)
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
        logger.debug("case %s failed:\n%s", case.case_id, traceback.format_exc())
        return CaseOutcome(case.case_id, case.path, "failed", f"{type(exc).__name__}: {exc}",
                           seconds=time.perf_counter() - t)
    notes = [f"predicted again: {'; '.join(changed)}"] if changed else []
    notes += [f"{key} not written: {why}" for key, why in doc.get("output_errors", {}).items()]
    return CaseOutcome(case.case_id, case.path, "done", "; ".join(notes), doc["outputs"], time.perf_counter() - t)


# one predictor per worker process, made by its initializer
_WORKER_PREDICTOR: Predictor | None = None


def _worker_init(model_path: str, config: Any, lung_extractor: Any, threads: int) -> None:
    global _WORKER_PREDICTOR
    torch.set_num_threads(threads)
    # the worker only prepares cases (lung region, preprocessing): on the CPU, with the parent's extractor
    _WORKER_PREDICTOR = Predictor.from_file(model_path, config=dataclasses.replace(config, device="cpu"))
    _WORKER_PREDICTOR.lung_extractor = lung_extractor


def _worker_prepare(case: CaseInput, read_options: Any) -> tuple[Volume, PreparedCase, float]:
    assert _WORKER_PREDICTOR is not None
    return read_and_prepare(_WORKER_PREDICTOR, case, read_options)


def _predict_cases(predictor: Predictor, cases: list[CaseInput], out: Path, *, save_probabilities: bool, rtstruct: bool,
                   overwrite: bool, progress: bool, on_case: Any, read_options: Any,
                   workers: int | None = None, worker_kind: str = "thread") -> BatchReport:
    remove_stale_temporaries(out)  # a killed earlier run's half-written files
    not_dicom = [c.case_id for c in cases if not c.is_dicom]
    if rtstruct and not_dicom:
        logger.warning("--rtstruct is written only for DICOM inputs (it references the CT's slices); %d of %d case(s) "
                       "are not DICOM and get none: %s", len(not_dicom), len(cases), ", ".join(not_dicom[:10]))
    labels = dict(predictor.meta.labels)
    now = predictor_settings(predictor)
    decided: dict[str, CaseOutcome] = {}
    todo: list[tuple[CaseInput, list[str]]] = []
    for case in cases:  # what each case needs, before any work (parts never share a case)
        expected = case_outputs(case, label_names=labels, save_probabilities=save_probabilities, rtstruct=rtstruct,
                                uncertainty=bool(predictor.config.uncertainty))
        doc = None if overwrite else read_prediction_json(out / f"{case.case_id}.json")  # read once per case
        complete = doc is not None and is_complete(case, out, expected, doc)
        changed = changed_settings(doc, now) if doc is not None and complete else []
        if complete and not changed:
            decided[case.case_id] = CaseOutcome(case.case_id, case.path, "skipped",
                                                "outputs complete; pass --overwrite to redo", expected)
        elif not overwrite and (theirs := foreign_outputs(case, out, expected)):
            decided[case.case_id] = CaseOutcome(
                case.case_id, case.path, "failed", f"{out} already holds {', '.join(theirs)}, not written by rrcunet "
                "predict; predicting would replace it. Choose another -o folder or pass --overwrite")
        else:
            if changed:  # never keep a result made with another model or other options
                logger.warning("%s: predicting again, its outputs in %s were made with other settings (%s)",
                               case.case_id, out, "; ".join(changed))
            todo.append((case, changed))

    bar = tqdm(total=len(cases), unit="case", desc="predict", disable=None if progress else True, dynamic_ncols=True)

    def record(outcome: CaseOutcome) -> None:
        decided[outcome.case_id] = outcome
        if outcome.status == "failed":
            _record_failure(out, outcome)
        else:
            with contextlib.suppress(OSError):
                (out / f"{outcome.case_id}{FAILED_SUFFIX}").unlink(missing_ok=True)
        bar.set_postfix_str(outcome.case_id, refresh=False)
        bar.update(1)
        if on_case is not None:
            on_case(outcome)

    for case in cases:
        if case.case_id in decided:
            record(decided[case.case_id])
    n_workers = default_workers() if workers is None else max(0, int(workers))
    if workers is None and len(todo) < MIN_CASES_TO_OVERLAP:
        n_workers = 0
    if n_workers and len(todo) > 1 and predictor.model_path is not None:
        _overlapped(predictor, todo, out, n_workers, record, save_probabilities=save_probabilities, rtstruct=rtstruct,
                    worker_kind=worker_kind,
                    read_options=read_options)
    else:
        for case, changed in todo:
            record(_outcome_of(case, time.perf_counter(), lambda c=case: predict_case(
                predictor, c, out, save_probabilities=save_probabilities, rtstruct=rtstruct,
                read_options=read_options), changed))
    bar.close()
    return BatchReport(out, [decided[c.case_id] for c in cases])


def _overlapped(predictor: Predictor, todo: list[tuple[CaseInput, list[str]]], out: Path, n_workers: int,
                record: Callable[[CaseOutcome], None], *, save_probabilities: bool, rtstruct: bool,
                read_options: Any, worker_kind: str = "thread") -> None:
    """The cases of ``todo`` in three overlapping stages: ``n_workers`` threads (or processes) read and
    prepare the next cases (at most ``n_workers`` ahead, processes ``n_workers + 1``, so memory stays
    flat), this thread runs the network, and one thread inverts, measures and writes the previous case. Each case's outputs are
    exactly those of :func:`predict_case` (same functions, same order within a case)."""
    pool: cf.Executor
    if worker_kind == "thread":
        pool = cf.ThreadPoolExecutor(n_workers, thread_name_prefix="rrcunet-prepare")

        def prepare(case: CaseInput) -> cf.Future[Any]:
            return pool.submit(read_and_prepare, predictor, case, read_options)
    else:
        # spawn, not fork: the parent's OpenMP and torch threads do not survive a fork
        pool = cf.ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init,
                                      initargs=(str(predictor.model_path), predictor.config, predictor.lung_extractor, 1))

        def prepare(case: CaseInput) -> cf.Future[Any]:
            return pool.submit(_worker_prepare, case, read_options)
    writer = cf.ThreadPoolExecutor(1, thread_name_prefix="rrcunet-write")
    ahead = n_workers + (0 if worker_kind == "thread" else 1)
    prepared: dict[int, cf.Future[Any]] = {}
    writing: list[tuple[CaseInput, float, list[str], cf.Future[Any]]] = []

    def drain(keep: int) -> None:
        while len(writing) > keep:
            case, t, changed, future = writing.pop(0)
            record(_outcome_of(case, t, future.result, changed))

    try:
        for i, (case, changed) in enumerate(todo):
            for j in range(i, min(len(todo), i + ahead)):
                if j not in prepared:
                    prepared[j] = prepare(todo[j][0])
            t = time.perf_counter()
            try:
                ct, prep, t_read = prepared.pop(i).result()
                probs = predictor.run_prepared(prep)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - reported by _outcome_of, in order
                error = exc
                failed: cf.Future[Any] = cf.Future()
                failed.set_exception(error)
                writing.append((case, t, changed, failed))
            else:
                writing.append((case, t, changed, writer.submit(
                    finish_and_write, predictor, case, ct, prep, probs, out, t_read=t_read, t0=t,
                    save_probabilities=save_probabilities, rtstruct=rtstruct)))
                del ct, prep, probs
            drain(keep=1)  # at most one case being written while the network runs the next
        drain(keep=0)
    finally:
        writer.shutdown(wait=True)
        pool.shutdown(wait=True, cancel_futures=True)
