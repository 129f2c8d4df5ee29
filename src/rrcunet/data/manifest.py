"""The prepared-dataset manifest: which cases exist, where their files are, where they came from,
and the seeded patient-level train/validation(/test) split.

Paths in the manifest are relative to the dataset root and may not escape it (an absolute path or
a ``..`` that leaves the root is refused), so a manifest from someone else cannot point the trainer
at arbitrary files.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rrcunet.config import config_from_dict, config_to_dict
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
LABELS = {0: "background", 1: "lung", 2: "tumour"}


@dataclass(frozen=True)
class CaseEntry:
    """One case (one CT scan) of a prepared dataset.

    ``patient`` groups scans of the same patient so the split never puts one patient on both
    sides. ``source`` records provenance (original paths, dataset, ROI names, DICOM UIDs).
    """

    case_id: str
    image: str
    label: str | None = None
    lung: str | None = None
    patient: str | None = None
    source: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def patient_id(self) -> str:
        return self.patient or self.case_id


@dataclass(frozen=True)
class Split:
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()


def make_split(cases: list[CaseEntry], *, val_fraction: float = 0.2, seed: int = 0,
               test: tuple[str, ...] = ()) -> Split:
    """Seeded patient-level split: all scans of a patient land on the same side.

    ``test`` case ids are held out first; the remaining patients are shuffled with ``seed`` and
    ``round(val_fraction * n_patients)`` of them (at least 1 when there are ≥ 2 patients) go to
    validation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), not {val_fraction}")
    test_set = set(test)
    unknown = test_set - {c.case_id for c in cases}
    if unknown:
        raise InputError(f"test list names unknown cases: {sorted(unknown)}")
    patients = sorted({c.patient_id for c in cases if c.case_id not in test_set})
    rng = random.Random(seed)
    rng.shuffle(patients)
    n_val = round(val_fraction * len(patients))
    if val_fraction > 0 and n_val == 0 and len(patients) >= 2:
        n_val = 1
    val_patients = set(patients[:n_val])
    train, val = [], []
    for c in cases:
        if c.case_id in test_set:
            continue
        (val if c.patient_id in val_patients else train).append(c.case_id)
    return Split(seed=seed, train=tuple(train), val=tuple(val), test=tuple(t for t in test if t in test_set))


def _safe_relative(root: Path, rel: str, what: str, manifest_path: Path) -> Path:
    p = PurePosixPath(rel)
    absolute = p.is_absolute() or rel.startswith(("/", "\\")) or (bool(p.parts) and ":" in p.parts[0])
    if not p.parts or absolute:
        raise InputError(f"{manifest_path}: {what} path {rel!r} must be relative to the dataset root")
    full = (root / Path(*p.parts)).resolve()
    root_r = root.resolve()
    if full != root_r and root_r not in full.parents:
        raise InputError(f"{manifest_path}: {what} path {rel!r} escapes the dataset root {root}")
    return full


@dataclass(frozen=True)
class DatasetManifest:
    """A prepared dataset: ``cases`` plus ``split``, stored as ``manifest.json`` in ``root``."""

    name: str
    cases: tuple[CaseEntry, ...]
    split: Split
    labels: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    description: str = ""
    version: int = MANIFEST_VERSION

    def case(self, case_id: str) -> CaseEntry:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise InputError(f"dataset {self.name!r} has no case {case_id!r}")

    def subset(self, which: str) -> list[CaseEntry]:
        if which not in ("train", "val", "test", "all"):
            raise InputError(f"subset must be train, val, test or all, not {which!r}")
        if which == "all":
            return list(self.cases)
        ids = getattr(self.split, which)
        return [self.case(i) for i in ids]

    # serialisation -------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(config_to_dict(self), indent=2)

    def save(self, root: str | Path) -> Path:
        return atomic_write_text(Path(root) / MANIFEST_NAME, self.to_json() + "\n")

    @classmethod
    def load(cls, root: str | Path) -> "DatasetManifest":
        root = Path(root)
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise InputError(f"{root} is not a prepared dataset: {MANIFEST_NAME} not found "
                             "(create one with `rrcunet import` or `rrcunet phantoms`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
        except RecursionError:
            raise InputError(f"{path}: JSON nested too deeply to be a manifest; recreate it with `rrcunet import` "
                             "or `rrcunet phantoms`") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise InputError(f"{path}: expected manifest version {MANIFEST_VERSION}, "
                             f"found {data.get('version') if isinstance(data, dict) else type(data).__name__}")
        try:
            manifest = config_from_dict(cls, {"name": root.name, **data})
        except ConfigError as exc:
            raise InputError(f"{path}: malformed manifest, {exc}") from None
        cases, split = manifest.cases, manifest.split
        for entry in cases:
            for what in ("image", "label", "lung"):
                if getattr(entry, what) is not None:
                    _safe_relative(root, getattr(entry, what), f"case {entry.case_id} {what}", path)
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise InputError(f"{path}: duplicate case ids")
        unknown = (set(split.train) | set(split.val) | set(split.test)) - set(ids)
        if unknown:
            raise InputError(f"{path}: split names unknown cases {sorted(unknown)[:5]}")
        sides = {"train": set(split.train), "val": set(split.val), "test": set(split.test)}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sides[a] & sides[b]
            if both:
                raise InputError(f"{path}: the split puts {len(both)} case(s) in both {a} and {b} "
                                 f"({', '.join(sorted(both)[:5])}); expected each case on one side, or "
                                 "validation would score cases the network trained on. Remake the split "
                                 "(rrcunet experiment merge-datasets DATASET -o NEW) or fix manifest.json")
        patient = {c.case_id: c.patient_id for c in cases}
        train_patients = {patient[c] for c in sides["train"]}
        leaked = sorted({patient[c] for c in sides["val"] | sides["test"]} & train_patients)
        if leaked:
            log.warning("%s: patient(s) %s have scans in train and in val/test; scores on them are optimistic",
                        path, leaked[:5])
        return manifest

    def resolve(self, root: str | Path, rel: str) -> Path:
        """Absolute path of a manifest-relative file, refusing paths that leave ``root``."""
        return _safe_relative(Path(root), rel, "file", Path(root) / MANIFEST_NAME)
