"""Shared helpers for the inference and CLI tests: a tiny model file and small synthetic chests.

Imported as ``tests.inference.helpers`` (tests/ is a namespace package) by tests/inference and
tests/cli, so both use the same tiny network (2 base filters, 3 levels: a forward pass on the
32×32×16 network grid takes milliseconds) and the analytic chest of tests/lungmask/chest.py at a
coarse spacing (68×52×25 voxels), whose lungs the classical extractor finds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rrcunet.io import Geometry, Volume
from tests.lungmask.chest import synthetic_chest

TINY_KWARGS = {"base_filters": 2, "levels": 3}
NETWORK_SHAPE = (32, 32, 16)


def save_tiny_model(path: Path, *, task: str = "tumour", target_shape: tuple[int, int, int] | None = NETWORK_SHAPE,
                    target_spacing: tuple[float, float, float] | None = None, seed: int = 0,
                    tumour_bias: float | None = None) -> Path:
    """An untrained model file (RRc-UNet, or Coordinate-UNet for ``task="lung"``) written with save_model.

    ``tumour_bias`` sets the head bias so that one class wins everywhere (for deterministic outputs):
    a large positive value makes every voxel tumour (class 2; lung, class 1, for a lung model).
    """
    from rrcunet.models import build_model
    from rrcunet.preprocessing import PreprocessConfig
    from rrcunet.models.model_file import save_model

    torch.manual_seed(seed)
    name = "coordunet" if task == "lung" else "rrcunet"
    model = build_model(name, **TINY_KWARGS)
    if tumour_bias is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
            model.head.bias[-1] = tumour_bias
    cfg = PreprocessConfig(target_shape=target_shape, target_spacing=target_spacing)
    return save_model(path, model, model_name=name, model_kwargs=TINY_KWARGS, preprocess_config=cfg, task=task)


def chest(spacing: tuple[float, float, float] = (5.0, 5.0, 8.0)) -> tuple[Volume, Volume, Volume]:
    """``(ct, lung_region, label)``: the analytic chest, its lung region (0/1) and label map (0/1/2)."""
    c = synthetic_chest(spacing=spacing)
    label = np.zeros(c.ct.shape, dtype=np.uint8)
    label[c.lung_region] = 1
    label[c.tumour_wall | c.tumour_mediastinum] = 2
    lung = c.ct.with_array(c.lung_region.astype(np.uint8), kind="label")
    return c.ct, lung, c.ct.with_array(label, kind="label")


def write_chest_dataset(root: Path, case_ids: tuple[str, ...] = ("c1", "c2")) -> Path:
    """A prepared dataset of copies of the analytic chest (CT, label map, lung region), all in the
    validation split; returns ``root``."""
    import json

    from rrcunet.io import write_volume

    ct, lung, label = chest()
    for cid in case_ids:
        write_volume(ct, root / "images" / f"{cid}.nii.gz")
        write_volume(label, root / "labels" / f"{cid}.nii.gz")
        write_volume(lung, root / "lungs" / f"{cid}.nii.gz")
    cases = [{"case_id": c, "image": f"images/{c}.nii.gz", "label": f"labels/{c}.nii.gz",
              "lung": f"lungs/{c}.nii.gz", "patient": c} for c in case_ids]
    (root / "manifest.json").write_text(json.dumps({"version": 1, "name": "chest", "cases": cases, "split": {
        "seed": 0, "train": [], "val": list(case_ids), "test": []}}))
    return root


def oblique(volume: Volume, *, spacing: tuple[float, float, float] = (5.0, 4.2, 7.5), degrees: float = 20.0) -> Volume:
    """The same voxels on an oblique (rotated about two axes), anisotropic grid."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    geometry = Geometry(volume.shape, spacing, (12.5, -40.0, 101.0), tuple((rz @ rx).ravel()))
    return Volume(volume.array, geometry, volume.kind, dict(volume.meta))
