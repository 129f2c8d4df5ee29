"""Export a tumour model file as a MONAI bundle: :func:`export_monai_bundle`
(``rrcunet export --format monai-bundle``).

A MONAI bundle (MONAI's "Model Bundle" specification) is a folder that MONAI's bundle API
(``monai.bundle.ConfigParser``, ``python -m monai.bundle run``), MONAI Label and MONAI Deploy load::

    OUT/configs/metadata.json    what the network takes and gives (network_data_format), versions
    OUT/configs/inference.json   the preprocessing, the network, the inferer and the postprocessing,
                                 as MONAI components in MONAI's config syntax
    OUT/models/model.ts          the TorchScript export (rrcunet.inference.export.export_torchscript)
    OUT/docs/README.md           how to run it, and what differs from `rrcunet predict`

The preprocessing is ours (docs/preprocessing.md) rebuilt from MONAI transforms:

==============================  ============================================================
rrcunet step                     MONAI transforms in the bundle
==============================  ============================================================
read CT and lung mask (NIfTI)    ``LoadImaged`` (nibabel reader), ``EnsureChannelFirstd``
orient to LPS                    ``Orientationd(axcodes="LPS")``
clip HU, z-normalise (whole      ``ScaleIntensityRanged`` (identity map with ``clip=True``),
scan)                            ``NormalizeIntensityd``
crop to the lungs + margin (mm)  ``CropForegroundd(source_key="lung")``; its margin is in
                                 voxels, so a ``Lambda`` computes it per scan from the spacing
resize to the network grid       ``Resized`` (trilinear, voxel centres); the lung is then
                                 thresholded at 0.5 (``AsDiscreted``)
two input channels               ``ConcatItemsd(["image", "lung"])``
==============================  ============================================================

**No MONAI transform**: the lung region itself (the classical extractor or the Coordinate-UNet),
so the bundle takes it as a second input file, ``lung``, e.g. from ``rrcunet lungmask CT -o
lung.nii.gz``; and the way back onto the original grid with the minimum-volume and outside-lung
clean-up (``rrcunet predict`` inverts every step exactly; the bundle's ``SaveImaged`` writes the
label map on the network grid, with the affine MONAI tracked).
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrcunet import __version__
from rrcunet.errors import ConfigError, InputError
from rrcunet.inference.bundled import bundled_model_path
from rrcunet.inference.export import export_torchscript
from rrcunet.inference.predictor import file_sha256
from rrcunet.io.atomic import atomic_write_text
from rrcunet.models.model_file import ModelMeta, load_model
from rrcunet.preprocessing import PreprocessConfig
from rrcunet.tasks import get_task

logger = logging.getLogger(__name__)

BUNDLE_VERSION = "0.1.0"
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def _preprocess_of(meta: ModelMeta) -> PreprocessConfig:
    pre = meta.preprocess or PreprocessConfig()
    if pre.target_shape is None:
        raise ConfigError("the model file was trained at a target spacing, not a fixed grid; a MONAI bundle needs "
                          "the fixed network grid (export it with --format torchscript --shape X Y Z instead)")
    if tuple(np.asarray(pre.canonical_direction, float).ravel()) != tuple(np.eye(3).ravel()):
        raise ConfigError("the model file's canonical direction is not LPS; the bundle's Orientationd needs LPS")
    return pre


def inference_config(meta: ModelMeta) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` for a tumour model (MONAI config syntax)."""
    pre = _preprocess_of(meta)
    margin = [float(m) for m in (pre.margin_mm if isinstance(pre.margin_mm, (list, tuple)) else [pre.margin_mm] * 3)]
    lo, hi = (float(c) for c in pre.clip)
    keys = ["image", "lung"]
    return {
        "imports": ["$import math", "$import glob", "$import numpy as np", "$import torch", "$import monai"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "device": "$torch.device('cpu')",
        "margin_mm": margin,
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "network": "$@network_def.eval()",
        "datalist": "$[{'image': i, 'lung': i.replace('_ct.nii.gz', '_lung.nii.gz')} "
                    "for i in sorted(glob.glob(@dataset_dir + '/*_ct.nii.gz'))]",
        "crop_margin": "$lambda d: [int(math.ceil(m / float(s) - 1e-9)) for m, s in "
                       "zip(@margin_mm, d['lung'].pixdim.tolist())]",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": keys, "reader": "NibabelReader", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": keys},
                {"_target_": "Orientationd", "keys": keys, "axcodes": "LPS"},
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi, "b_min": lo,
                 "b_max": hi, "clip": True},
                {"_target_": "NormalizeIntensityd", "keys": "image"},
                {"_target_": "Lambda", "func": "$lambda d: monai.transforms.CropForegroundd(keys=['image', 'lung'], "
                                               "source_key='lung', margin=@crop_margin(d), allow_smaller=True)(d)"},
                {"_target_": "Resized", "keys": keys, "spatial_size": [int(s) for s in pre.target_shape],
                 "mode": "trilinear", "align_corners": False},
                {"_target_": "AsDiscreted", "keys": "lung", "threshold": 0.5},
                {"_target_": "ConcatItemsd", "keys": keys, "name": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$np.uint8", "resample": False, "separate_folder": False},
            ],
        },
        # a plain loop rather than MONAI's SupervisedEvaluator, which needs pytorch-ignite; no_grad around
        # each case only (a global set_grad_enabled(False) would leak into the caller's process)
        "infer": "$torch.no_grad()(lambda d: @postprocessing({'pred': monai.data.MetaTensor(@inferer("
                 "d['image'][None].to(@device), @network)[0], affine=d['image'].affine, meta=d['image'].meta)}))",
        "run": ["$[@infer(d) for d in @dataset]"],
    }


