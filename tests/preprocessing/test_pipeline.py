"""The §4.1 pipeline: config validation, each step by hand, and forward → inverse round trips."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
import torch

from rrcunet.errors import ConfigError, InputError
from rrcunet.io.volume import Geometry, Volume
from rrcunet.preprocessing import (
    PreprocessConfig,
    PreprocessRecord,
    forward_label,
    invert_prediction,
    invert_probabilities,
    preprocess,
)
from rrcunet.preprocessing.crop import lung_crop_step
from rrcunet.preprocessing.intensity import intensity_step
from rrcunet.preprocessing.resample import channel_argmax, resized_geometry

SMALL = PreprocessConfig(target_shape=(32, 32, 16), margin_mm=4.0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _case(direction: np.ndarray, *, shape=(64, 56, 32), spacing=(0.8, 0.9, 1.6)):
    """CT + lung (two ellipsoids) + label (1 lung, 2 tumour ball) defined in *physical* space,
    so the same anatomy is drawn whatever the direction.

    With ``ROUND_TRIP`` (40×40×24 network grid) the tumour (radius 12 mm) is ≈ 2,000 voxels, a
    radius of ≈ 8 voxels, on the network grid: "larger than a few voxels", where a forward +
    inverse round trip must keep Dice ≥ 0.95.
    """
    geometry = Geometry(shape, spacing, (5.0, -3.0, 12.0), tuple(direction.ravel()))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre = geometry.index_to_physical((np.asarray(shape) - 1) / 2.0)
    p = geometry.index_to_physical(idx) - centre
    lung = np.zeros(shape, dtype=bool)
    for cx in (-16.0, 16.0):
        lung |= (((p - [cx, 0.0, 0.0]) / [14.0, 20.0, 22.0]) ** 2).sum(-1) <= 1
    tumour = (np.linalg.norm(p - [16.0, 2.0, 0.0], axis=-1) <= 12.0) & lung
    hu = np.where(lung, -850.0, 40.0) + 3.0 * p[..., 0]
    hu[tumour] = 30.0
    label = lung.astype(np.uint8)
    label[tumour] = 2
    ct = Volume(hu.astype(np.float32), geometry, "image")
    return ct, Volume(lung.astype(np.uint8), geometry, "label"), Volume(label, geometry, "label")


ROUND_TRIP = PreprocessConfig(target_shape=(40, 40, 24), margin_mm=3.0)


# --- config --------------------------------------------------------------------------------


def test_config_rejects_both_shape_and_spacing():
    with pytest.raises(ConfigError, match="exactly one of target_shape and target_spacing"):
        PreprocessConfig(target_spacing=(1.0, 1.0, 2.0))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"clip": (600, -1200)}, "low < high"),
        ({"target_shape": (256, 0, 48)}, "3 positive integers"),
        ({"target_shape": None, "target_spacing": (1.0, -1.0, 2.0)}, "positive mm"),
        ({"margin_mm": -5.0}, "non-negative"),
        ({"on_empty_lung": "skip"}, "'error' or 'full'"),
        ({"lung_interpolation": "cubic"}, "'linear' or 'nearest'"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PreprocessConfig(**kwargs)


def test_default_config_is_the_paper():
    cfg = PreprocessConfig()
    assert cfg.clip == (-1200.0, 600.0)
    assert cfg.target_shape == (256, 256, 48)


# --- individual steps, golden values by hand ------------------------------------------------


def test_intensity_stats_are_over_the_whole_clipped_scan():
    hu = np.array([-3000, -1200, 0, 600, 2000, 0], dtype=np.int16).reshape(1, 2, 3)
    step = intensity_step(hu, (-1200.0, 600.0))
    # clipped: [-1200, -1200, 0, 600, 600, 0] → mean -200, var = (1e6*2 + 4e4*2 + 64e4*2) / 6 = 560000
    assert step.mean == pytest.approx(-200.0)
    assert step.std == pytest.approx(np.sqrt(560000.0))
    out = step.apply(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel()[[0, 2, 4]], np.array([-1000.0, 200.0, 800.0]) / np.sqrt(560000.0), rtol=1e-6)


def test_constant_scan_does_not_divide_by_zero():
    step = intensity_step(np.full((2, 2, 2), 50, dtype=np.int16), (-1200.0, 600.0))
    assert step.std == 1.0
    np.testing.assert_array_equal(step.apply(np.full((1, 1, 1), 50)), np.zeros((1, 1, 1), np.float32))


def test_crop_box_adds_margin_in_mm_and_stops_at_the_edge():
    geometry = Geometry((20, 20, 10), (2.0, 1.0, 5.0))
    lung = np.zeros(geometry.shape, dtype=bool)
    lung[5:9, 1:4, 3:5] = True
    step = lung_crop_step(lung, geometry, (4.0, 4.0, 4.0), allow_full=False)
    # margins in voxels: ceil(4/2)=2, ceil(4/1)=4, ceil(4/5)=1
    assert step.start == (3, 0, 2) and step.stop == (11, 8, 6)
    assert step.clipped == ((False, False), (True, False), (False, False))
    assert step.output_geometry.origin == pytest.approx((6.0, 0.0, 10.0))
    assert lung_crop_step(np.zeros_like(lung), geometry, (4.0,) * 3, allow_full=False) is None
    full = lung_crop_step(np.zeros_like(lung), geometry, (4.0,) * 3, allow_full=True)
    assert full.start == (0, 0, 0) and full.stop == geometry.shape and not full.from_lung


def test_resized_geometry_keeps_the_physical_box():
    g = Geometry((4, 6, 3), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    r = resized_geometry(g, (2, 3, 6))
    # 4 → 2 voxels of 1 mm: spacing 2, first centre at index 0.5 → origin +0.5 mm;
    # 3 → 6 voxels of 3 mm: spacing 1.5, first centre at index -0.25 → origin -0.75 mm
    assert r.spacing == pytest.approx((2.0, 4.0, 1.5))
    assert r.origin == pytest.approx((10.5, 21.0, 29.25))


def test_channel_argmax_matches_torch_and_breaks_ties_to_the_first():
    scores = torch.tensor([[[[0.2, 0.5]]], [[[0.7, 0.5]]], [[[0.1, 0.1]]]])
    np.testing.assert_array_equal(channel_argmax(scores).numpy(), np.array([[[1, 0]]]))
    rnd = torch.randn(4, 5, 6, 7)
    np.testing.assert_array_equal(channel_argmax(rnd).numpy(), rnd.argmax(0).numpy())


# --- forward --------------------------------------------------------------------------------


def test_forward_output_layout():
    ct, lung, label = _case(np.eye(3))
    case = preprocess(ct, lung, label=label, config=SMALL)
    assert case.image.shape == (2, 32, 32, 16) and case.image.dtype == np.float32
    assert set(np.unique(case.image[1])) == {0.0, 1.0}
    assert case.label.shape == (32, 32, 16) and set(np.unique(case.label)) == {0, 1, 2}
    assert case.tensor().shape == (1, 2, 32, 32, 16)
    rec = case.record
    assert rec.intensity.mean == pytest.approx(float(np.clip(ct.array, -1200, 600).mean()), rel=1e-5)


@pytest.mark.parametrize("rotation", [None, (10.0, -7.0, 4.0)])
def test_network_grid_is_physically_consistent(rotation):
    """A CT that is linear in physical x is sampled exactly at record.network_geometry's points."""
    d = np.eye(3)[:, [2, 0, 1]] * np.array([1, -1, 1])
    if rotation is not None:
        d = _rotation(rotation) @ d
    geometry = Geometry((40, 36, 30), (1.5, 0.7, 0.9), (3.0, 4.0, 5.0), tuple(d.ravel()))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), axis=-1)
    x = geometry.index_to_physical(idx)[..., 0]
    ct = Volume((2.0 * x - 100.0).astype(np.float32), geometry, "image")
    lung = Volume(np.ones(geometry.shape, np.uint8), geometry, "label")
    case = preprocess(ct, lung, config=PreprocessConfig(target_shape=(12, 10, 9), margin_mm=0.0))
    rec = case.record
    net_idx = np.stack(np.meshgrid(*[np.arange(n) for n in rec.network_shape], indexing="ij"), axis=-1)
    x_net = rec.network_geometry.index_to_physical(net_idx)[..., 0]
    expected = (2.0 * x_net - 100.0 - rec.intensity.mean) / rec.intensity.std
    np.testing.assert_allclose(case.image[0], expected, atol=1e-4)


