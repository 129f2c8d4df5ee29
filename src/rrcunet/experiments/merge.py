"""Merge prepared datasets into one, with a new seeded patient-level split: :func:`merge_datasets`.

The paper trains on the union of three public collections (NSCLC-Radiomics-Interobserver1,
NSCLC-Radiomics, MSD Task06), split 80/20 at random. ``rrcunet import`` prepares each collection
on its own (with its own split); this module joins them:

* every case of every source is brought into ``OUT/images|labels|lungs/<case><suffix>`` as a
  **hard link** to the source file when the file system allows it (no extra disk space; the
  source files are only read), else as a copy (``link="copy"`` forces copies). Never a symbolic
  link: manifest paths must stay inside the dataset root, and a link out of it would be refused by
  :meth:`rrcunet.data.manifest.DatasetManifest.load`;
* case ids are kept; ids that clash between sources are refused, unless ``prefix_ids`` prefixes
  every case id **and patient id** with its source folder's name (``lung1__LUNG1-001``);
* patients are grouped by their patient id across sources (without ``prefix_ids`` a patient id
  present in two sources is one patient: a warning says so), and the split is remade over the
  union with :func:`rrcunet.data.manifest.make_split` (``val_fraction``, ``seed``): all scans of
  a patient land on one side;
* the test list is the union of the sources' test splits and ``test_list`` (case or patient ids
  of the merged dataset); every scan of a listed patient is held out;
* each case's ``source`` keeps its provenance plus ``merged_from`` (source dataset, root, case id);
* files are written atomically and ``manifest.json`` last, so a folder with a manifest is a
  complete merge; re-running the same command reuses files that are already in place.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from rrcunet.data.manifest import MANIFEST_NAME, CaseEntry, DatasetManifest, make_split
from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path, temporary_prefix
from rrcunet.io.image import image_suffix

logger = logging.getLogger(__name__)

def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def place_file(src: Path, dest: Path, *, link: str = "auto", reuse_copies: bool = True) -> str:
    """Put ``src`` at ``dest`` atomically as a hard link (``"auto"``/``"hardlink"``) or a copy; return
    ``"linked"``, ``"copied"`` or ``"kept"`` (already the same file; or, with ``reuse_copies``, a
    copy of the same size and modification time or later — a previous run of the same merge)."""
    if dest.exists():
        if _same_file(src, dest):
            return "kept"
        if reuse_copies and link != "hardlink":
            s, d = src.stat(), dest.stat()
            if d.st_size == s.st_size and d.st_mtime >= s.st_mtime:
                return "kept"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link in ("auto", "hardlink"):
        tmp = dest.parent / f"{temporary_prefix(dest.name)}{uuid.uuid4().hex[:8]}.part"
        try:
            os.link(src, tmp)
            os.replace(tmp, dest)
            return "linked"
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if link == "hardlink":
                raise InputError(f"cannot hard-link {src} into {dest.parent} ({exc}); use --copy (link='copy' in Python) when "
                                 "the datasets are on another file system") from exc
    with atomic_path(dest) as tmp_path:
        shutil.copyfile(src, tmp_path)
    return "copied"


def _read_list(test_list: str | os.PathLike[str] | Sequence[str] | None) -> list[str]:
    if test_list is None:
        return []
    if isinstance(test_list, (str, os.PathLike)):
        path = Path(test_list)
        if not path.is_file():
            raise InputError(f"test list {path} not found; expected a text file with one case or patient id a line")
        return [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.split("#", 1)[0].strip()]
    return [str(x) for x in test_list]


def merge_datasets(sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, seed: int = 0,
                   val_fraction: float = 0.2, test_list: str | os.PathLike[str] | Sequence[str] | None = None,
                   link: str = "auto", prefix_ids: bool = False, name: str | None = None,
                   overwrite: bool = False) -> DatasetManifest:
    """Merge prepared datasets (rules in the module docstring) into ``out_dir``.

    Args:
        sources: prepared dataset folders (each with ``manifest.json``), at least one.
        out_dir: the merged dataset folder (created; not inside a source, no source inside it).
        seed: seed of the patient-level split.
        val_fraction: fraction of patients (outside the test list) in validation; 0.2 = the paper's 80/20.
        test_list: a file (one id a line, ``#`` comments) or a list of case / patient ids of the
            merged dataset to hold out as ``test``, added to the sources' test splits.
        link: ``"auto"`` (hard link, else copy), ``"hardlink"`` (fail when impossible), ``"copy"``.
        prefix_ids: prefix case and patient ids with the source folder's name.
        name: the merged dataset's name (default: the source names joined by ``+``).
        overwrite: replace an existing merged dataset's manifest (its files are replaced as needed).

    Returns:
        the saved :class:`~rrcunet.data.manifest.DatasetManifest`.

    Raises:
        InputError: a source that is not a prepared dataset, clashing case ids, an output inside a
            source, an existing merged dataset without ``overwrite``, an unknown test id.

    Example::

        merge_datasets(["prepared/interobs", "prepared/lung1", "prepared/msd"], "prepared/paper", seed=0)
    """
    if link not in ("auto", "hardlink", "copy"):
        raise InputError(f"link must be 'auto', 'hardlink' or 'copy', not {link!r}")
    if not sources:
        raise InputError("merge-datasets needs at least one source dataset folder")
    out = Path(out_dir)
    out_r = out.resolve()
    roots = [Path(s) for s in sources]
    if len({r.resolve() for r in roots}) != len(roots):
        raise InputError(f"a source is listed twice: {[str(r) for r in roots]}")
    for r in roots:
        rr = r.resolve()
        if rr == out_r or rr in out_r.parents or out_r in rr.parents:
            raise InputError(f"output {out} and source {r} overlap; the merged dataset must be a separate folder")
    if (out / MANIFEST_NAME).is_file() and not overwrite:
        raise InputError(f"{out} already holds a dataset ({MANIFEST_NAME}); pass --overwrite to remake it")
    manifests = [DatasetManifest.load(r) for r in roots]
    for r, m in zip(roots[1:], manifests[1:]):
        if m.labels != manifests[0].labels:
            raise InputError(f"{r}: labels {m.labels} differ from {roots[0]}'s {manifests[0].labels}; every source must "
                             "use 0 background, 1 lung, 2 tumour (prepare it with `rrcunet import`)")
    prefixes = [f"{_clean(r.resolve().name)}__" if prefix_ids else "" for r in roots]
    if prefix_ids and len(set(prefixes)) != len(prefixes):
        raise InputError(f"two sources have the same folder name ({[r.name for r in roots]}); rename one to use "
                         "--prefix-ids")

    owner: dict[str, Path] = {}
    clashes: list[str] = []
    patients_of: dict[str, set[str]] = {}
    for r, m, pre in zip(roots, manifests, prefixes):
        for c in m.cases:
            cid = pre + c.case_id
            if cid in owner:
                clashes.append(f"{cid} ({owner[cid]} and {r})")
            owner[cid] = r
            patients_of.setdefault(pre + c.patient_id, set()).add(str(r))
    if clashes:
        raise InputError(f"case ids clash between sources: {', '.join(clashes[:5])}"
                         f"{' …' if len(clashes) > 5 else ''}; pass --prefix-ids to prefix every id with its "
                         "source folder's name")
    shared = sorted(p for p, srcs in patients_of.items() if len(srcs) > 1)
    if shared:
        logger.warning("%d patient id(s) occur in more than one source and are kept together as one patient: %s",
                       len(shared), ", ".join(shared[:10]))

    out.mkdir(parents=True, exist_ok=True)
    cases: list[CaseEntry] = []
    held: list[str] = []
    actions = {"linked": 0, "copied": 0, "kept": 0}
    for r, m, pre in zip(roots, manifests, prefixes):
        test_ids = set(m.split.test)
        for c in m.cases:
            cid = pre + c.case_id
            rel: dict[str, str | None] = {}
            for what, folder in (("image", "images"), ("label", "labels"), ("lung", "lungs")):
                src_rel = getattr(c, what)
                if src_rel is None:
                    rel[what] = None
                    continue
                src = m.resolve(r, src_rel)
                if not src.is_file():
                    raise InputError(f"{r}: case {c.case_id} {what} file {src} is missing; re-run its import first")
                dest_rel = f"{folder}/{cid}{image_suffix(src) or src.suffix}"
                actions[place_file(src, out / dest_rel, link=link, reuse_copies=not overwrite)] += 1
                rel[what] = dest_rel
            source = dict(c.source)
            source["merged_from"] = {"dataset": m.name, "root": str(r.resolve()), "case_id": c.case_id}
            cases.append(CaseEntry(case_id=cid, image=str(rel["image"]), label=rel["label"], lung=rel["lung"],
                                   patient=pre + c.patient_id, source=source))
            if c.case_id in test_ids:
                held.append(cid)

    # the test list: ids of the merged dataset (case or patient); a patient brings all its scans
    by_case = {c.case_id: c for c in cases}
    test_patients = {by_case[cid].patient_id for cid in held}
    unknown = []
    for item in _read_list(test_list):
        if item in by_case:
            test_patients.add(by_case[item].patient_id)
        elif any(c.patient_id == item for c in cases):
            test_patients.add(item)
        else:
            unknown.append(item)
    if unknown:
        raise InputError(f"test list names ids that are neither a case nor a patient of the merged dataset: "
                         f"{', '.join(unknown[:10])}" + (" (with --prefix-ids, ids carry the source prefix, "
                                                         "e.g. lung1__LUNG1-001)" if prefix_ids else ""))
    test = tuple(c.case_id for c in cases if c.patient_id in test_patients)
    split = make_split(cases, val_fraction=val_fraction, seed=seed, test=test)
    description = (f"Merged by `rrcunet experiment merge-datasets` from {', '.join(m.name for m in manifests)} "
                   f"({', '.join(str(len(m.cases)) for m in manifests)} cases); patient-level split seed {seed}, "
                   f"val fraction {val_fraction}, {len(test)} test case(s); files {link if link != 'auto' else 'hard-linked or copied'}.")
    manifest = DatasetManifest(name=name or "+".join(m.name for m in manifests), cases=tuple(cases), split=split,
                               labels=dict(manifests[0].labels), description=description)
    manifest.save(out)
    logger.info("merged %d cases into %s (%d linked, %d copied, %d kept); split %d train / %d val / %d test",
                len(cases), out, actions["linked"], actions["copied"], actions["kept"], len(split.train),
                len(split.val), len(split.test))
    return manifest
