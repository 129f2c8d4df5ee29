"""Determinism on CPU: the same seed and data give bit-identical weights, and the same model and
CT give bit-identical masks.

Files are compared tensor by tensor, byte for byte: the files themselves are never byte-identical,
because safetensors writes the metadata map of a header in an arbitrary order.

``tests/training/test_trainer.py::test_resume_is_exact_and_seed_determines_run`` proves it for the
library call (and that another seed changes the weights); here it is the command line, with the
preprocessing cache rebuilt for each run, compared file against file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrcunet.cli.main import main
from tests.reliability.rel_helpers import chest_ct, tiny_model

#: metadata that legitimately differs between two runs: where the run and its cache were written, how long it took
VOLATILE = {"run_dir", "cache_dir", "elapsed_s", "epoch_time_s", "created", "runtime_s", "path", "seconds"}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _rng_blob(blob: bytes):
    """An RNG-state blob (itself a small safetensors file) as comparable data.

    safetensors writes its ``__metadata__`` map in an arbitrary order (a Rust HashMap), so two
    blobs of equal content can differ in their bytes; compare what they hold instead.
    """
    from safetensors.torch import load

    from rrcunet.training.checkpoint import _blob_metadata

    return {k: v.numpy().tobytes() for k, v in load(blob).items()}, _blob_metadata(blob)


def _tensors_and_meta(path: Path):
    """Every tensor of a safetensors file as raw bytes (RNG-state blobs decoded), and its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k).numpy().tobytes() for k in fh.keys()}
        header = fh.metadata()
    tensors = {k: (_rng_blob(v) if k.startswith("rng.") else v) for k, v in tensors.items()}
    meta = {k: (_strip(json.loads(v)) if k == "rrcunet" else v) for k, v in header.items()}
    return tensors, meta


def test_same_seed_same_data_gives_bit_identical_weights(tmp_path):
    from tests.training.conftest import tiny_overrides, write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", n=3, n_val=1)
    extra = ("model.base_filters=2", "model.levels=2", "model.norm_groups=1", "model.dropout=0.2",
             "augment.flip_prob=0.5", "augment.affine_prob=0.5")
    for run in ("a", "b"):
        overrides = tiny_overrides(data, epochs=2, extra=extra + (f"data.cache_dir={tmp_path / ('cache_' + run)}",))
        assert main(["train", "-o", str(tmp_path / run), *overrides]) == 0
    for name in ("best.safetensors", "checkpoints/last.safetensors"):
        ta, ma = _tensors_and_meta(tmp_path / "a" / name)
        tb, mb = _tensors_and_meta(tmp_path / "b" / name)
        assert ta.keys() == tb.keys() and len(ta) > 10
        different = [k for k in ta if ta[k] != tb[k]]
        assert not different, f"{name}: tensors differ: {different[:5]}"
        assert ma == mb, name
    # the preprocessing caches, built independently, hold the same arrays too
    caches = [sorted((tmp_path / f"cache_{r}").rglob("*.safetensors")) for r in "ab"]
    assert len(caches[0]) == 3 and [p.name for p in caches[0]] == [p.name for p in caches[1]]
    for pa, pb in zip(*caches):
        assert _tensors_and_meta(pa)[0] == _tensors_and_meta(pb)[0]


@pytest.mark.parametrize("options", [[], ["--tta"]], ids=["plain", "tta"])
def test_predicting_twice_gives_identical_masks(tmp_path, options):
    from rrcunet.io import read_image, write_volume

    model = tiny_model(tmp_path / "m.safetensors")
    write_volume(chest_ct(4), tmp_path / "in" / "c.nii.gz")
    docs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(model), "--device", "cpu",
                     "--no-progress", "--save-probabilities", *options]) == 0
        docs.append(_strip(json.loads((out / "c.json").read_text())))
    seg_a, seg_b = (read_image(tmp_path / r / "c_seg.nii.gz", kind="label") for r in "ab")
    assert np.array_equal(seg_a.array, seg_b.array) and seg_a.geometry == seg_b.geometry
    for cls in ("lung", "tumour"):
        pa, pb = (read_image(tmp_path / r / f"c_prob_{cls}.nii.gz", check_intensity=False).array for r in "ab")
        assert pa.tobytes() == pb.tobytes(), cls
    assert docs[0] == docs[1]
