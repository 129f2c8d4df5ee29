"""Per-lesion Dice, lesion grouping with phantom facts, size bins and group statistics, on hand-made
masks whose values are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrcunet.errors import InputError
from rrcunet.experiments.lesions import (
    ground_truth_lesions,
    group_lesions,
    lesion_scores,
    location_class,
    size_bin,
    size_bin_labels,
)

BINS = (1.0, 5.0, 20.0, 50.0)


def _two_lesions() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """GT: A = cube [1:4]^3 (27 voxels), B = cube [8:10]^3 (8 voxels).
    Prediction: [1:4, 1:4, 1:3] inside A (18 voxels); [8:10, 8:10, 9:11] half on B (8 voxels, 4 inside);
    one stray voxel at (5, 11, 0), touching neither (a false-positive component)."""
    gt = np.zeros((12, 12, 12), bool)
    gt[1:4, 1:4, 1:4] = True
    gt[8:10, 8:10, 8:10] = True
    pred = np.zeros_like(gt)
    pred[1:4, 1:4, 1:3] = True
    pred[8:10, 8:10, 9:11] = True
    pred[5, 11, 0] = True
    facts = [
        {"index": 1, "kind": "round", "n_voxels": 27, "bbox_voxel": [[1, 1, 1], [4, 4, 4]],
         "touches_chest_wall": True, "touches_mediastinum": False},
        {"index": 2, "kind": "spiculated", "n_voxels": 8, "bbox_voxel": [[8, 8, 8], [10, 10, 10]],
         "touches_chest_wall": False, "touches_mediastinum": False},
    ]
    return pred, gt, facts


def test_lesion_dice_by_hand():
    pred, gt, facts = _two_lesions()
    res = lesion_scores(pred, gt, (5.0, 5.0, 5.0), case_id="c", facts=facts)
    a, b = res.lesions
    # A: 2*18 / (18 + 27) = 0.8 ; B: 2*4 / (8 + 8) = 0.5
    assert (a.n_voxels_gt, a.n_voxels_pred, a.intersection) == (27, 18, 18)
    assert a.dice == pytest.approx(0.8)
    assert (b.n_voxels_gt, b.n_voxels_pred, b.intersection) == (8, 8, 4)
    assert b.dice == pytest.approx(0.5)
    # volumes: 5 mm voxels = 0.125 mL; A 27 * 0.125 = 3.375 mL, B 8 * 0.125 = 1.0 mL
    assert a.volume_ml == pytest.approx(3.375) and b.volume_ml == pytest.approx(1.0)
    assert (a.location, b.location) == ("chest wall", "neither")
    assert (a.kind, b.kind) == ("round", "spiculated")
    assert res.n_false_positive_components == 1 and res.false_positive_voxels == 1
    assert res.false_positive_ml == pytest.approx(0.125)


def test_missed_lesion_scores_zero_and_is_not_detected():
    _, gt, facts = _two_lesions()
    res = lesion_scores(np.zeros_like(gt), gt, 1.0, facts=facts)
    assert [s.dice for s in res.lesions] == [0.0, 0.0]
    assert not any(s.detected for s in res.lesions)


def test_component_bridging_two_lesions_is_split_by_nearest_lesion():
    """GT C = x 0..1, D = x 5..6 on one row; prediction = x 0..6. Voxel x=2 is 1 from C, 3 from D → C;
    x=3 is 2 from both → the lower lesion number (C, found first); x=4 → D. So C gets 4 predicted
    voxels (2 inside): Dice 2*2/(2+4) = 2/3; D gets 3 (2 inside): Dice 2*2/(2+3) = 0.8."""
    gt = np.zeros((8, 3, 3), bool)
    gt[0:2, 1, 1] = True
    gt[5:7, 1, 1] = True
    pred = np.zeros_like(gt)
    pred[0:7, 1, 1] = True
    c, d = lesion_scores(pred, gt, 1.0).lesions
    assert (c.n_voxels_pred, c.intersection) == (4, 2) and c.dice == pytest.approx(2 / 3)
    assert (d.n_voxels_pred, d.intersection) == (3, 2) and d.dice == pytest.approx(0.8)
    assert c.location == d.location == "unknown"


def test_spacing_decides_the_nearest_lesion():
    """3×3 slice, GT L1 = voxel (0, 2) (found first in C order), L2 = voxel (2, 0); the prediction covers all
    9 voxels. Isotropic 1 mm: (0,0), (1,1), (2,2) are ties → L1, so L1 gets 6 voxels, L2 gets (1,0), (2,0),
    (2,1): Dice 2/(1+6) and 2/(1+3). With y spacing 2 mm, (0,0) is 2 mm from L2 and 4 mm from L1 → L2:
    L1 gets 5 (Dice 2/6), L2 gets 4 (Dice 2/5)."""
    gt = np.zeros((3, 3, 1), bool)
    gt[0, 2, 0] = gt[2, 0, 0] = True
    pred = np.ones_like(gt)
    l1, l2 = lesion_scores(pred, gt, 1.0).lesions
    assert (l1.n_voxels_pred, l2.n_voxels_pred) == (6, 3)
    assert l1.dice == pytest.approx(2 / 7) and l2.dice == pytest.approx(0.5)
    l1, l2 = lesion_scores(pred, gt, (1.0, 2.0, 1.0)).lesions
    assert (l1.n_voxels_pred, l2.n_voxels_pred) == (5, 4)
    assert l1.dice == pytest.approx(1 / 3) and l2.dice == pytest.approx(0.4)


def test_facts_group_fragments_into_one_lesion():
    """A tumour of 8 voxels plus a 1-voxel fragment inside the same bounding box = one lesion of 9 voxels;
    without facts they are two lesions of unknown location."""
    gt = np.zeros((10, 6, 6), bool)
    gt[2:4, 2:4, 2:4] = True
    gt[6, 2, 2] = True
    facts = [{"kind": "lobulated", "n_voxels": 9, "bbox_voxel": [[2, 2, 2], [7, 4, 4]],
              "touches_chest_wall": False, "touches_mediastinum": True}]
    lmap, info = ground_truth_lesions(gt, facts)
    assert lmap.max() == 1 and int((lmap == 1).sum()) == 9
    assert info == [{"touches_chest_wall": False, "touches_mediastinum": True, "kind": "lobulated", "n_tumours": 1}]
    lmap2, info2 = ground_truth_lesions(gt, None)
    assert lmap2.max() == 2 and [int((lmap2 == k).sum()) for k in (1, 2)] == [8, 1]
    assert all(i["n_tumours"] == 0 for i in info2)
    res = lesion_scores(gt, gt, 1.0, facts=facts)
    assert len(res.lesions) == 1 and res.lesions[0].dice == 1.0 and res.lesions[0].location == "mediastinum"


def test_touching_tumours_merge_into_one_lesion_with_both_contacts():
    """Two tumours whose masks touch form one component: one lesion, n_tumours 2, touching what either touches."""
    gt = np.zeros((10, 4, 4), bool)
    gt[1:5, 1:3, 1:3] = True   # tumour 1: x 1..4 (16 voxels)
    gt[5:7, 1:3, 1:3] = True   # tumour 2: x 5..6 (8 voxels), face-adjacent to tumour 1
    facts = [{"kind": "round", "n_voxels": 16, "bbox_voxel": [[1, 1, 1], [5, 3, 3]], "touches_chest_wall": True,
              "touches_mediastinum": False},
             {"kind": "ground_glass", "n_voxels": 8, "bbox_voxel": [[5, 1, 1], [7, 3, 3]],
              "touches_chest_wall": False, "touches_mediastinum": True}]
    _, info = ground_truth_lesions(gt, facts)
    assert info == [{"touches_chest_wall": True, "touches_mediastinum": True, "kind": "ground_glass+round",
                     "n_tumours": 2}]


def test_location_classes():
    assert location_class(True, False) == "chest wall"
    assert location_class(False, True) == "mediastinum"
    assert location_class(True, True) == "chest wall + mediastinum"
    assert location_class(False, False) == "neither"
    assert location_class(None, True) == "unknown"


def test_size_bins_hold_their_lower_edge():
    assert size_bin_labels(BINS) == ["< 1 mL", "1–5 mL", "5–20 mL", "20–50 mL", "≥ 50 mL"]
    assert size_bin(0.999, BINS) == "< 1 mL"
    assert size_bin(1.0, BINS) == "1–5 mL"
    assert size_bin(19.99, BINS) == "5–20 mL"
    assert size_bin(50.0, BINS) == "≥ 50 mL"


def test_group_statistics_by_hand():
    pred, gt, facts = _two_lesions()
    lesions = lesion_scores(pred, gt, 5.0, facts=facts).lesions
    by_size = {g.group: g for g in group_lesions(lesions, by="size", size_bins_ml=BINS)}
    g = by_size["1–5 mL"]  # A (3.375 mL, Dice 0.8) and B (1.0 mL, Dice 0.5)
    assert (g.n, g.n_detected) == (2, 2)
    assert g.dice_mean == pytest.approx(0.65)
    assert g.dice_sd == pytest.approx(0.15)            # population SD of {0.8, 0.5}
    assert g.dice_pooled == pytest.approx(44 / 61)     # 2(18+4) / ((18+27) + (8+8))
    assert by_size["< 1 mL"].n == 0 and math.isnan(by_size["< 1 mL"].dice_mean)
    by_loc = {g.group: g for g in group_lesions(lesions, by="location", size_bins_ml=BINS)}
    assert by_loc["chest wall"].dice_mean == pytest.approx(0.8)
    assert by_loc["neither"].dice_mean == pytest.approx(0.5)
    assert by_loc["mediastinum"].n == 0 and "unknown" not in by_loc


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match=r"shape \(2, 2, 2\) differs"):
        lesion_scores(np.zeros((2, 2, 2), bool), np.zeros((3, 3, 3), bool), 1.0)
    with pytest.raises(InputError, match="spacing must be 3 positive"):
        lesion_scores(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool), (1.0, 0.0, 1.0))
