"""Predictor: a CT Volume in, a label map on exactly its grid out; network options (TTA, sliding
windows, bf16) and the errors a user can cause."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rrcunet.errors import ConfigError, InputError
from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.inference import bundled as bundled_mod
from rrcunet.io import Geometry, Volume, read_image, write_volume
from tests.inference.helpers import oblique, save_tiny_model

CPU = InferenceConfig(device="cpu", bf16=False)  # exact float32 comparisons below


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_file(tiny_model, config=CPU)


def test_nifti_input_gives_labels_on_the_identical_grid(predictor, chest_case, tmp_path):
    ct, _, _ = chest_case
    write_volume(ct, tmp_path / "ct.nii.gz")
    ct_file = read_image(tmp_path / "ct.nii.gz")
    result = predictor.predict_volume(ct_file)
    assert result.labels.geometry == ct_file.geometry
    assert result.labels.array.dtype == np.uint8 and set(np.unique(result.labels.array)) <= {0, 1, 2}
    assert result.lung.geometry == ct_file.geometry and result.lung.array.any()
    assert set(result.timings) == {"lungmask", "preprocess", "model", "invert", "postprocess", "measure", "quality"}


def test_oblique_anisotropic_input_gives_the_identical_grid(predictor, chest_case):
    ct = oblique(chest_case[0])
    result = predictor.predict_volume(ct)
    assert result.labels.geometry == ct.geometry
    assert result.labels.shape == ct.shape


def test_predicting_twice_gives_identical_masks(predictor, chest_case):
    ct, lung, _ = chest_case
    a = predictor.predict_volume(ct, lung).labels.array
    b = predictor.predict_volume(ct, lung).labels.array
    np.testing.assert_array_equal(a, b)


def test_probabilities_on_the_ct_grid_agree_with_the_labels(predictor, chest_case):
    ct, lung, _ = chest_case
    result = predictor.predict_volume(ct, lung, return_probabilities=True)
    p = result.probabilities
    assert p.array.shape == (3, *ct.shape) and p.geometry == ct.geometry
    np.testing.assert_allclose(p.array.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.argmax().array, predictor.predict_volume(ct, lung).labels.array)


def test_tta_is_the_mean_softmax_over_the_eight_mirrorings(tiny_model):
    tta = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, tta=True))
    x = torch.randn(2, 32, 32, 16, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros(3, 32, 32, 16)
    with torch.no_grad():
        for fx in (False, True):
            for fy in (False, True):
                for fz in (False, True):
                    dims = [d for d, f in zip((2, 3, 4), (fx, fy, fz)) if f]
                    inp = torch.flip(x[None], dims) if dims else x[None]
                    out = torch.softmax(tta.model(inp), dim=1)
                    expected += (torch.flip(out, dims) if dims else out)[0] / 8
    got = tta.run_network(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    plain = Predictor.from_file(tiny_model, config=CPU).run_network(x)
    assert not torch.allclose(got, plain, atol=1e-4)  # the mirrorings did change something


def test_tta_mirrors_only_along_the_axes_the_model_was_trained_to_flip(tmp_path, caplog):
    """A model file recording mirror_axes [0] averages 2 passes (identity, left-right); [] only 1."""
    from rrcunet.models.model_file import load_model, save_model

    net, meta = load_model(save_tiny_model(tmp_path / "m.safetensors", seed=3))
    x = torch.randn(2, 32, 32, 16, generator=torch.Generator().manual_seed(4))
    plain = Predictor.from_file(tmp_path / "m.safetensors", config=CPU).run_network(x)
    kwargs = dict(model_name=meta.model_name, model_kwargs=meta.model_kwargs,
                  preprocess_config=meta.preprocess, task=meta.task)
    save_model(tmp_path / "lr.safetensors", net, mirror_axes=[0], **kwargs)
    tta = Predictor.from_file(tmp_path / "lr.safetensors", config=dataclasses.replace(CPU, tta=True))
    assert tta.tta_flips == ((), (2,))
    with torch.no_grad():
        flipped = torch.flip(torch.softmax(net(torch.flip(x[None], (2,))), dim=1), (2,))[0]
    torch.testing.assert_close(tta.run_network(x), (plain + flipped) / 2, atol=1e-5, rtol=1e-5)
    save_model(tmp_path / "none.safetensors", net, mirror_axes=[], **kwargs)
    with caplog.at_level("WARNING"):
        never = Predictor.from_file(tmp_path / "none.safetensors", config=dataclasses.replace(CPU, tta=True))
    assert "trained without flips" in caplog.text and never.tta_flips == ((),)
    torch.testing.assert_close(never.run_network(x), plain)


def test_single_window_sliding_window_equals_the_plain_forward(tiny_model):
    x = torch.randn(2, 32, 32, 16, generator=torch.Generator().manual_seed(2))
    plain = Predictor.from_file(tiny_model, config=CPU).run_network(x)
    sw = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, sliding_window=True))
    torch.testing.assert_close(sw.run_network(x), plain, atol=1e-5, rtol=1e-5)


def test_native_resolution_sliding_window_keeps_the_grid(tiny_model, chest_case):
    ct = oblique(chest_case[0])
    sw = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, sliding_window=True, roi_size=(16, 16, 8),
                                                                     overlap=0.5))
    cfg = sw.preprocess_config(ct)
    assert cfg.target_shape is None and sorted(cfg.target_spacing) == sorted(ct.spacing)  # native, reordered
    result = sw.predict_volume(ct, chest_case[1].__class__(chest_case[1].array, ct.geometry, "label"))
    assert result.labels.geometry == ct.geometry
    # The network ran on the crop at the CT's own voxel size, bigger than one 16×16×8 window.
    assert result.record.network_shape == result.record.crop.shape
    assert any(s > r for s, r in zip(result.record.network_shape, (16, 16, 8)))


def test_bf16_autocast_runs_and_keeps_the_grid(tiny_model, chest_case):
    ct, lung, _ = chest_case
    result = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, bf16=True)).predict_volume(
        ct, lung, return_probabilities=True)
    assert result.labels.geometry == ct.geometry
    assert np.isfinite(result.probabilities.array).all()


def test_coordunet_lung_model_as_the_lung_extractor(tiny_model, chest_case, tmp_path):
    lung_model = save_tiny_model(tmp_path / "lung.safetensors", task="lung", target_shape=(32, 32, 16),
                                 tumour_bias=5.0)  # predicts "lung" everywhere
    cfg = dataclasses.replace(CPU, lung_method="coordunet", lung_model=str(lung_model))
    p = Predictor.from_file(tiny_model, config=cfg)
    ct = chest_case[0]
    result = p.predict_volume(ct)
    assert result.lung.geometry == ct.geometry
    assert result.lung.array.all()  # the lung model's own output was used as the lung channel
    assert p.describe()["lung_model"]["sha256"]


def test_user_errors(tiny_model, predictor, chest_case, tmp_path, monkeypatch):
    ct, lung, _ = chest_case
    shifted = Volume(lung.array, Geometry(lung.shape, lung.spacing, (1.0, 2.0, 3.0)), "label")
    with pytest.raises(InputError, match="lung mask .* is not on the CT grid"):
        predictor.predict_volume(ct, shifted)
    with pytest.raises(InputError, match=r"network input must be \(2, X, Y, Z\)"):
        predictor.run_network(np.zeros((1, 32, 32, 16), np.float32))
    bad_roi = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, sliding_window=True, roi_size=(30, 32, 16)))
    with pytest.raises(ConfigError, match="divisible by 4.*--roi-size 32 32 16"):
        bad_roi.run_network(np.zeros((2, 32, 32, 16), np.float32))
    with pytest.raises(ConfigError, match="needs a lung model file"):
        InferenceConfig(lung_method="coordunet")
    lung_only = save_tiny_model(tmp_path / "lung.safetensors", task="lung")
    with pytest.raises(InputError, match="expected a lung model"):
        Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, lung_method="coordunet", lung_model=str(tiny_model)))
    assert Predictor.from_file(lung_only, config=CPU).meta.task == "lung"
    monkeypatch.setitem(bundled_mod.BUNDLED_MODELS, "tumour", "not_there.safetensors")
    with pytest.raises(ConfigError, match=r"not_there\.safetensors is not installed.*rrcunet train --config cpu_tumour"):
        Predictor.from_file(None, config=CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_without_cuda_is_a_config_error(tiny_model):
    with pytest.raises(ConfigError, match="no CUDA device"):
        Predictor.from_file(tiny_model, config=InferenceConfig(device="cuda"))


def _patch_trained_model(path, patch):
    from rrcunet.models import build_model
    from rrcunet.preprocessing import PreprocessConfig
    from rrcunet.models.model_file import save_model
    from tests.inference.helpers import NETWORK_SHAPE, TINY_KWARGS

    torch.manual_seed(3)
    model = build_model("rrcunet", **TINY_KWARGS)
    return save_model(path, model, model_name="rrcunet", model_kwargs=TINY_KWARGS,
                      preprocess_config=PreprocessConfig(target_shape=NETWORK_SHAPE), task="tumour",
                      train_patch_size=patch)


def test_a_patch_trained_model_runs_windows_of_its_patch_size(tmp_path, caplog):
    from monai.inferers import sliding_window_inference

    p = Predictor.from_file(_patch_trained_model(tmp_path / "m.safetensors", [16, 16, 8]), config=CPU)
    assert p.train_patch_roi((32, 32, 16)) == (16, 16, 8)
    assert p.train_patch_roi((16, 16, 8)) is None  # the grid is one patch: no windows
    x = torch.randn(2, 32, 32, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = torch.softmax(sliding_window_inference(x[None], (16, 16, 8), CPU.sw_batch_size, p.model,
                                                          overlap=CPU.overlap, mode="gaussian"), dim=1)[0]
        whole = torch.softmax(p.model(x[None]), dim=1)[0]
    got = p.run_network(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, whole, atol=1e-3)  # windows did change the result
    # a patch the network cannot take is ignored, with a warning
    bad = Predictor.from_file(_patch_trained_model(tmp_path / "bad.safetensors", [15, 16, 8]), config=CPU)
    with caplog.at_level("WARNING"):
        assert bad.train_patch_roi((32, 32, 16)) is None
    assert "train_patch_size" in caplog.text
