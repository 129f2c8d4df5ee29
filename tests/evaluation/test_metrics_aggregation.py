"""Aggregation over cases (mean of cases vs voxel-pooled, empty handling) and the Figure 7 histogram,
with golden values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrcunet.errors import InputError
from rrcunet.evaluation import (
    aggregate_mean_of_cases,
    aggregate_voxel_pooled,
    dice_histogram,
    evaluate_case,
    summarize,
)


def _col(labels: list[int]) -> np.ndarray:
    return np.asarray(labels, dtype=np.uint8).reshape(-1, 1, 1)


# Case A: 8 tumour, 4 lung, 4 background voxels, predicted perfectly.
GT_A = [2] * 8 + [1] * 4 + [0] * 4
# Case B: 2 tumour voxels called lung (tumour missed), 6 lung, 8 background.
GT_B = [2] * 2 + [1] * 6 + [0] * 8
PRED_B = [1] * 2 + [1] * 6 + [0] * 8
# Case C: no tumour anywhere, predicted perfectly.
GT_C = [1] * 4 + [0] * 12


@pytest.fixture
def cases():
    return [
        evaluate_case(_col(GT_A), _col(GT_A), 1.0, case_id="A"),
        evaluate_case(_col(PRED_B), _col(GT_B), 1.0, case_id="B"),
        evaluate_case(_col(GT_C), _col(GT_C), 1.0, case_id="C"),
    ]


def test_mean_of_cases_vs_voxel_pooled_tumour(cases):
    # Tumour Dice per case: A 1, B 0 (missed), C excluded (absent in both).
    #   mean of cases = (1 + 0)/2 = 1/2 ; pooled: TP 8, FP 0, FN 2 → 16/18 = 8/9 ; pooled IoU 8/10.
    mean = aggregate_mean_of_cases(cases)
    pooled = aggregate_voxel_pooled(cases)
    assert mean.tumour_dice == pytest.approx(0.5)
    assert mean.tumour_iou == pytest.approx(0.5)
    assert mean.tumour_dice_std == pytest.approx(0.5)
    assert pooled.tumour_dice == pytest.approx(8 / 9)
    assert pooled.tumour_iou == pytest.approx(0.8)
    assert (mean.n_cases, mean.n_tumour_scored, mean.n_tumour_absent_in_both, mean.n_tumour_missed) == (3, 2, 1, 1)


def test_both_empty_cases_can_be_included_with_their_convention(cases):
    # include: tumour Dice (1 + 0 + 1)/3 = 2/3 ; pooled is unaffected (case C adds no TP/FP/FN).
    mean = aggregate_mean_of_cases(cases, both_empty="include")
    assert mean.tumour_dice == pytest.approx(2 / 3)
    assert mean.n_tumour_scored == 3
    assert aggregate_voxel_pooled(cases).tumour_dice == pytest.approx(8 / 9)


def test_infinite_hd95_is_left_out_and_counted(cases):
    # HD95: A 0 mm, B inf (missed) → mean over finite = 0, one infinite.
    mean = aggregate_mean_of_cases(cases)
    assert mean.n_hd95_infinite == 1
    assert mean.tumour_hd95_mm == 0.0
    assert mean.tumour_surface_dice == pytest.approx(0.5)  # (1 + 0)/2


def test_three_label_scores_both_ways(cases):
    # Lung Dice per case: A 1 ; B TP 6, FP 2, FN 0 → 12/14 = 6/7 ; C 1 → mean (1 + 6/7 + 1)/3 = 20/21.
    # Lung pooled: TP 4 + 6 + 4 = 14, FP 2, FN 0 → 28/30 = 14/15.
    # Micro per case: A 1, B 14 of 16 right → 7/8, C 1 → mean F1 micro (1 + 7/8 + 1)/3 = 23/24.
    # Micro pooled: 46 of 48 voxels right → 46/48 = 23/24 ; micro IoU pooled 46/(46 + 2 + 2) = 23/25.
    mean = aggregate_mean_of_cases(cases)
    pooled = aggregate_voxel_pooled(cases)
    assert mean.dice_per_class[1] == pytest.approx(20 / 21)
    assert pooled.dice_per_class[1] == pytest.approx(14 / 15)
    assert mean.f1_micro == pytest.approx(23 / 24)
    assert pooled.f1_micro == pytest.approx(23 / 24)
    assert pooled.iou_micro == pytest.approx(23 / 25)
    # Pooled macro = mean over classes of pooled per-class Dice:
    #   background: TP 4 + 8 + 12 = 24, FP 0, FN 0 → 1 ; lung 14/15 ; tumour 8/9
    assert pooled.dice_macro == pytest.approx((1 + 14 / 15 + 8 / 9) / 3)


def test_mm3_weighting_differs_from_voxels_when_spacings_differ():
    # Case A at 1 mm³ voxels, case B at 2 mm³ voxels: tumour pooled by volume TP 8, FN 2·2 = 4 → 16/20 = 0.8.
    a = evaluate_case(_col(GT_A), _col(GT_A), (1.0, 1.0, 1.0))
    b = evaluate_case(_col(PRED_B), _col(GT_B), (2.0, 1.0, 1.0))
    assert aggregate_voxel_pooled([a, b]).tumour_dice == pytest.approx(8 / 9)
    assert aggregate_voxel_pooled([a, b], weighting="mm3").tumour_dice == pytest.approx(0.8)


def test_no_scorable_tumour_gives_nan_with_counts():
    c = evaluate_case(_col(GT_C), _col(GT_C), 1.0)
    mean = aggregate_mean_of_cases([c, c])
    assert math.isnan(mean.tumour_dice) and math.isnan(mean.tumour_hd95_mm)
    assert mean.n_tumour_absent_in_both == 2 and mean.n_tumour_scored == 0
    assert aggregate_voxel_pooled([c]).tumour_dice == 1.0  # absent from every case: convention


def test_summary_flat_dict_names_both_aggregations(cases):
    flat = summarize(cases).as_dict()
    assert flat["mean_of_cases/tumour_dice"] == pytest.approx(0.5)
    assert flat["voxel_pooled/tumour_dice"] == pytest.approx(8 / 9)
    assert flat["voxel_pooled/dice_lung"] == pytest.approx(14 / 15)
    case_flat = cases[1].as_dict()
    assert case_flat["case_id"] == "B" and case_flat["tumour_missed"] is True
    assert case_flat["dice_lung"] == pytest.approx(6 / 7)


def test_aggregation_errors():
    with pytest.raises(InputError, match=r"no cases to aggregate"):
        aggregate_mean_of_cases([])
    with pytest.raises(InputError, match=r"both_empty must be 'exclude' or 'include', not 'skip'"):
        aggregate_mean_of_cases([], both_empty="skip")
    with pytest.raises(InputError, match=r"aggregation takes CaseMetrics .* got dict"):
        aggregate_voxel_pooled([{"tumour_dice": 1.0}])
    a = evaluate_case(_col([0, 1, 2]), _col([0, 1, 2]), 1.0, case_id="a")
    b = evaluate_case(_col([0, 1]), _col([0, 1]), 1.0, case_id="b", class_names=("bg", "lung"), tumour_label=1)
    with pytest.raises(InputError, match=r"case b has labels \('bg', 'lung'\)"):
        aggregate_voxel_pooled([a, b])


# ----------------------------------------------------------------------------------------------
# Figure 7
# ----------------------------------------------------------------------------------------------
def test_dice_histogram_bins_follow_the_paper_text():
    # < 0.5: 0.0, 0.49 ; [0.5, 0.75): 0.5, 0.7499 ; [0.75, 0.8]: 0.75, 0.7999, 0.8 ; > 0.8: 1.0 ; NaN counted apart
    h = dice_histogram([0.0, 0.49, 0.5, 0.7499, 0.75, 0.7999, 0.8, 1.0, float("nan")])
    assert h.labels == ("< 0.5", "0.5–0.75", "0.75–0.8", "> 0.8")
    assert h.counts == (2, 2, 3, 1)
    assert h.n_nan == 1


def test_dice_histogram_reproduces_the_paper_counts():
    # Figure 7: 5 cases < 0.5, 5 in 0.5–0.75, 6 in 0.75–0.8, 24 > 0.8.
    values = [0.3] * 5 + [0.6] * 5 + [0.77] * 6 + [0.9] * 24
    assert dice_histogram(values).as_dict() == {"< 0.5": 5, "0.5–0.75": 5, "0.75–0.8": 6, "> 0.8": 24}


def test_dice_histogram_errors():
    with pytest.raises(InputError, match=r"Dice scores must lie in \[0, 1\]; got \[1.2\]"):
        dice_histogram([0.5, 1.2])
    with pytest.raises(InputError, match=r"edges must be increasing numbers strictly between 0 and 1"):
        dice_histogram([0.5], edges=(0.8, 0.5))