def test_lung_on_another_grid_is_refused():
    ct, lung, _ = _case(np.eye(3))
    other = Volume(lung.array, Geometry(lung.shape, (1.0, 1.0, 1.0)), "label")
    with pytest.raises(InputError, match="lung mask is not on the CT grid"):
        preprocess(ct, other, config=SMALL)


def test_empty_lung_mask_error_or_whole_volume(caplog):
    ct, lung, _ = _case(np.eye(3))
    empty = lung.with_array(np.zeros_like(lung.array))
    with pytest.raises(InputError, match="lung mask .* is empty"):
        preprocess(ct, empty, config=SMALL)
    cfg = PreprocessConfig(target_shape=(32, 32, 16), on_empty_lung="full")
    with caplog.at_level(logging.WARNING):
        case = preprocess(ct, empty, config=cfg)
    assert case.record.crop.shape == ct.shape and not case.record.crop.from_lung
    assert "using the whole volume" in caplog.text
    assert case.image[1].max() == 0.0


def test_single_slice_is_refused():
    g = Geometry((16, 16, 1), (1.0, 1.0, 1.0))
    ct = Volume(np.zeros(g.shape, np.int16), g, "image", {"source": "one.dcm"})
    with pytest.raises(InputError, match=r"one.dcm has shape \(16, 16, 1\): a single slice"):
        preprocess(ct, Volume(np.ones(g.shape, np.uint8), g, "label"), config=SMALL)


