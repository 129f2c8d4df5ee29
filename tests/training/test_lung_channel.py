"""data.lung_channel: the tumour model's lung input from the dataset's masks or from the extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrcunet.data.dataset import build_cache, read_cached
from rrcunet.errors import ConfigError
from rrcunet.io import read_image
from rrcunet.preprocessing import PreprocessConfig, preprocess
from rrcunet.training import load_config
from tests.training.conftest import tiny_overrides, write_tiny_dataset


def test_extractor_lung_channel_is_what_inference_computes(tmp_path, monkeypatch):
    data = write_tiny_dataset(tmp_path / "data", n=2, n_val=1)
    # A stand-in extractor that differs from the dataset's lungs/ masks: everything below -500 HU.
    import rrcunet.data.dataset as dataset_mod

    class FakeExtractor:
        name = "fake"

        def __call__(self, ct):
            return ct.with_array((np.asarray(ct.array) < -500).astype(np.uint8), kind="label")

    monkeypatch.setattr(dataset_mod, "ClassicalLungExtractor", FakeExtractor)
    cfg = PreprocessConfig(target_shape=(16, 16, 8))
    from_dataset = build_cache(data, ["case00"], preprocess_config=cfg, task="tumour")
    from_extractor = build_cache(data, ["case00"], preprocess_config=cfg, task="tumour", lung_channel="extractor")
    assert from_dataset[0].path.parent != from_extractor[0].path.parent  # two caches, never mixed up

    ct = read_image(data / "images" / "case00.nii.gz")
    label = read_image(data / "labels" / "case00.nii.gz", kind="label")
    expected = preprocess(ct, FakeExtractor()(ct), label=label, config=cfg).image  # what predict feeds the network
    got = read_cached(from_extractor[0].path)["image"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    dataset_lung = read_cached(from_dataset[0].path)["image"][1]
    assert not torch.equal(dataset_lung, torch.from_numpy(got[1]))


def test_lung_channel_option_is_checked(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", n=2, n_val=1)
    cfg = load_config(None, tiny_overrides(data, extra=("data.lung_channel=extractor",)))
    assert cfg.data.lung_channel == "extractor"
    with pytest.raises(ConfigError, match="lung_channel must be 'dataset' or 'extractor'"):
        load_config(None, tiny_overrides(data, extra=("data.lung_channel=gt",)))
