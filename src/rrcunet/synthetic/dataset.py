"""Writing phantom datasets in the canonical prepared layout (see :mod:`rrcunet.data`):
:func:`write_phantom_dataset`.

Layout (one patient per case)::

    OUT/manifest.json            DatasetManifest; each case's ``source`` holds the phantom facts
    OUT/images/<case>.nii.gz     CT in HU (int16)
    OUT/labels/<case>.nii.gz     0 background, 1 lung, 2 tumour
    OUT/lungs/<case>.nii.gz      0/1 lung region (lung ∪ tumours)
    OUT/dicom/<case>/ct/         with ``dicom=True``: the CT as a DICOM series,
    OUT/dicom/<case>/rtstruct.dcm    an RTSTRUCT (ROIs "Lung", "Tumour"),
    OUT/dicom/<case>/seg.dcm         and a DICOM SEG (segments "Lung", "Tumour")

With ``follow_up=True`` every ``<case>`` gets a second scan ``<case>_followup`` of the same patient
(:class:`~rrcunet.synthetic.phantom.FollowUp`, scenario from :func:`follow_up_plan`); its
``source`` names the baseline (``follow_up_of``), the scenario and the parameters.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.data.manifest import MANIFEST_NAME, CaseEntry, DatasetManifest, make_split
from rrcunet.errors import ConfigError, InputError
from rrcunet.io import write_ct_series, write_rtstruct, write_seg, write_volume
from rrcunet.synthetic.config import PRESETS, PhantomConfig
from rrcunet.synthetic.phantom import FollowUp, Phantom, generate_phantom

log = logging.getLogger(__name__)

LAYOUT_DIRS = ("images", "labels", "lungs", "dicom")

#: follow-up scenarios, in turn over the cases, with the range of each tumour's volume factor: a
#: clear shrinkage (diameters −33 to −47 %), a clear growth (+36 to +52 %), no change, no change
#: plus a new 13–16 mm nodule (1.1–2.1 mL), a slight growth (+3 to +9 % in diameter)
FOLLOW_UP_SCENARIOS: dict[str, tuple[float, float]] = {
    "shrinking": (0.15, 0.3), "growing": (2.5, 3.5), "stable": (0.85, 1.15), "new lesion": (0.85, 1.15),
    "slight growth": (1.1, 1.3)}


def follow_up_plan(seed: int, index: int, n_tumours: int) -> tuple[str, FollowUp]:
    """The scenario and :class:`FollowUp` of case ``index`` of a dataset seeded with ``seed``: the
    scenarios of :data:`FOLLOW_UP_SCENARIOS` in turn; volume factors drawn in the scenario's range;
    a shift of up to 10 mm per axis, a turn of up to 4°, the diaphragm up to 10 mm higher or lower."""
    names = list(FOLLOW_UP_SCENARIOS)
    name = names[index % len(names)]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7]))
    lo, hi = FOLLOW_UP_SCENARIOS[name]
    factors = tuple(float(f) for f in rng.uniform(lo, hi, n_tumours))
    shift = tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3))
    return name, FollowUp(volume_factors=factors, shift_mm=shift, rotation_deg=float(rng.uniform(-4.0, 4.0)),  # type: ignore[arg-type]
                          breathing_mm=float(rng.uniform(-10.0, 10.0)),
                          new_lesion_mm=float(rng.uniform(13.0, 16.0)) if name == "new lesion" else 0.0)
ROI_NAMES = {1: "Lung", 2: "Tumour"}


def case_id(index: int) -> str:
    return f"phantom_{index:04d}"


def case_seed(seed: int, index: int) -> int:
    """The phantom seed of case ``index`` of a dataset seeded with ``seed`` (a 31-bit integer)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0]
    return int(state) & 0x7FFFFFFF


def _uid(*parts: Any) -> str:
    # lazy: pydicom costs ~0.15 s at start-up; only DICOM phantoms need it
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["rrcunet.synthetic", *map(str, parts)])


def write_case_volumes(out: Path, cid: str, image: Any, label: Any, lungs: Any, *, overwrite: bool) -> dict[str, str]:
    """Write one case's CT, label map and lung region in the prepared layout; return their relative paths."""
    rel = {d: f"{d}/{cid}.nii.gz" for d in ("images", "labels", "lungs")}
    for key, volume in zip(("images", "labels", "lungs"), (image, label, lungs)):
        write_volume(volume, out / rel[key], overwrite=overwrite)
    return rel


def _existing_outputs(out: Path) -> list[Path]:
    found = []
    if (out / MANIFEST_NAME).exists():
        found.append(out / MANIFEST_NAME)
    for d in LAYOUT_DIRS:
        sub = out / d
        if sub.is_dir():
            found.extend(sorted(sub.glob("phantom_*")))
    return found


def _clear(found: list[Path]) -> None:
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_dicom(phantom: Phantom, folder: Path, *, patient_id: str, seed: int, overwrite: bool) -> dict[str, str]:
    """Write the phantom's CT as a DICOM series plus an RTSTRUCT and a DICOM SEG of its labels.

    Returns the written paths relative to ``folder.parent.parent`` (the dataset root).
    """
    ct_dir = folder / "ct"
    files = write_ct_series(
        phantom.image, ct_dir, patient_id=patient_id, patient_name=f"Phantom^{patient_id}",
        study_uid=_uid(seed, "study"), series_uid=_uid(seed, "series"),
        frame_of_reference_uid=_uid(seed, "frame"), series_description="rrcunet synthetic chest CT",
        study_description="rrcunet phantom", overwrite=overwrite)
    rt = write_rtstruct(phantom.label, files, folder / "rtstruct.dcm", roi_names=ROI_NAMES,
                        structure_set_label="phantom", overwrite=overwrite)
    seg = write_seg(phantom.label, files, folder / "seg.dcm", segment_labels=ROI_NAMES,
                    algorithm_name=None, series_description="phantom ground truth", overwrite=overwrite)
    root = folder.parent.parent
    return {"ct": ct_dir.relative_to(root).as_posix(), "rtstruct": Path(rt).relative_to(root).as_posix(),
            "seg": Path(seg).relative_to(root).as_posix()}


