"""Cross-check of rrcunet.evaluation against a second implementation: MONAI's DiceMetric, MeanIoU,
compute_hausdorff_distance(percentile=95) and compute_surface_dice, on random blobs with
anisotropic spacing.

Both use the same surface (mask XOR its 6-connected erosion, image border outside) and the same
HD95 definition (max of the two directed 95th percentiles, linear interpolation), so they agree to
float32 rounding (MONAI computes distances in float32): tolerance 1e-4 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU, compute_hausdorff_distance, compute_surface_dice
from monai.networks import one_hot
from scipy import ndimage

from rrcunet.evaluation import evaluate_case

SPACINGS = [(0.8, 1.3, 3.0), (0.7, 0.7, 5.0), (2.0, 0.5, 1.0)]


def _blobs(rng: np.random.Generator, shape=(32, 32, 16)) -> np.ndarray:
    """A label map: lung = a large smooth blob, tumour = a smaller blob (inside or touching it)."""
    lung = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) > -0.02
    tumour = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.08
    labels = np.zeros(shape, np.uint8)
    labels[lung] = 1
    labels[tumour] = 2
    return labels


def _perturb(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A plausible prediction: the tumour dilated/shifted, some lung voxels flipped, a stray tumour blob."""
    pred = labels.copy()
    tumour = np.roll(ndimage.binary_dilation(labels == 2), int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
    pred[labels == 2] = 1
    pred[tumour] = 2
    flip = rng.random(labels.shape) < 0.03
    pred[flip & (pred == 1)] = 0
    pred[2:4, 2:4, 1:3] = 2
    return pred


def _onehot(a: np.ndarray) -> torch.Tensor:
    return one_hot(torch.from_numpy(a.astype(np.int64))[None, None], num_classes=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    gt = _blobs(rng)
    pred = _perturb(rng, gt)
    spacing = SPACINGS[seed]
    ours = evaluate_case(pred, gt, spacing)
    assert 0.05 < ours.tumour_dice < 0.95  # the check is meaningful: neither trivial nor disjoint

    p1h, g1h = _onehot(pred), _onehot(gt)
    dice = DiceMetric(include_background=True, reduction="none")(p1h, g1h)[0].numpy()
    iou = MeanIoU(include_background=True, reduction="none")(p1h, g1h)[0].numpy()
    np.testing.assert_allclose(ours.dice_per_class, dice, rtol=1e-5)
    np.testing.assert_allclose(ours.iou_per_class, iou, rtol=1e-5)

    tp, tg = p1h[:, 2:3], g1h[:, 2:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp, tg, percentile=95, spacing=spacing).item()
        nsd = compute_surface_dice(tp, tg, class_thresholds=[2.0], spacing=spacing).item()
    assert ours.tumour_hd95_mm == pytest.approx(hd, rel=1e-4)
    assert ours.tumour_surface_dice == pytest.approx(nsd, rel=1e-4)


def test_matches_monai_when_the_tumour_touches_the_image_border():
    rng = np.random.default_rng(5)
    gt = _blobs(rng)
    gt[:6, :, :] = 2  # tumour slab on the x = 0 border
    pred = _perturb(rng, gt)
    spacing = (0.9, 0.9, 2.5)
    ours = evaluate_case(pred, gt, spacing)
    tp, tg = _onehot(pred)[:, 2:3], _onehot(gt)[:, 2:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp, tg, percentile=95, spacing=spacing).item()
        nsd = compute_surface_dice(tp, tg, class_thresholds=[2.0], spacing=spacing).item()
    assert ours.tumour_hd95_mm == pytest.approx(hd, rel=1e-4)
    assert ours.tumour_surface_dice == pytest.approx(nsd, rel=1e-4)


@pytest.mark.parametrize("empty", ["pred", "gt", "both"])
def test_empty_masks_where_monai_is_undefined(empty):
    # MONAI 1.6.1: one mask empty → HD95 NaN (torch.quantile of all-inf distances), surface Dice 0;
    # both empty → NaN for both. Ours (documented conventions): one empty → HD95 inf, surface Dice 0;
    # both empty → HD95 0, surface Dice 1, flagged tumour_absent_in_both.
    blob = np.zeros((8, 8, 4), np.uint8)
    blob[2:5, 2:5, 1:3] = 2
    none = np.zeros_like(blob)
    pred, gt = {"pred": (none, blob), "gt": (blob, none), "both": (none, none)}[empty]
    tp, tg = _onehot(pred)[:, 2:3], _onehot(gt)[:, 2:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp, tg, percentile=95).item()
        nsd = compute_surface_dice(tp, tg, class_thresholds=[2.0]).item()
    ours = evaluate_case(pred, gt, 1.0)
    assert np.isnan(hd)
    if empty == "both":
        assert np.isnan(nsd)
        assert (ours.tumour_hd95_mm, ours.tumour_surface_dice, ours.tumour_absent_in_both) == (0.0, 1.0, True)
    else:
        assert nsd == 0.0 == ours.tumour_surface_dice
        assert ours.tumour_hd95_mm == np.inf
