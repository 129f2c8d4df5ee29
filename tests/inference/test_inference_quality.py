"""Quality flags, lesion confidence and the stochastic passes of ``--uncertainty`` (hand-made volumes
and the untrained tiny model: nothing here depends on a trained model's score)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rrcunet.errors import ConfigError
from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.inference.measure import measure_lesions, tumour_components
from rrcunet.inference.quality import QualityThresholds, air_estimate_hu, lesion_confidences, quality_report
from rrcunet.io import Geometry, Volume

CPU = InferenceConfig(device="cpu", bf16=False)


def chest(shape=(60, 60, 30), spacing=(5.0, 5.0, 5.0), air=-1000.0):
    """A box of soft tissue in room air with two 'lungs' of -850 HU; its lung mask."""
    hu = np.full(shape, air, np.float32)
    hu[5:55, 5:55, :] = 40.0
    lung = np.zeros(shape, np.uint8)
    lung[10:28, 10:50, 2:28] = 1
    lung[32:50, 10:50, 2:28] = 1
    hu[lung > 0] = -850.0
    g = Geometry(shape, spacing)
    return Volume(hu, g, "image"), Volume(lung, g, "label")


def codes(report):
    return [f["code"] for f in report["flags"]]


def report_for(ct, lung, tumour, prob=None, **thresholds):
    labels = np.where(np.asarray(lung.array) > 0, 1, 0).astype(np.uint8)
    labels[tumour] = 2
    comps = tumour_components(labels == 2)
    lesions = measure_lesions(labels, ct.geometry, components=comps)
    prob = np.where(labels == 2, 0.9, 0.0).astype(np.float32) if prob is None else prob
    extras = lesion_confidences(comps, prob, np.asarray(lung.array))
    lesions = [dataclasses.replace(les, **x) for les, x in zip(lesions, extras)]
    return quality_report(ct, lung, lesions, extras, QualityThresholds(**thresholds)), lesions


def test_a_clean_case_has_no_flag():
    ct, lung = chest()
    tumour = np.zeros(ct.shape, bool)
    tumour[15:20, 20:25, 10:14] = True
    report, lesions = report_for(ct, lung, tumour)
    assert codes(report) == []
    assert lesions[0].confidence == pytest.approx(0.9) and lesions[0].fraction_in_lung == 1.0
    assert report["checks"]["air_hu"] == pytest.approx(-1000.0) and report["checks"]["lung_to_body_air"] > 0.9


def test_each_check_raises_its_flag():
    ct, lung = chest()
    tumour = np.zeros(ct.shape, bool)
    tumour[15:20, 20:25, 10:14] = True
    low = np.where(tumour, 0.5, 0.0).astype(np.float32)
    assert codes(report_for(ct, lung, tumour, low)[0]) == ["low_confidence"]
    edge = np.zeros(ct.shape, bool)
    edge[15:20, 20:25, 0:3] = True          # touches the first slice
    assert "lesion_at_edge" in codes(report_for(ct, lung, edge)[0])
    wall = np.zeros(ct.shape, bool)
    wall[1:9, 20:25, 10:14] = True           # in the body wall: no voxel in the lung region
    report, _ = report_for(ct, lung, wall)
    assert "tumour_outside_lung" in codes(report)
    assert "lung_volume" in codes(report_for(ct, lung, tumour, lung_ml=(5000.0, 9000.0))[0])
    thick, thick_lung = chest(spacing=(5.0, 5.0, 6.0))
    assert "thick_slices" in codes(report_for(thick, thick_lung, tumour)[0])
    shifted = ct.with_array(np.asarray(ct.array) + 1024.0)  # a scan without its rescale intercept
    assert "hu_calibration" in codes(report_for(shifted, lung, tumour)[0])
    half = lung.with_array(np.asarray(lung.array).copy())
    half.array[32:50] = 0                      # one lung missed by the extractor
    assert "lung_mask_small" in codes(report_for(ct, half, tumour)[0])


def test_air_estimate_ignores_the_padding_outside_the_reconstruction_circle():
    hu = np.full((40, 40, 10), -1000.0, np.float32)
    hu[:5] = -3024.0
    hu[20:] = 40.0
    assert air_estimate_hu(hu) == pytest.approx(-1000.0)
    assert air_estimate_hu(np.full((4, 4, 4), -2048.0)) is None


def test_uncertainty_passes_give_a_map_and_lesion_uncertainty(tiny_model, chest_case):
    ct, lung, _ = chest_case
    plain = Predictor.from_file(tiny_model, config=CPU).predict_volume(ct, lung)
    assert plain.uncertainty is None and "quality" in plain.summary()
    config = dataclasses.replace(CPU, uncertainty=4)
    result = Predictor.from_file(tiny_model, config=config).predict_volume(ct, lung)
    unc = np.asarray(result.uncertainty.array)
    assert result.uncertainty.geometry == ct.geometry and unc.dtype == np.float32
    assert 0.0 <= unc.min() and unc.max() <= 1.0 and unc.max() > 0.0
    again = Predictor.from_file(tiny_model, config=config).predict_volume(ct, lung)
    np.testing.assert_array_equal(np.asarray(again.uncertainty.array), unc)  # seeded
    other = Predictor.from_file(tiny_model, config=dataclasses.replace(config, uncertainty_seed=1)).predict_volume(ct, lung)
    assert not np.array_equal(np.asarray(other.uncertainty.array), unc)
    assert all(les.mean_uncertainty is not None for les in result.lesions)
    summary = result.summary()
    assert all("mean_uncertainty" in les and "confidence" in les for les in summary["tumour"]["lesions"])


def test_stochastic_passes_without_perturbation_or_dropout_are_the_mirrored_mean(tiny_model, chest_case):
    import torch

    ct, lung, _ = chest_case
    pred = Predictor.from_file(tiny_model, config=dataclasses.replace(CPU, uncertainty=2, perturb_hu=0.0))
    dropouts = [m for m in pred.model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert dropouts  # the tiny RRc-UNet has dropout after its blocks: with it the passes differ
    mean_with_dropout, _ = pred.run_network_stochastic(pred.prepare(ct, lung).image)
    for m in dropouts:
        m.p = 0.0
    prepared = pred.prepare(ct, lung)
    mean, unc = pred.run_network_stochastic(prepared.image)
    flips = pred.tta_flips
    expected = (pred.run_network(prepared.image, flips=(flips[0],)) + pred.run_network(prepared.image, flips=(flips[1],))) / 2
    torch.testing.assert_close(mean, expected)
    entropy = -(expected * torch.log(expected.clamp_min(1e-12))).sum(0) / np.log(expected.shape[0])
    torch.testing.assert_close(unc, entropy)
    assert not torch.allclose(mean_with_dropout, mean)
    assert not any(m.training for m in dropouts)  # switched back off after the passes


@pytest.mark.parametrize("bad", [1, -2, True, 2.5])
def test_uncertainty_option_is_checked(bad):
    with pytest.raises(ConfigError, match="uncertainty"):
        InferenceConfig(uncertainty=bad)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_lesion_means_are_scipys_per_component_means(dtype):
    """lesion_confidences counts only the labelled voxels (issue 23); its means are those of
    scipy.ndimage.mean over the components' box, for many components of random shape."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(rng.random((50, 40, 20)) > 0.6)
    comps = tumour_components(mask)
    assert comps.count > 20
    prob = rng.random(mask.shape)
    prob = (prob * 255).round().astype(np.uint8) if dtype == np.uint8 else prob.astype(np.float32)
    lung = (rng.random(mask.shape) > 0.3).astype(np.uint8)
    unc = rng.random(mask.shape).astype(np.float32)
    extras = lesion_confidences(comps, prob, lung, unc)
    order = np.argsort(-comps.sizes, kind="stable") + 1
    box = comps.box
    scale = 255.0 if dtype == np.uint8 else 1.0
    want = ndimage.mean(prob[box].astype(np.float64) / scale, comps.labels, order)
    np.testing.assert_allclose([x["confidence"] for x in extras], want, rtol=1e-12)
    np.testing.assert_allclose([x["fraction_in_lung"] for x in extras],
                               ndimage.mean(lung[box] > 0, comps.labels, order), rtol=1e-12)
    np.testing.assert_allclose([x["mean_uncertainty"] for x in extras],
                               ndimage.mean(unc[box].astype(np.float64), comps.labels, order), rtol=1e-12)