def metadata(meta: ModelMeta, source_sha256: str) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json`` (MONAI's metadata schema)."""
    import monai  # lazy: only the bundle export needs MONAI's version

    pre = _preprocess_of(meta)
    task = get_task(meta.task)
    shape = [int(s) for s in pre.target_shape]
    return {
        "schema": META_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by rrcunet {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"nibabel": "", "rrcunet": __version__},
        "name": "rrcunet lung tumour segmentation",
        "task": "Lung tumour segmentation in chest CT (background / lung / tumour)",
        "description": ("RRc-UNet 3D (Le & Saut) exported from an rrcunet model file. Inputs: a chest CT in HU and "
                        "its lung-region mask on the same grid (rrcunet lungmask CT -o LUNG)."),
        "authors": "rrcunet contributors",
        "copyright": "see the rrcunet licence",
        "references": ["Le & Saut, RRc-UNet 3D for lung tumor segmentation from CT scans of Non-Small Cell Lung "
                       "Cancer patients"],
        "intended_use": "research; not for clinical use",
        "source_model_sha256": source_sha256,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": task.in_channels,
                "spatial_shape": shape, "dtype": "float32", "value_range": [], "is_patch_data": False,
                "channel_def": {"0": "CT, clipped and z-normalised", "1": "lung region (0/1)"}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(meta.labels),
                "spatial_shape": shape, "dtype": "float32", "value_range": [], "is_patch_data": False,
                "channel_def": {str(k): v for k, v in meta.labels.items()}}},
        },
    }


README = """# rrcunet MONAI bundle

Exported by `rrcunet export --format monai-bundle` (rrcunet {version}) from a model file with
SHA-256 `{sha}`.

Put each case as `data/<case>_ct.nii.gz` (CT in HU) and `data/<case>_lung.nii.gz` (its lung region,
`rrcunet lungmask <case>_ct.nii.gz -o data/<case>_lung.nii.gz`), then:

```bash
python -m monai.bundle run --config_file configs/inference.json --bundle_root .
```

Label maps (0 background, 1 lung, 2 tumour) are written to `eval/` on the network grid
({shape}, the lung box resampled). `rrcunet predict` gives the same labels on that grid and also
maps them back onto the original scan, with the clean-up the model file chose; use it where masks
must land on the scan (docs/inference.md in rrcunet).
"""


def export_monai_bundle(out_dir: str | os.PathLike[str], *, model_path: str | os.PathLike[str] | None = None,
                        overwrite: bool = False) -> Path:
    """Write a MONAI bundle of a tumour model file (default: the bundled model) into ``out_dir``.

    Raises:
        ConfigError: a lung model (the bundle is for the tumour task), or a model trained at a target spacing.
        InputError: ``out_dir`` already holds a bundle and ``overwrite`` is false.
    """
    src = Path(model_path) if model_path is not None else bundled_model_path("tumour")
    out = Path(out_dir)
    if (out / "configs" / "inference.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a MONAI bundle; pass --overwrite to replace it, or choose another -o")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a folder for -o")
    model, meta = load_model(src, device="cpu")
    if not get_task(meta.task).crop_to_lungs:
        raise ConfigError(f"{src} is a {meta.task!r} model; the MONAI bundle export is for tumour models")
    pre = _preprocess_of(meta)
    sha = file_sha256(src)
    example = torch.zeros((1, get_task(meta.task).in_channels, *[int(s) for s in pre.target_shape]))
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    export_torchscript(model, example, out / "models" / "model.ts")
    atomic_write_text(out / "configs" / "inference.json", json.dumps(inference_config(meta), indent=2) + "\n")
    atomic_write_text(out / "configs" / "metadata.json", json.dumps(metadata(meta, sha), indent=2) + "\n")
    atomic_write_text(out / "docs" / "README.md", README.format(version=__version__, sha=sha,
                                                                shape="×".join(map(str, pre.target_shape))))
    logger.info("MONAI bundle of %s written to %s (python %s)", src, out, platform.python_version())
    return out
