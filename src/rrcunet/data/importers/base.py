"""The source-independent half of ``rrcunet import``: label composition, resumable case writing, the manifest.

Owns

* :class:`SourceCase` / :class:`LoadedCase` — what a source importer (MSD, nnU-Net, NSCLC DICOM)
  hands over: a case id, its patient, and a loader returning the CT with a tumour mask and, when
  the source has one, a lung mask, all on the CT grid;
* :func:`compose_labels` — the project's label convention from a tumour and a lung mask;
* :func:`run_import` — reading every case, deriving the lung from the extractor where the source has
  none, writing ``images/``, ``labels/``, ``lungs/`` atomically, recording per-case completion so an
  interrupted import resumes, and writing ``manifest.json`` last;
* :func:`resolve_inside` — resolving a path written in a source's ``dataset.json`` without letting
  it leave the source folder.

Crash safety: each output file is written to a temporary name and renamed into place; a case counts
as done only when its completion record ``.import/cases/<case>.json`` (written after its three
files) exists, matches the import options and the file sizes it records. ``manifest.json`` is
written after every case, so a folder with a manifest is always complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from rrcunet.data.manifest import MANIFEST_NAME, CaseEntry, DatasetManifest, make_split
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.atomic import atomic_write_text, remove_stale_temporaries
from rrcunet.io.image import write_volume
from rrcunet.io.validation import check_same_grid
from rrcunet.io.volume import Volume

logger = logging.getLogger(__name__)

#: Folder (inside DATASET_DIR) holding the import state and the per-case completion records.
STATE_DIR = ".import"
STATE_NAME = "state.json"
REPORT_NAME = "import_report.json"
#: Bumped when the meaning of the written files changes, so an old partial import is not resumed.
STATE_VERSION = 1
#: Sub-folders of the canonical layout (see :mod:`rrcunet.data`).
LAYOUT_DIRS = ("images", "labels", "lungs")
#: Lung-source value recorded in the provenance when the lung came from the source's own labels.
GROUND_TRUTH = "ground truth"


# --------------------------------------------------------------------------------------------------
# what importers hand over
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedCase:
    """One case read from its source, before the label composition.

    Args:
        ct: the CT in HU (``kind="image"``).
        tumour: ``bool`` array on ``ct``'s grid, True where the source marks tumour.
        lung: ``bool`` array on ``ct``'s grid from the source's own lung annotation, or ``None`` when
            the source has none (the lung extractor is then run on ``ct``).
        provenance: JSON-serialisable facts about where the case came from (source paths, ROI
            names, DICOM UIDs, label values); stored in the manifest's ``CaseEntry.source``.
    """

    ct: Volume
    tumour: np.ndarray
    lung: np.ndarray | None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceCase:
    """A case found in a source, not read yet.

    ``load`` reads and validates it; it raises :class:`~rrcunet.errors.InputError` (or ``OSError``)
    for a bad case, which is then skipped and reported. ``files`` are the source files named in that
    report.
    """

    case_id: str
    patient: str
    files: tuple[str, ...]
    load: Callable[[], LoadedCase] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Discovery:
    """What an importer found in SRC: the cases, plus items deliberately left out (with the reason)."""

    cases: tuple[SourceCase, ...]
    ignored: tuple[tuple[str, str], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class SkippedCase:
    """A case that could not be imported: its id, its source files and why."""

    case_id: str
    files: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """Outcome of :func:`run_import`.

    ``imported`` were written by this run, ``reused`` were complete from an earlier run, ``skipped``
    failed (bad file, geometry mismatch, unexpected label values…), ``ignored`` were left out on
    purpose (e.g. unlabelled MSD test images). ``manifest`` lists ``imported + reused``.
    """

    manifest: DatasetManifest
    out_dir: Path
    imported: tuple[str, ...]
    reused: tuple[str, ...]
    skipped: tuple[SkippedCase, ...]
    ignored: tuple[tuple[str, str], ...]

    def summary(self) -> str:
        """One-paragraph human summary (what the CLI prints)."""
        lines = [
            f"{len(self.manifest.cases)} case(s) in {self.out_dir / MANIFEST_NAME}: {len(self.imported)} imported, "
            f"{len(self.reused)} already complete; split train {len(self.manifest.split.train)} / "
            f"val {len(self.manifest.split.val)} / test {len(self.manifest.split.test)}"
        ]
        if self.ignored:
            lines.append(f"{len(self.ignored)} item(s) left out on purpose (see {REPORT_NAME})")
        if self.skipped:
            lines.append(f"{len(self.skipped)} case(s) SKIPPED:")
            lines.extend(f"  {s.case_id}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


@dataclass(frozen=True)
class ImportOptions:
    """Every option that changes the written files or the split; their JSON is the import's fingerprint.

    A resumed import must use the same options; other options need ``overwrite``.
    """

    kind: str
    src: str
    seed: int
    val_fraction: float
    test: tuple[str, ...]
    lung_method: str
    rois: tuple[str, ...] | None
    lung_rois: tuple[str, ...] | None
    label_map: tuple[tuple[str, int], ...] | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state_version"] = STATE_VERSION
        return json.loads(json.dumps(d))  # tuples → lists, as they come back from the state file


# --------------------------------------------------------------------------------------------------
# label composition
# --------------------------------------------------------------------------------------------------
def tumour_touching(tumour: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """The connected tumour components (26-connectivity) that overlap or touch ``lung``.

    A component touches when one of its voxels is the lung or a 26-neighbour of a lung voxel. Work
    is done per component on its bounding box (one voxel wider), so a whole-chest CT costs little.
    """
    tumour = np.asarray(tumour, dtype=bool)
    lung = np.asarray(lung, dtype=bool)
    out = np.zeros(tumour.shape, dtype=bool)
    if not tumour.any() or not lung.any():
        return out
    structure = np.ones((3, 3, 3), dtype=bool)
    labelled, n = ndi.label(tumour, structure=structure)
    for idx, box in enumerate(ndi.find_objects(labelled), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, dim)) for s, dim in zip(box, tumour.shape))
        comp = labelled[grown] == idx
        if (ndi.binary_dilation(comp, structure=structure) & lung[grown]).any():
            out[grown] |= comp
    return out


def compose_labels(tumour: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label map and the lung-region mask from a tumour mask and a lung mask.

    * lung region (``lungs/``) = ``lung`` ∪ the tumour components that overlap or touch it — a lung
      annotation that excludes the tumour (radiotherapy lung contours such as NSCLC-Radiomics'
      ``Lung-Left``/``Lung-Right``) thus gets the tumour filled back in, as the model's lung channel
      expects; a tumour away from the lung (e.g. a mediastinal node) stays out of the region;
    * label (``labels/``) = 2 where tumour (tumour wins), 1 where lung region and not tumour, 0 elsewhere.

    Returns:
        ``(labels, lung_region)``, both ``uint8``.

    Example::

        labels, region = compose_labels(gtv_mask, lung_mask)
    """
    tumour = np.asarray(tumour, dtype=bool)
    lung = np.asarray(lung, dtype=bool)
    if tumour.shape != lung.shape:
        raise InputError(f"tumour mask shape {tumour.shape} differs from lung mask shape {lung.shape}")
    region = lung | tumour_touching(tumour, lung)
    labels = np.zeros(tumour.shape, dtype=np.uint8)
    labels[region] = 1
    labels[tumour] = 2
    return labels, region.astype(np.uint8)


