"""The real-CT benchmark's scoring (`rrcunet.experiments.real_ct`) on hand-made masks, and its run
over the shared real cases with a stand-in predictor (no trained model's score is tested)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from rrcunet.errors import InputError
from rrcunet.experiments.real_ct import (
    RealBenchmark, RealCaseScore, load_real_case, real_case_names, run_real_benchmark, score_real_case,
)

SPACING = (1.0, 1.0, 2.0)  # 2 mm³ voxels: 500 voxels = 1 mL


def _cube(shape, lo, size, value=True, out=None):
    a = np.zeros(shape, bool) if out is None else out
    a[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = value
    return a


def test_found_missed_and_false_positives():
    shape = (40, 40, 40)
    ref = _cube(shape, (2, 2, 2), 6)
    _cube(shape, (20, 20, 20), 3, out=ref)           # a second lesion, missed
    pred = np.zeros(shape, np.uint8)
    pred[_cube(shape, (4, 2, 2), 6)] = 2              # overlaps lesion 1 (4 of 6 columns)
    pred[_cube(shape, (30, 30, 30), 8)] = 2           # false positive: 512 voxels = 1.024 mL
    pred[_cube(shape, (12, 30, 2), 2)] = 2            # false positive: 8 voxels
    s = score_real_case("x", pred, SPACING, tumour=ref, lungs=None)
    assert (s.lesions, s.lesions_found, s.all_found) == (2, 1, False)
    assert s.fp_components == 2
    assert s.largest_fp_ml == pytest.approx(512 * 2 / 1000)
    assert s.fp_ml == pytest.approx(520 * 2 / 1000)
    tp = 4 * 36
    assert s.tumour_dice == pytest.approx(2 * tp / ((216 + 27) + (216 + 512 + 8)))
    assert s.pred_tumour_ml == pytest.approx((216 + 512 + 8) * 2 / 1000)
    assert s.ref_tumour_ml == pytest.approx(243 * 2 / 1000)
    assert math.isnan(s.lung_dice)


def test_component_touching_a_lesion_is_no_false_positive():
    shape = (30, 30, 30)
    ref = _cube(shape, (5, 5, 5), 5)
    pred = np.zeros(shape, np.uint8)
    pred[_cube(shape, (5, 5, 5), 15)] = 2   # far larger than the lesion, but touches it
    s = score_real_case("x", pred, SPACING, tumour=ref, lungs=None)
    assert (s.fp_components, s.largest_fp_ml, s.lesions_found) == (0, 0.0, 1)


def test_unlabelled_case_every_component_is_a_false_positive_and_lungs_scored():
    shape = (20, 20, 20)
    pred = np.zeros(shape, np.uint8)
    lungs = _cube(shape, (2, 2, 2), 10)
    pred[lungs] = 1
    pred[_cube(shape, (3, 3, 3), 2)] = 2
    pred[_cube(shape, (15, 15, 15), 3)] = 2
    s = score_real_case("u", pred, SPACING, tumour=None, lungs=lungs)
    assert math.isnan(s.tumour_dice) and s.lesions == 0 and s.all_found
    assert s.fp_components == 2 and s.largest_fp_ml == pytest.approx(27 * 2 / 1000)
    assert s.lung_dice == pytest.approx(2 * 1000 / (1000 + 1027))


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="shape"):
        score_real_case("x", np.zeros((4, 4, 4)), SPACING, tumour=np.zeros((4, 4, 5), bool), lungs=None)


def _score(case, dice, found=1, lesions=1, largest=0.0, trained=False):
    return RealCaseScore(case=case, tumour_dice=dice, lesions=lesions, lesions_found=found, fp_components=int(largest > 0),
                         fp_ml=largest, largest_fp_ml=largest, lung_dice=math.nan, pred_tumour_ml=1.0,
                         ref_tumour_ml=1.0, trained_on=trained)


def test_summary_leaves_trained_cases_out():
    bench = RealBenchmark([_score("lung1-001", 0.9), _score("lidc-0001", 0.5), _score("ibsi", 0.1, trained=True),
                           _score("cta-crop", math.nan, lesions=0, found=0, largest=1.5)])
    assert [s.case for s in bench.held_out_labelled] == ["lung1-001", "lidc-0001"]
    assert bench.mean_tumour_dice == pytest.approx(0.7)
    assert bench.largest_fp_ml == 1.5
    assert bench.goal_met()
    assert not bench.goal_met(max_fp_ml=1.0)
    missed = RealBenchmark([_score("lung1-001", 0.9), _score("lidc-0001", 0.8, found=0)])
    assert not missed.goal_met()
    trained_fp = RealBenchmark([_score("lung1-001", 0.9), _score("popi-phase00", math.nan, 0, 0, 30.0, trained=True)])
    assert trained_fp.largest_fp_ml == 0.0  # a scan training saw is reported apart, not in the goal


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(InputError, match="trained_on"):
        run_real_benchmark(None, tmp_path, trained_on=["lung2"])
    with pytest.raises(InputError, match="unknown real case"):
        load_real_case(tmp_path, "nope")
    assert run_real_benchmark(None, tmp_path).scores == []  # no real cases here: nothing to score


def test_run_over_the_shared_cases_with_a_stand_in(realdata, tmp_path):
    root = realdata("lidc-idri-0001").parent

    class Echo:
        """Predicts the reference of LIDC (tumour + lungs) so the scoring path is checked end to end."""

        def predict_volume(self, ct):
            case = load_real_case(root, "lidc-idri-0001")
            arr = np.zeros(ct.shape, np.uint8)
            if ct.shape == case.ct.shape:
                arr[case.lungs] = 1
                arr[case.tumour] = 2
            return SimpleNamespace(labels=ct.with_array(arr, kind="label"))

    bench = run_real_benchmark(Echo(), root, cases=["lidc-idri-0001"], trained_on=["popi-phase00"])
    (s,) = bench.scores
    assert s.case == "lidc-0001" and s.tumour_dice == 1.0 and s.lung_dice == 1.0 and s.all_found
    assert s.ref_tumour_ml == pytest.approx(7.8, abs=0.1)  # the README's reference figure
    assert "popi-phase00" in real_case_names()
