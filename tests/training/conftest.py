"""Fixtures of the training tests: a tiny prepared dataset in the canonical layout, and tiny configs.

The dataset is written here (not by the phantom generator) so these tests depend only on the
layout contract: ``manifest.json`` + ``images/ labels/ lungs/`` NIfTI files. Each case is a
40×40×20 CT (air outside a soft-tissue body, two lungs at −850 HU, a +30 HU tumour ball in one
lung), its 0/1/2 label map and its 0/1 lung region (tumour included).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SHAPE = (40, 40, 20)
SPACING = (2.0, 2.0, 3.0)


def _write(array: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    from rrcunet.io.volume import Geometry, Volume

    vol = Volume(array, Geometry(SHAPE, SPACING, (0.0, 0.0, 0.0)), "image")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(vol.to_sitk(), str(path))


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in SHAPE), indexing="ij")
    body = ((x - 20) / 17) ** 2 + ((y - 20) / 14) ** 2 <= 1
    lungs = np.zeros(SHAPE, bool)
    for cx in (12, 28):
        lungs |= ((x - cx) / 6) ** 2 + ((y - 20) / 9) ** 2 + ((z - 10) / 8) ** 2 <= 1
    cx = 12 + rng.integers(-2, 3) if rng.random() < 0.5 else 28 + rng.integers(-2, 3)
    cy, cz, r = 20 + rng.integers(-3, 4), 10 + rng.integers(-2, 3), 2.5 + 1.5 * rng.random()
    tumour = ((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 1.5) ** 2 <= r**2) & lungs
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, SHAPE)
    ct = np.where(lungs, -850.0 + rng.normal(0, 20, SHAPE), ct)
    ct = np.where(tumour, 30.0 + rng.normal(0, 15, SHAPE), ct)
    label = np.where(tumour, 2, np.where(lungs, 1, 0)).astype(np.uint8)
    return ct.astype(np.int16), label, lungs.astype(np.uint8)


def write_tiny_dataset(root: Path, n: int = 4, n_val: int = 1, seed: int = 0) -> Path:
    """A prepared dataset of ``n`` cases, the last ``n_val`` of them in the validation split."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        cid = f"case{i:02d}"
        ct, label, lung = make_case(rng)
        _write(ct, root / "images" / f"{cid}.nii.gz")
        _write(label, root / "labels" / f"{cid}.nii.gz")
        _write(lung, root / "lungs" / f"{cid}.nii.gz")
        cases.append({"case_id": cid, "image": f"images/{cid}.nii.gz", "label": f"labels/{cid}.nii.gz",
                      "lung": f"lungs/{cid}.nii.gz", "patient": cid, "source": {"generator": "tests"}})
    ids = [c["case_id"] for c in cases]
    manifest = {"version": 1, "name": "tiny", "description": "training-test volumes",
                "labels": {"0": "background", "1": "lung", "2": "tumour"}, "cases": cases,
                "split": {"seed": 0, "train": ids[: n - n_val], "val": ids[n - n_val:], "test": []}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"), n=4, n_val=1)


def tiny_overrides(dataset: Path, *, epochs: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """Overrides that make any config a seconds-long CPU run on the tiny dataset."""
    return [
        f"data.dataset={dataset}", "data.num_workers=0",
        "preprocess.target_shape=32,32,16",
        "model.base_filters=4", "model.levels=3", "model.norm_groups=2",
        f"schedule.epochs={epochs}",
        "runtime.device=cpu", "runtime.progress=false", "runtime.tensorboard=false", "runtime.num_threads=1",
        *extra,
    ]
