"""Per-case metrics of rrcunet.evaluation: golden values worked out by hand, spacing awareness,
empty-mask conventions and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rrcunet.errors import InputError
from rrcunet.evaluation import (
    confusion_counts,
    evaluate_case,
    evaluate_volumes,
    hd95,
    surface_dice,
    surface_distances,
)
from rrcunet.io.volume import Geometry, Volume


def _col(*labels: int) -> np.ndarray:
    """A (n, 1, 1) label map: one voxel per label, along x."""
    return np.asarray(labels, dtype=np.uint8).reshape(-1, 1, 1)


def test_overlap_golden_three_labels():
    # gt = (0, 1, 2, 2), pred = (0, 1, 1, 2):
    #   background: TP 1, FP 0, FN 0 → Dice 1,   IoU 1
    #   lung:       TP 1, FP 1, FN 0 → Dice 2/3, IoU 1/2
    #   tumour:     TP 1, FP 0, FN 1 → Dice 2/3, IoU 1/2
    #   macro Dice = (1 + 2/3 + 2/3)/3 = 7/9 ; macro IoU = (1 + 1/2 + 1/2)/3 = 2/3
    #   micro: TP 3, FP 1, FN 1 → Dice = 6/8 = 3/4 (= voxel accuracy 3/4) ; IoU = 3/5
    m = evaluate_case(_col(0, 1, 1, 2), _col(0, 1, 2, 2), (1.0, 1.0, 1.0))
    assert m.counts == ((1, 0, 0), (1, 1, 0), (1, 0, 1))
    assert m.dice_per_class == pytest.approx((1.0, 2 / 3, 2 / 3))
    assert m.iou_per_class == pytest.approx((1.0, 0.5, 0.5))
    assert m.dice_macro == pytest.approx(7 / 9)
    assert m.f1_macro == pytest.approx(7 / 9)
    assert m.iou_macro == pytest.approx(2 / 3)
    assert m.dice_micro == pytest.approx(3 / 4)
    assert m.f1_micro == pytest.approx(3 / 4)
    assert m.iou_micro == pytest.approx(3 / 5)
    assert (m.tumour_dice, m.tumour_iou, m.tumour_f1) == pytest.approx((2 / 3, 1 / 2, 2 / 3))
    assert (m.tumour_voxels_gt, m.tumour_voxels_pred) == (2, 1)


def test_micro_f1_is_voxel_accuracy_and_micro_iou_follows():
    # 10 voxels, 1 wrong (tumour called lung): accuracy 9/10 → micro F1 = 9/10,
    # micro IoU = 9 / (9 + 1 + 1) = 9/11 = acc / (2 - acc).
    gt = _col(0, 0, 0, 0, 1, 1, 1, 2, 2, 2)
    pred = _col(0, 0, 0, 0, 1, 1, 1, 2, 2, 1)
    m = evaluate_case(pred, gt, 1.0)
    assert m.f1_micro == pytest.approx(9 / 10)
    assert m.iou_micro == pytest.approx(9 / 11)


def test_confusion_counts_golden():
    assert confusion_counts(np.array([2, 2, 0]), np.array([2, 0, 0]), 3).tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0]]


def _line(shape, x, n):
    m = np.zeros(shape, bool)
    m[x, 0, :n] = True
    return m


def test_hd95_interpolates_between_order_statistics():
    # gt: a 1-voxel-thin line of 10 voxels at x = 0 (every voxel is surface).
    # pred: the same line plus one voxel at x = 10 (distance 10 × 0.5 mm = 5 mm to the nearest gt voxel).
    # d(pred→gt) = ten 0s and one 5 mm (11 values): P95 at rank 0.95·10 = 9.5 → (0 + 5)/2 = 2.5
    # d(gt→pred) = ten 0s → P95 = 0.  HD95 = max(2.5, 0) = 2.5 mm ; HD100 = 5 mm.
    shape = (12, 1, 10)
    gt = _line(shape, 0, 10)
    pred = gt.copy()
    pred[10, 0, 0] = True
    spacing = (0.5, 1.0, 2.0)
    assert hd95(pred, gt, spacing) == pytest.approx(2.5)
    assert hd95(pred, gt, spacing, percentile=100) == pytest.approx(5.0)
    # surface Dice, τ = 2 mm: pred 10 of 11 within, gt 10 of 10 → 20/21
    assert surface_dice(pred, gt, spacing, tolerance_mm=2.0) == pytest.approx(20 / 21)


@pytest.mark.parametrize(
    ("spacing", "expected_mm"),
    [((1.0, 1.0, 3.0), 3.0), ((0.7, 0.7, 2.0), 2.0), ((5.0, 5.0, 1.5), 1.5)],
)
def test_distances_use_the_spacing_of_the_shifted_axis(spacing, expected_mm):
    # Two 3×3×1 slabs one slice apart along z: every surface voxel is exactly one z-step from the other slab.
    gt = np.zeros((5, 5, 6), bool)
    gt[1:4, 1:4, 2] = True
    pred = np.roll(gt, 1, axis=2)
    d_pg, d_gp = surface_distances(pred, gt, spacing)
    assert d_pg == pytest.approx(np.full(9, expected_mm))
    assert d_gp == pytest.approx(np.full(9, expected_mm))
    assert hd95(pred, gt, spacing) == pytest.approx(expected_mm)
    # tolerance is inclusive: d == τ counts as within
    assert surface_dice(pred, gt, spacing, tolerance_mm=expected_mm) == 1.0
    assert surface_dice(pred, gt, spacing, tolerance_mm=expected_mm - 0.01) == 0.0


@pytest.mark.parametrize("where", ["inside", "filling_the_image"])
def test_surface_is_voxels_with_a_6_neighbour_outside(where):
    # A solid 3×3×3 cube: only its centre has all 6 face-neighbours inside → 26 surface voxels.
    # When the cube fills the whole image, the outside of the image counts as outside.
    if where == "inside":
        gt = np.zeros((7, 7, 7), bool)
        gt[2:5, 2:5, 2:5] = True
    else:
        gt = np.ones((3, 3, 3), bool)
    d_pg, d_gp = surface_distances(gt, gt, 1.0)
    assert len(d_pg) == len(d_gp) == 26
    assert not d_pg.any()


def test_evaluate_case_uses_spacing_for_surface_metrics_only():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:5, 1:5, 1:3] = 2
    pred = np.roll(gt, 1, axis=2)
    # tumour: gt z 1..2, pred z 2..3 → TP 16, FP 16, FN 16 → Dice 1/2, IoU 1/3 whatever the spacing.
    # Surfaces: every tumour voxel is on the surface (only 2 slices thick); pred voxels at z=2 lie on gt,
    # those at z=3 are one z-step from gt's z=2 → half the distances are 0, half are s_z.
    for s_z, hd, sd in [(1.0, 1.0, 1.0), (3.0, 3.0, 0.5)]:
        m = evaluate_case(pred, gt, (1.0, 1.0, s_z))
        assert (m.tumour_dice, m.tumour_iou) == pytest.approx((0.5, 1 / 3))
        assert m.tumour_hd95_mm == pytest.approx(hd)
        assert m.tumour_surface_dice == pytest.approx(sd)
        assert m.tumour_volume_gt_ml == pytest.approx(32 * s_z / 1000)


# ----------------------------------------------------------------------------------------------
# empty conventions
# ----------------------------------------------------------------------------------------------
def test_tumour_absent_in_both_scores_perfect_and_is_flagged():
    gt = _col(0, 1, 1, 0)
    m = evaluate_case(gt, gt, 1.0)
    assert m.tumour_absent_in_both and not m.tumour_missed and not m.tumour_false_alarm
    assert (m.tumour_dice, m.tumour_iou, m.tumour_f1) == (1.0, 1.0, 1.0)
    assert m.tumour_hd95_mm == 0.0
    assert m.tumour_surface_dice == 1.0
    assert m.dice_macro == 1.0  # absent class counts 1 in the macro mean


@pytest.mark.parametrize(("pred", "gt", "flag"), [((0, 1, 1, 1), (0, 1, 2, 2), "tumour_missed"),
                                                  ((0, 2, 1, 1), (0, 1, 1, 1), "tumour_false_alarm")])
def test_tumour_in_only_one_scores_zero_and_infinite_hd95(pred, gt, flag):
    m = evaluate_case(_col(*pred), _col(*gt), 1.0)
    assert getattr(m, flag) and not m.tumour_absent_in_both
    assert (m.tumour_dice, m.tumour_iou, m.tumour_surface_dice) == (0.0, 0.0, 0.0)
    assert m.tumour_hd95_mm == math.inf


def test_binary_helpers_follow_the_same_conventions():
    empty = np.zeros((3, 3, 3), bool)
    blob = empty.copy()
    blob[1, 1, 1] = True
    assert hd95(empty, empty, 1.0) == 0.0 and surface_dice(empty, empty, 1.0) == 1.0
    assert hd95(blob, empty, 1.0) == math.inf and surface_dice(blob, empty, 1.0) == 0.0
    d_pg, d_gp = surface_distances(blob, empty, 1.0)
    assert d_pg.tolist() == [math.inf] and len(d_gp) == 0


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def test_torch_and_float_label_maps_are_accepted():
    gt = _col(0, 1, 2, 2)
    pred = _col(0, 1, 1, 2)
    ref = evaluate_case(pred, gt, 1.0)
    assert evaluate_case(torch.from_numpy(pred), torch.from_numpy(gt).float(), 1.0) == ref


def test_evaluate_volumes_takes_spacing_from_the_geometry():
    gt = np.zeros((5, 5, 6), np.uint8)
    gt[1:4, 1:4, 2] = 2
    pred = np.roll(gt, 1, axis=2)
    geo = Geometry(shape=gt.shape, spacing=(0.8, 0.8, 2.5))
    m = evaluate_volumes(Volume(pred, geo, "label"), Volume(gt, geo, "label"), case_id="p1")
    assert m.case_id == "p1" and m.spacing == (0.8, 0.8, 2.5)
    assert m.tumour_hd95_mm == pytest.approx(2.5)


def test_evaluate_volumes_rejects_different_grids():
    a = Volume(np.zeros((4, 4, 4), np.uint8), Geometry(shape=(4, 4, 4), spacing=(1.0, 1.0, 1.0)), "label")
    b = Volume(np.zeros((4, 4, 4), np.uint8), Geometry(shape=(4, 4, 4), spacing=(1.0, 1.0, 3.0)), "label")
    with pytest.raises(InputError, match=r"case x: prediction grid \(shape \(4, 4, 4\), spacing \(1.0, 1.0, 1.0\)"):
        evaluate_volumes(a, b, case_id="x")


@pytest.mark.parametrize(
    ("pred", "gt", "spacing", "match"),
    [
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), 1.0,
         r"case c7: prediction shape \(4, 4, 4\) differs from ground-truth shape \(4, 4, 5\)"),
        (np.full((2, 2, 2), 3, np.uint8), np.zeros((2, 2, 2), np.uint8), 1.0,
         r"case c7: prediction holds labels in \[3, 3\]; expected labels 0..2 \(0 background, 1 lung, 2 tumour\)"),
        (np.zeros((2, 2, 2)), np.full((2, 2, 2), 0.5), 1.0, r"ground truth holds non-integer values"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint8), (1.0, 1.0),
         r"spacing must be 3 positive finite numbers in mm"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint8), (1.0, 0.0, 1.0),
         r"spacing must be 3 positive finite numbers in mm"),
    ],
)
def test_bad_inputs_are_rejected(pred, gt, spacing, match):
    with pytest.raises(InputError, match=match):
        evaluate_case(pred, gt, spacing, case_id="c7")


def test_bad_options_are_rejected():
    gt = _col(0, 1, 2)
    with pytest.raises(InputError, match=r"tolerance_mm must be a finite number >= 0, not -1"):
        evaluate_case(gt, gt, 1.0, tolerance_mm=-1)
    with pytest.raises(InputError, match=r"tumour_label 3 is not one of the labels 0..2"):
        evaluate_case(gt, gt, 1.0, tumour_label=3)
    with pytest.raises(InputError, match=r"percentile must be in \[0, 100\], not 101"):
        hd95(gt > 0, gt > 0, 1.0, percentile=101)