def write_phantom_dataset(out_dir: str | Path, n: int, *, seed: int = 0, size: str = "small", dicom: bool = False,
                          overwrite: bool = False, config: PhantomConfig | None = None, val_fraction: float = 0.2,
                          name: str | None = None, follow_up: bool = False,
                          progress: Callable[[int, int, str], None] | None = None) -> DatasetManifest:
    """Generate ``n`` phantoms and write them as a prepared dataset (layout in the module docstring).

    Args:
        out_dir: dataset folder (created). An existing phantom dataset there is refused unless
            ``overwrite``; with ``overwrite`` its manifest and ``phantom_*`` files are replaced
            (nothing else in the folder is touched).
        n: number of cases (≥ 1).
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``, so a dataset of ``n``
            cases is the first ``n`` cases of any larger one with the same seed.
        size: preset name (``"small"`` or ``"full"``); ignored when ``config`` is given.
        dicom: also write a DICOM CT series, an RTSTRUCT and a DICOM SEG per case.
        config: a full :class:`PhantomConfig` (overrides ``size``).
        val_fraction: fraction of patients in the validation split (seeded with ``seed``).
        name: dataset name in the manifest (default ``phantoms-<preset>-seed<seed>``).
        follow_up: also write ``<case>_followup``, a second scan of each patient (module docstring).
        progress: called as ``progress(i, n, case_id)`` after each case.

    Returns:
        The saved :class:`~rrcunet.data.manifest.DatasetManifest`.

    Example::

        manifest = write_phantom_dataset("data/phantoms", 8, seed=0, size="small")
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"number of phantoms must be an integer >= 1, not {n!r}")
    if config is None:
        if size not in PRESETS:
            raise ConfigError(f"unknown phantom size {size!r}; choose one of {sorted(PRESETS)}")
        config = PhantomConfig.preset(size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose a folder path")
    found = _existing_outputs(out) if out.exists() else []
    if found and not overwrite:
        raise InputError(f"output {out} already holds a phantom dataset ({found[0].name} …); "
                         "pass --overwrite (overwrite=True in Python) to replace it")
    if found:
        _clear(found)
    out.mkdir(parents=True, exist_ok=True)

    cases: list[CaseEntry] = []
    for i in range(int(n)):
        cid = case_id(i)
        s = case_seed(seed, i)
        t0 = time.perf_counter()
        ph = generate_phantom(s, config=config)
        rel = write_case_volumes(out, cid, ph.image, ph.label, ph.lungs, overwrite=overwrite)
        facts = ph.facts.to_dict()
        source: dict[str, Any] = {"dataset": "rrcunet-phantoms", "case_index": i, "dataset_seed": int(seed), **facts}
        if config != PRESETS.get(config.name):
            source["config"] = facts["config"]  # a custom config: keep it for reproducibility
        else:
            source.pop("config", None)
        if dicom:
            source["dicom"] = write_dicom(ph, out / "dicom" / cid, patient_id=cid, seed=s, overwrite=overwrite)
        cases.append(CaseEntry(case_id=cid, image=rel["images"], label=rel["labels"], lung=rel["lungs"],
                               patient=cid, source=source))
        log.info("phantom %s (seed %d): %s, %d tumour(s), %.1f s", cid, s, "×".join(map(str, ph.image.shape)),
                 len(ph.facts.tumours), time.perf_counter() - t0)
        if follow_up:
            scenario, plan = follow_up_plan(seed, i, len(ph.facts.tumours))
            fu = generate_phantom(s, config=config, follow_up=plan)
            fid = f"{cid}_followup"
            rel = write_case_volumes(out, fid, fu.image, fu.label, fu.lungs, overwrite=overwrite)
            fsource: dict[str, Any] = {"dataset": "rrcunet-phantoms", "case_index": i, "dataset_seed": int(seed),
                                       "follow_up_of": cid, "scenario": scenario, **fu.facts.to_dict()}
            fsource.pop("config", None)
            if dicom:
                fsource["dicom"] = write_dicom(fu, out / "dicom" / fid, patient_id=cid, seed=(s + 1) & 0x7FFFFFFF,
                                               overwrite=overwrite)
            cases.append(CaseEntry(case_id=fid, image=rel["images"], label=rel["labels"], lung=rel["lungs"],
                                   patient=cid, source=fsource))
        if progress is not None:
            progress(i + 1, int(n), cid)
    split = make_split(cases, val_fraction=val_fraction, seed=int(seed))
    manifest = DatasetManifest(
        name=name or f"phantoms-{config.name}-seed{seed}", cases=tuple(cases), split=split,
        description=(f"rrcunet synthetic chest-CT phantoms: {n} case(s), preset {config.name!r}, seed {seed}"
                     + (", each with a follow-up scan" if follow_up else "")
                     + (", with DICOM CT/RTSTRUCT/SEG" if dicom else "") + ". See docs/phantoms.md."),
    )
    manifest.save(out)
    return manifest