def extract_lung_region(ct: Volume, method: str) -> Volume:
    """The lung region of ``ct`` from the lung extractor (:func:`rrcunet.lungmask.extract_lungs`).

    A module-level function so tests can substitute a trivial extractor. An unknown method is a
    :class:`ConfigError` (fatal for the whole import, not one case).
    """
    # lazy: rrcunet.lungmask imports torch (~1 s); only sources without a lung mask need it
    from rrcunet.lungmask import extract_lungs

    return extract_lungs(ct, method=method)


# --------------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------------
def resolve_inside(root: Path, rel: Any, *, what: str, listed_in: Path) -> Path:
    """Resolve ``rel`` (a path written in ``listed_in``, e.g. ``"./imagesTr/lung_001.nii.gz"``) under ``root``.

    The check is lexical (``..`` components are collapsed; symbolic links inside ``root`` are followed
    when the file is read, as for any dataset laid out with links).

    Raises:
        InputError: ``rel`` is not a non-empty string, is absolute, or leaves ``root``.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InputError(f"{listed_in}: {what} must be a path string relative to {root}, not {rel!r}")
    text = rel.strip().replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", text):
        raise InputError(
            f"{listed_in}: {what} {rel!r} is an absolute path; expected a path relative to the dataset folder "
            f"{root} (such as './imagesTr/case_001.nii.gz'). Edit dataset.json"
        )
    root_abs = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(root_abs, *pure.parts))
    if os.path.commonpath([full, root_abs]) != root_abs:
        raise InputError(
            f"{listed_in}: {what} {rel!r} escapes the dataset folder {root}; expected a path inside it. "
            "Refusing to read files outside SRC: edit dataset.json or move the files into SRC"
        )
    return Path(full)


def check_out_dir_outside_src(src: Path, out_dir: Path) -> None:
    """Refuse an output folder equal to, or inside, the source folder (imports never write into SRC)."""
    s = src.resolve()
    o = out_dir.resolve()
    if o == s or s in o.parents:
        raise InputError(
            f"output folder {out_dir} is inside the source folder {src}; the import never writes into SRC. "
            "Choose a DATASET_DIR outside it"
        )


def read_test_list(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Case or patient ids from a text file: one per line; blank lines and ``#`` comments ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{p}: cannot read the test list ({exc}); expected a text file with one case id a line"
        ) from None
    ids = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item and item not in ids:
            ids.append(item)
    if not ids:
        raise InputError(f"{p}: the test list is empty; expected one case or patient id a line")
    return tuple(ids)


def _test_case_ids(test: Sequence[str], cases: Sequence[SourceCase], test_list_name: str) -> set[str]:
    """Expand a test list (case or patient ids) to case ids: a listed case brings its whole patient."""
    by_case = {c.case_id: c.patient for c in cases}
    patients: dict[str, list[str]] = {}
    for c in cases:
        patients.setdefault(c.patient, []).append(c.case_id)
    chosen_patients = set()
    unknown = []
    for item in test:
        if item in by_case:
            chosen_patients.add(by_case[item])
        elif item in patients:
            chosen_patients.add(item)
        else:
            unknown.append(item)
    if unknown:
        known = sorted(by_case)
        raise InputError(
            f"{test_list_name}: {len(unknown)} id(s) match no case or patient of the source: "
            f"{', '.join(unknown[:10])}{' …' if len(unknown) > 10 else ''}; case ids found: "
            f"{', '.join(known[:10])}{' …' if len(known) > 10 else ''}"
        )
    ids = {cid for p in chosen_patients for cid in patients[p]}
    extra = ids - set(test)
    if extra:
        logger.info("test list: also holding out %d scan(s) of the same patients: %s", len(extra), sorted(extra))
    return ids


# --------------------------------------------------------------------------------------------------
# the output folder: state, completion records
# --------------------------------------------------------------------------------------------------
def _record_path(out_dir: Path, case_id: str) -> Path:
    return out_dir / STATE_DIR / "cases" / f"{case_id}.json"


def _case_paths(out_dir: Path, case_id: str) -> dict[str, Path]:
    return {d: out_dir / d / f"{case_id}.nii.gz" for d in LAYOUT_DIRS}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _prepare_out_dir(out_dir: Path, options: dict[str, Any], overwrite: bool) -> None:
    """Decide between a fresh import, a resume and a refusal; then record the options.

    * empty or absent folder → fresh import;
    * a folder holding an earlier import with the same options → resume (complete cases are kept);
    * an import with other options, or a non-empty folder not made by ``rrcunet import`` → refused
      unless ``overwrite``, which discards the completion records and the old manifest first (a
      crash then never leaves an old manifest pointing at half-replaced files).
    """
    state_path = out_dir / STATE_DIR / STATE_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file; expected a folder for the prepared dataset")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if entries and not overwrite:
        state = _read_json(state_path) if state_path.is_file() else None
        if state is None:
            raise InputError(
                f"output folder {out_dir} is not empty ({', '.join(entries[:6])}{' …' if len(entries) > 6 else ''}) "
                "and holds no earlier `rrcunet import` of this source; pass --overwrite to write into it anyway, "
                "or choose an empty DATASET_DIR"
            )
        old = state.get("options") if isinstance(state, dict) else None
        if old != options:
            diffs = [f"{k}: {(old or {}).get(k)!r} → {v!r}" for k, v in options.items() if (old or {}).get(k) != v]
            raise InputError(
                f"output folder {out_dir} holds an import made with other options ({'; '.join(diffs)}); pass "
                "--overwrite to redo it with the new options, or choose another DATASET_DIR"
            )
        logger.info("%s: resuming an earlier import with the same options", out_dir)
    if overwrite and entries:
        for p in (out_dir / MANIFEST_NAME, out_dir / REPORT_NAME, state_path):
            if p.is_file():
                p.unlink()
        records = out_dir / STATE_DIR / "cases"
        if records.is_dir():
            for r in records.glob("*.json"):
                r.unlink()
    atomic_write_text(state_path, json.dumps({"options": options}, indent=2) + "\n")


def _completed_entry(out_dir: Path, case_id: str, options: dict[str, Any]) -> CaseEntry | None:
    """The CaseEntry of a case finished by an earlier run with the same options, or None."""
    record = _read_json(_record_path(out_dir, case_id))
    if not isinstance(record, dict) or record.get("options") != options:
        return None
    sizes = record.get("sizes", {})
    for what, path in _case_paths(out_dir, case_id).items():
        if not path.is_file() or path.stat().st_size != sizes.get(what):
            return None
    e = record.get("entry", {})
    try:
        return CaseEntry(case_id=e["case_id"], image=e["image"], label=e.get("label"), lung=e.get("lung"),
                         patient=e.get("patient"), source=dict(e.get("source") or {}))
    except (KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------------
def _import_case(case: SourceCase, out_dir: Path, options: dict[str, Any], lung_method: str,
                 extractor_state: dict[str, Any]) -> CaseEntry:
    loaded = case.load()
    ct = loaded.ct
    tumour = np.asarray(loaded.tumour, dtype=bool)
    if tumour.shape != ct.shape:
        raise InputError(f"{case.case_id}: tumour mask shape {tumour.shape} differs from the CT shape {ct.shape}")
    provenance = dict(loaded.provenance)
    if loaded.lung is not None and np.asarray(loaded.lung).any():
        lung = np.asarray(loaded.lung, dtype=bool)
        provenance["lung_source"] = GROUND_TRUTH
    else:
        if loaded.lung is not None:
            logger.warning("%s: the source's lung annotation is empty; using the lung extractor (%s)",
                           case.case_id, lung_method)
        extracted = extract_lung_region(ct, lung_method)
        check_same_grid(ct, extracted, f"CT of {case.case_id}", f"lung extractor output ({lung_method})")
        lung = np.asarray(extracted.array) > 0
        provenance["lung_source"] = lung_method
        extractor_state["used"] = True
    labels, region = compose_labels(tumour, lung)
    if not region.any():
        raise InputError(
            f"{case.case_id}: the lung region is empty (lung source: {provenance['lung_source']}); expected a chest "
            "CT showing the lungs. Check the CT (field of view, HU) or provide a lung annotation"
        )
    n_tumour = int((labels == 2).sum())
    if n_tumour == 0:
        logger.warning("%s: no tumour voxel (the selected tumour annotation is empty on this CT)", case.case_id)
    provenance["voxels"] = {"tumour": n_tumour, "lung_region": int(region.sum())}

    paths = _case_paths(out_dir, case.case_id)
    geom = ct.geometry
    meta = {"source": str(paths["images"])}
    write_volume(Volume(np.asarray(ct.array), geom, "image", meta), paths["images"], overwrite=True)
    write_volume(Volume(labels, geom, "label", {}), paths["labels"], overwrite=True)
    write_volume(Volume(region, geom, "label", {}), paths["lungs"], overwrite=True)
    entry = CaseEntry(case_id=case.case_id, image=f"images/{case.case_id}.nii.gz",
                      label=f"labels/{case.case_id}.nii.gz", lung=f"lungs/{case.case_id}.nii.gz",
                      patient=case.patient, source=provenance)
    record = {"options": options, "entry": asdict(entry),
              "sizes": {what: p.stat().st_size for what, p in paths.items()}}
    atomic_write_text(_record_path(out_dir, case.case_id), json.dumps(record, indent=2) + "\n")
    logger.info("%s: written (tumour %d voxels, lung region %d voxels, lung from %s)", case.case_id, n_tumour,
                int(region.sum()), provenance["lung_source"])
    return entry


# --------------------------------------------------------------------------------------------------
# the whole import
# --------------------------------------------------------------------------------------------------
def run_import(
    discovery: Discovery,
    out_dir: str | os.PathLike[str],
    *,
    options: ImportOptions,
    overwrite: bool = False,
    test_list_name: str = "test list",
) -> ImportReport:
    """Write every case of ``discovery`` into the canonical layout under ``out_dir``, then the manifest.

    Args:
        discovery: the cases an importer found.
        out_dir: DATASET_DIR (created).
        options: the import options (recorded; a resume needs the same ones).
        overwrite: redo an existing import (or write into a non-empty folder).
        test_list_name: how to name the test list in error messages.

    Returns:
        An :class:`ImportReport`; ``report.manifest`` is also saved as ``out_dir/manifest.json``.

    Raises:
        InputError: duplicate case ids, unknown test ids, an output folder that may not be written,
            or no case at all could be imported (each reason listed).
        ConfigError: the lung extractor is unavailable or the method unknown.
    """
    out = Path(out_dir)
    cases = list(discovery.cases)
    if not cases:
        left_out = "; ".join(f"{a}: {b}" for a, b in discovery.ignored[:5])
        raise InputError(
            f"{options.src}: no case found for a {options.kind!r} import"
            + (f" ({len(discovery.ignored)} item(s) left out: {left_out})" if discovery.ignored else "")
        )
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"{options.src}: several cases would get the same id {dupes[:5]}; rename them in the source")
    test_ids = _test_case_ids(options.test, cases, test_list_name) if options.test else set()
    if not 0.0 <= options.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), not {options.val_fraction}")
    opts = options.to_dict()
    _prepare_out_dir(out, opts, overwrite)
    for d in LAYOUT_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    for folder in (out, *(out / d for d in LAYOUT_DIRS)):  # a killed earlier import's half-written files
        remove_stale_temporaries(folder)

    entries: list[CaseEntry] = []
    imported: list[str] = []
    reused: list[str] = []
    skipped: list[SkippedCase] = []
    extractor_state: dict[str, Any] = {}
    for n, case in enumerate(cases, start=1):
        done = _completed_entry(out, case.case_id, opts)
        if done is not None:
            logger.info("[%d/%d] %s: already complete, kept", n, len(cases), case.case_id)
            entries.append(done)
            reused.append(case.case_id)
            continue
        logger.info("[%d/%d] %s: importing", n, len(cases), case.case_id)
        try:
            entries.append(_import_case(case, out, opts, options.lung_method, extractor_state))
            imported.append(case.case_id)
        except (InputError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            logger.error("%s: skipped (files: %s): %s", case.case_id, ", ".join(case.files) or "?", reason)
            skipped.append(SkippedCase(case.case_id, case.files, reason))

    report_data = {
        "imported": imported, "reused": reused,
        "skipped": [asdict(s) for s in skipped],
        "ignored": [{"item": a, "reason": b} for a, b in discovery.ignored],
        "options": opts,
    }
    atomic_write_text(out / REPORT_NAME, json.dumps(report_data, indent=2) + "\n")
    if not entries:
        raise InputError(
            f"none of the {len(cases)} case(s) of {options.src} could be imported; reasons: "
            + "; ".join(f"{s.case_id}: {s.reason}" for s in skipped[:5])
            + (" …" if len(skipped) > 5 else "") + f" (all listed in {out / REPORT_NAME})"
        )
    dropped = sorted(test_ids - {e.case_id for e in entries})
    if dropped:
        logger.warning("test-list case(s) %s were skipped and are not in the test split", dropped)
    test = tuple(e.case_id for e in entries if e.case_id in test_ids)
    split = make_split(entries, val_fraction=options.val_fraction, seed=options.seed, test=test)
    manifest = DatasetManifest(
        name=out.resolve().name, cases=tuple(entries), split=split,
        description=discovery.description or f"imported from {options.kind} source {options.src}",
    )
    manifest.save(out)  # last: a folder with a manifest is complete
    report = ImportReport(manifest=manifest, out_dir=out, imported=tuple(imported), reused=tuple(reused),
                          skipped=tuple(skipped), ignored=tuple(discovery.ignored))
    logger.info("import finished: %d imported, %d already complete, %d skipped", len(imported), len(reused),
                len(skipped))
    return report


def escape_pattern(name: str) -> str:
    """An fnmatch pattern matching exactly ``name`` (``[``, ``*``, ``?`` taken literally)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def as_tuple(values: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """``None`` stays None; a single string becomes a 1-tuple (``rois="GTV-1"`` is not 5 patterns)."""
    if values is None:
        return None
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


def normalise_label_map(label_map: Mapping[str, int] | Iterable[str] | None) -> tuple[tuple[str, int], ...] | None:
    """``{name: value}`` or ``["name=value", ...]`` → sorted ``((name, value), ...)``, values in {0, 1, 2}."""
    if label_map is None:
        return None
    items: list[tuple[str, int]] = []
    pairs = label_map.items() if isinstance(label_map, Mapping) else None
    if pairs is None:
        parsed = []
        for text in label_map:  # type: ignore[union-attr]
            name, sep, value = str(text).rpartition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--label-map {text!r}: expected NAME=VALUE, e.g. 'GTV=2' or 'airway=0'")
            parsed.append((name.strip(), value.strip()))
        pairs = parsed
    for name, value in pairs:
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"--label-map {name}={value!r}: the value must be 0 (background), 1 (lung) or 2 (tumour)"
            ) from None
        if v not in (0, 1, 2):
            raise ConfigError(f"--label-map {name}={v}: the value must be 0 (background), 1 (lung) or 2 (tumour)")
        items.append((str(name), v))
    lowered = [n.lower() for n, _ in items]
    if len(set(lowered)) != len(lowered):
        raise ConfigError(f"--label-map names a label twice: {[n for n, _ in items]}")
    return tuple(sorted(items))