def test_lung_touching_the_border_crops_to_the_edge():
    ct, lung, _ = _case(np.eye(3))
    arr = lung.array.copy()
    arr[0:5, 20:30, 5:10] = 1
    case = preprocess(ct, lung.with_array(arr), config=SMALL)
    assert case.record.crop.start[0] == 0 and case.record.crop.clipped[0][0]


# --- inverse and round trips ----------------------------------------------------------------


def _signed_permutations():
    return [(p, s) for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


@pytest.mark.parametrize("perm,signs", _signed_permutations())
def test_label_round_trip_all_orientations(perm, signs):
    d = np.eye(3)[:, list(perm)] * np.asarray(signs, dtype=float)
    ct, lung, label = _case(d)
    case = preprocess(ct, lung, label=label, config=ROUND_TRIP)
    back = invert_prediction(case.label, case.record)
    assert back.geometry == ct.geometry and back.kind == "label" and back.array.dtype == np.uint8
    for cls in (1, 2):
        assert _dice(back.array == cls, label.array == cls) >= 0.95


@pytest.mark.parametrize("rotation", [None, (12.0, 0.0, 0.0), (6.0, -9.0, 15.0)])
@pytest.mark.parametrize("shape,spacing", [((64, 56, 32), (0.8, 0.9, 1.6)), ((32, 80, 56), (1.6, 0.6, 0.9))])
def test_round_trip_anisotropic_and_oblique(rotation, shape, spacing):
    d = np.eye(3)[:, [1, 0, 2]] * np.array([1, 1, -1])
    if rotation is not None:
        d = _rotation(rotation) @ d
    ct, lung, label = _case(d, shape=shape, spacing=spacing)
    case = preprocess(ct, lung, label=label, config=ROUND_TRIP)
    # labels (nearest) and one-hot scores (linear + argmax) both come back on the exact grid
    onehot = np.stack([case.label == c for c in range(3)]).astype(np.float32)
    for prediction in (case.label, onehot, torch.from_numpy(onehot)):
        back = invert_prediction(prediction, case.record)
        assert back.geometry == ct.geometry
        for cls in (1, 2):
            assert _dice(back.array == cls, label.array == cls) >= 0.95
    # the preprocessed lung channel itself maps back onto the input lung
    lung_back = invert_prediction(case.image[1], case.record)
    assert _dice(lung_back.array == 1, lung.array == 1) >= 0.95


def test_invert_probabilities_background_outside_the_crop():
    ct, lung, label = _case(np.eye(3)[:, [2, 1, 0]])
    case = preprocess(ct, lung, label=label, config=SMALL)
    probs = np.stack([case.label == c for c in range(3)]).astype(np.float32)
    pm = invert_probabilities(probs, case.record)
    assert pm.array.shape == (3, *ct.shape) and pm.geometry == ct.geometry
    np.testing.assert_allclose(pm.array.sum(axis=0), 1.0, atol=1e-5)
    outside = np.ones(ct.shape, dtype=bool)
    inside_oriented = np.zeros(case.record.orientation.output_geometry.shape, dtype=bool)
    inside_oriented[case.record.crop.slices] = True
    outside &= ~case.record.orientation.invert(inside_oriented)
    assert outside.any()
    assert np.all(pm.array[0][outside] == 1.0)
    np.testing.assert_array_equal(pm.argmax().array, invert_prediction(probs, case.record).array)


def test_target_spacing_variant_round_trip():
    ct, lung, label = _case(np.eye(3))
    cfg = PreprocessConfig(target_shape=None, target_spacing=(1.2, 1.2, 2.0), margin_mm=4.0)
    case = preprocess(ct, lung, label=label, config=cfg)
    rec = case.record
    assert rec.network_geometry.spacing == pytest.approx((1.2, 1.2, 2.0), rel=0.05)
    assert case.image.shape[1:] == rec.network_shape
    back = invert_prediction(case.label, rec)
    assert back.geometry == ct.geometry
    assert _dice(back.array == 2, label.array == 2) >= 0.95


def test_wrong_prediction_shape_is_refused():
    ct, lung, _ = _case(np.eye(3))
    case = preprocess(ct, lung, config=SMALL)
    with pytest.raises(InputError, match=r"network grid \(32, 32, 16\)"):
        invert_prediction(np.zeros((3, 30, 32, 16), np.float32), case.record)
    with pytest.raises(InputError, match="label map has"):
        forward_label(Volume(np.zeros((2, 2, 2), np.uint8), Geometry((2, 2, 2), (1, 1, 1)), "label"), case.record)


def test_record_json_round_trip():
    d = _rotation((5.0, 3.0, -4.0)) @ (np.eye(3)[:, [0, 2, 1]] * np.array([-1, 1, 1]))
    ct, lung, _ = _case(d)
    case = preprocess(ct, lung, config=PreprocessConfig(target_shape=(32, 32, 16), margin_mm=(1.0, 2.0, 3.0)))
    again = PreprocessRecord.from_dict(json.loads(json.dumps(case.record.to_dict())))
    assert again == case.record
    with pytest.raises(InputError, match="version"):
        PreprocessRecord.from_dict({**case.record.to_dict(), "version": 99})
