"""The fixed synthetic benchmark dataset of an experiment: :func:`ensure_phantom_benchmark`.

The dataset is :func:`rrcunet.synthetic.write_phantom_dataset` with ``n_train + n_val + n_test``
cases of one seed; its manifest split is then replaced by a fixed one: the **last** ``n_test``
cases (``phantom_{n_train+n_val:04d}`` …) are the held-out ``test`` list, and the other cases are
split at patient level (:func:`rrcunet.data.manifest.make_split`, seeded) into exactly ``n_val``
validation and ``n_train`` training cases. Case ``i`` depends only on ``(seed, i)`` and the
generator options, so the dataset is the same on every machine.

A folder that already holds the dataset is reused when the stamp ``benchmark.json`` (the
benchmark options and the generator version) matches; another dataset there is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrcunet.config import config_to_dict
from rrcunet.data.manifest import MANIFEST_NAME, DatasetManifest, make_split
from rrcunet.errors import InputError
from rrcunet.experiments.config import PhantomBenchmarkConfig
from rrcunet.io.atomic import atomic_write_text
from rrcunet.synthetic import write_phantom_dataset
from rrcunet.synthetic.phantom import GENERATOR_VERSION

logger = logging.getLogger(__name__)

STAMP_NAME = "benchmark.json"


def _stamp(spec: PhantomBenchmarkConfig) -> dict[str, Any]:
    return {"schema": "rrcunet-phantom-benchmark", "generator_version": GENERATOR_VERSION,
            "benchmark": config_to_dict(spec)}


def ensure_phantom_benchmark(out_dir: str | Path, spec: PhantomBenchmarkConfig, *,
                             progress: bool = False) -> Path:
    """Generate the benchmark dataset into ``out_dir`` unless it is already there; return the folder.

    Args:
        out_dir: dataset folder (``EXPERIMENT/data``).
        spec: the benchmark (seed, preset, split sizes, generator options).
        progress: log each generated case.

    Raises:
        InputError: ``out_dir`` holds a different benchmark or another dataset.
    """
    out = Path(out_dir)
    stamp = _stamp(spec)
    stamp_path = out / STAMP_NAME
    if (out / MANIFEST_NAME).is_file():
        if stamp_path.is_file():
            try:
                found = json.loads(stamp_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                found = None
            if found == stamp:
                return out
            raise InputError(
                f"{out} holds a phantom benchmark made with other options ({stamp_path}: {found}); expected "
                f"{stamp}. Use another experiment folder, or delete {out} to regenerate it"
            )
        if not (out / ".benchmark_incomplete").is_file():
            raise InputError(f"{out} holds a dataset that this experiment did not generate ({MANIFEST_NAME} without "
                             f"{STAMP_NAME}); use another experiment folder or pass dataset=DIR to use it as is")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".benchmark_incomplete"
    marker.write_text("generation in progress; rerun the experiment to regenerate\n", encoding="utf-8")
    cfg = spec.phantom_config()

    def _progress(i: int, n: int, cid: str) -> None:
        if progress:
            logger.info("benchmark phantom %d/%d: %s", i, n, cid)

    logger.info("generating the phantom benchmark (%d cases, seed %d, preset %s) into %s", spec.n_total,
                spec.seed, spec.size, out)
    manifest = write_phantom_dataset(
        out, spec.n_total, seed=spec.seed, config=cfg, overwrite=True,
        name=f"phantom-benchmark-seed{spec.seed}", progress=_progress)
    ids = [c.case_id for c in manifest.cases]
    test = tuple(ids[spec.n_train + spec.n_val:])
    pool = [c for c in manifest.cases if c.case_id not in set(test)]
    frac = spec.n_val / len(pool)
    split = make_split(pool, val_fraction=frac, seed=spec.seed)
    if len(split.val) != spec.n_val:  # make_split rounds; never off for these sizes, but be exact
        raise RuntimeError(f"split gave {len(split.val)} validation cases, expected {spec.n_val}")
    split = type(split)(seed=split.seed, train=split.train, val=split.val, test=test)
    fixed = DatasetManifest(
        name=manifest.name, cases=manifest.cases, split=split, labels=manifest.labels,
        description=(manifest.description + f" Fixed benchmark split: {spec.n_train} train / {spec.n_val} val "
                     f"(patient level, seed {spec.seed}) / {spec.n_test} held-out test (the last cases)."))
    fixed.save(out)
    atomic_write_text(stamp_path, json.dumps(stamp, indent=2) + "\n")
    marker.unlink()
    return out


def tumour_facts(source: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The phantom tumour facts of a manifest case ``source`` (``None`` when it records none)."""
    tumours = source.get("tumours") if isinstance(source, Mapping) else None
    if not isinstance(tumours, list):
        return None
    return [dict(t) for t in tumours if isinstance(t, Mapping)]


def benchmark_composition(dataset_dir: str | Path, subset: str = "test") -> dict[str, int]:
    """Counts of the tumours of a dataset split by location class and size (for the reports)."""
    manifest = DatasetManifest.load(dataset_dir)
    counts: dict[str, int] = {"cases": 0, "tumours": 0, "cases_without_tumour": 0, "touching_chest_wall": 0,
                              "touching_mediastinum": 0, "under_1_ml": 0}
    for case in manifest.subset(subset):
        counts["cases"] += 1
        facts = tumour_facts(case.source) or []
        if not facts:
            counts["cases_without_tumour"] += 1
        for t in facts:
            counts["tumours"] += 1
            counts["touching_chest_wall"] += bool(t.get("touches_chest_wall"))
            counts["touching_mediastinum"] += bool(t.get("touches_mediastinum"))
            counts["under_1_ml"] += float(t.get("volume_ml", 0.0)) < 1.0
    return counts
