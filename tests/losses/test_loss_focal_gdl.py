"""Tests of rrcunet.losses.FocalGeneralizedDiceLoss: golden values worked out by hand, parts vs sum,
empty-class behaviour, alpha/gamma semantics, input validation, and cross-checks against MONAI/torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss, GeneralizedDiceLoss

from rrcunet.errors import ConfigError, InputError
from rrcunet.losses import FocalGeneralizedDiceLoss

LN3 = math.log(3.0)


def _logits(*voxels: tuple[float, float]) -> torch.Tensor:
    """(1, 2, n, 1, 1) logits from per-voxel (class-0, class-1) pairs."""
    t = torch.tensor(voxels, dtype=torch.float32).T  # (2, n)
    return t.reshape(1, 2, len(voxels), 1, 1)


def _labels(*labels: int) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.int64).reshape(1, 1, len(labels), 1, 1)


# Example A — 2 classes × 2 voxels:
#   v1: logits (0, ln 3) → softmax p = (1/4, 3/4), label 1 → p_t = 3/4
#   v2: logits (0, 0)    → softmax p = (1/2, 1/2), label 0 → p_t = 1/2
A_LOGITS = _logits((0.0, LN3), (0.0, 0.0))
A_LABELS = _labels(1, 0)
# Focal, γ=2, α=1:  FL(v1) = (1 - 3/4)² · ln(4/3) = ln(4/3)/16 ;  FL(v2) = (1/2)² · ln 2 = ln(2)/4 ; mean of the two.
A_FOCAL = (math.log(4 / 3) / 16 + math.log(2) / 4) / 2
# GDL (square weights, 1/frequency²): G0 = G1 = 1 voxel of 2 → f = 1/2 → w0 = w1 = 4
#   TP0 = p0(v2) = 1/2, TP1 = p1(v1) = 3/4 ;  P0 = 1/4 + 1/2 = 3/4, P1 = 3/4 + 1/2 = 5/4
#   numer = 2·(4·1/2 + 4·3/4) = 10 ;  denom = 4·(3/4 + 1) + 4·(5/4 + 1) = 7 + 9 = 16
#   GDL = 1 - 10/16 = 3/8
A_GDL = 3 / 8

# Example B — 2 classes × 3 voxels, labels (1, 0, 0):
#   va: (0, ln 3) → p1 = 3/4 ; vb: (0, 0) → p1 = 1/2 ; vc: (ln 3, 0) → p0 = 3/4, p1 = 1/4
#   G0 = 2, G1 = 1 ; TP0 = 1/2 + 3/4 = 5/4, TP1 = 3/4 ; P0 = 1/4 + 1/2 + 3/4 = 3/2, P1 = 3/2
B_LOGITS = _logits((0.0, LN3), (0.0, 0.0), (LN3, 0.0))
B_LABELS = _labels(1, 0, 0)


def _loss(**kw) -> FocalGeneralizedDiceLoss:
    kw.setdefault("smooth_nr", 0.0)
    kw.setdefault("smooth_dr", 0.0)
    return FocalGeneralizedDiceLoss(**kw)


def test_golden_example_a_defaults_are_the_paper_values():
    terms = _loss().forward_terms(A_LOGITS, A_LABELS)
    assert terms["focal"].item() == pytest.approx(A_FOCAL, abs=1e-6)
    assert terms["gdl"].item() == pytest.approx(A_GDL, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(A_FOCAL + A_GDL, abs=1e-6)


def test_default_smoothing_is_negligible_with_frequency_weights():
    # Default smooth_nr = smooth_dr = 1e-5 against numer 10 / denom 16: shift < 1e-6.
    loss = FocalGeneralizedDiceLoss()
    loss(A_LOGITS, A_LABELS)
    assert loss.last_terms["gdl"].item() == pytest.approx(A_GDL, abs=1e-6)


def test_label_map_without_channel_axis_is_accepted():
    loss = _loss()
    assert loss(A_LOGITS, A_LABELS[:, 0]).item() == pytest.approx(A_FOCAL + A_GDL, abs=1e-6)


def test_total_is_weighted_sum_of_parts():
    # λ_focal = 0.5, λ_gdl = 2: loss = 0.5·A_FOCAL + 2·(3/8)
    loss = _loss(lambda_focal=0.5, lambda_gdl=2.0)
    total = loss(A_LOGITS, A_LABELS)
    assert total.item() == pytest.approx(0.5 * A_FOCAL + 2 * A_GDL, abs=1e-6)
    parts = loss.last_terms
    assert total.item() == pytest.approx(0.5 * parts["focal"].item() + 2 * parts["gdl"].item(), abs=1e-7)
    assert not parts["loss"].requires_grad  # last_terms are detached


def test_parts_match_single_term_losses_on_random_data():
    logits = torch.randn(2, 3, 8, 8, 4)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 4))
    both = FocalGeneralizedDiceLoss(lambda_focal=1.5, lambda_gdl=0.25).forward_terms(logits, labels)
    only_focal = FocalGeneralizedDiceLoss(lambda_focal=1.0, lambda_gdl=0.0)(logits, labels)
    only_gdl = FocalGeneralizedDiceLoss(lambda_focal=0.0, lambda_gdl=1.0)(logits, labels)
    torch.testing.assert_close(both["focal"], only_focal)
    torch.testing.assert_close(both["gdl"], only_gdl)
    torch.testing.assert_close(both["loss"], 1.5 * only_focal + 0.25 * only_gdl)


@pytest.mark.parametrize(
    ("gamma", "alpha", "expected"),
    [
        # γ=0, α=1: cross-entropy  (ln(4/3) + ln 2) / 2
        (0.0, 1.0, (math.log(4 / 3) + math.log(2)) / 2),
        # γ=1: ((1/4)·ln(4/3) + (1/2)·ln 2) / 2
        (1.0, 1.0, (math.log(4 / 3) / 4 + math.log(2) / 2) / 2),
        # scalar α applies to every class (unlike MONAI's scalar alpha): half of the α=1 value
        (2.0, 0.5, 0.5 * A_FOCAL),
        # per-class α = (0.25, 1): v2 (label 0) weighted 0.25 → (ln(4/3)/16 + 0.25·ln(2)/4) / 2
        (2.0, (0.25, 1.0), (math.log(4 / 3) / 16 + 0.25 * math.log(2) / 4) / 2),
    ],
)
def test_focal_gamma_alpha_golden(gamma, alpha, expected):
    loss = _loss(gamma=gamma, alpha=alpha)
    loss(A_LOGITS, A_LABELS)
    assert loss.last_terms["focal"].item() == pytest.approx(expected, abs=1e-6)


def test_gamma0_alpha1_focal_equals_cross_entropy():
    logits = torch.randn(2, 3, 6, 5, 4) * 3
    labels = torch.randint(0, 3, (2, 6, 5, 4))
    loss = FocalGeneralizedDiceLoss(gamma=0.0, alpha=1.0, lambda_gdl=0.0)
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))


def test_gamma_down_weights_easy_voxels():
    # A confident correct voxel (p_t ≈ 0.98) loses far more weight than a hard one when γ grows.
    logits = _logits((0.0, 4.0), (0.0, -1.0))  # v1 easy (label 1), v2 hard (label 1)
    labels = _labels(1, 1)
    per_voxel = {}
    for g in (0.0, 2.0):
        loss = _loss(gamma=g, lambda_gdl=0.0)
        per_voxel[g] = [loss(logits[:, :, i : i + 1], labels[:, :, i : i + 1]).item() for i in range(2)]
    easy_ratio = per_voxel[2.0][0] / per_voxel[0.0][0]
    hard_ratio = per_voxel[2.0][1] / per_voxel[0.0][1]
    assert easy_ratio < 0.001 < 0.5 < hard_ratio


def test_focal_matches_monai_times_classes():
    # MONAI's reduction="mean" averages over B·C·voxels, i.e. 1/C of the multi-class focal loss.
    logits = torch.randn(2, 3, 6, 6, 4)
    labels = torch.randint(0, 3, (2, 1, 6, 6, 4))
    ours = FocalGeneralizedDiceLoss(gamma=2.0, alpha=1.0, lambda_gdl=0.0)(logits, labels)
    monai = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, reduction="mean")(logits, labels)
    torch.testing.assert_close(ours, 3 * monai)


def test_focal_without_background_keeps_softmax_over_all_classes():
    # Only v1 (label 1) contributes, with p_t from the 2-class softmax = 3/4: (ln(4/3)/16 + 0) / 2.
    loss = _loss(include_background=False)
    loss(A_LOGITS, A_LABELS)
    assert loss.last_terms["focal"].item() == pytest.approx(math.log(4 / 3) / 16 / 2, abs=1e-6)
    # GDL on class 1 only: G1 = 1 (f = 1, w = 1), TP1 = 3/4, P1 = 5/4 → 1 - 2·(3/4)/(5/4 + 1) = 1/3
    assert loss.last_terms["gdl"].item() == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.parametrize(
    ("w_type", "expected"),
    [
        # square: w0 = 1/(2/3)² = 9/4, w1 = 1/(1/3)² = 9
        #   numer = 2·(9/4·5/4 + 9·3/4) = 153/8 ; denom = 9/4·(3/2 + 2) + 9·(3/2 + 1) = 243/8 → 1 - 153/243 = 10/27
        ("square", 10 / 27),
        # simple: w0 = 3/2, w1 = 3 → numer = 2·(15/8 + 9/4) = 33/4 ; denom = 3/2·7/2 + 3·5/2 = 51/4 → 1 - 33/51 = 6/17
        ("simple", 6 / 17),
        # uniform: numer = 2·(5/4 + 3/4) = 4 ; denom = 7/2 + 5/2 = 6 → 1/3
        ("uniform", 1 / 3),
    ],
)
def test_gdl_weight_types_golden(w_type, expected):
    loss = _loss(gdl_w_type=w_type)
    loss(B_LOGITS, B_LABELS)
    assert loss.last_terms["gdl"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("basis", "expected"),
    [
        # frequency weights (9/4, 9): 1 - (153/8 + 1) / (243/8 + 1) = 1 - 161/251 = 90/251
        ("frequency", 90 / 251),
        # count weights (1/4, 1): numer = 2·(5/16 + 3/4) = 17/8 ; denom = 1/4·7/2 + 5/2 = 27/8
        #   1 - (17/8 + 1) / (27/8 + 1) = 1 - 25/35 = 2/7
        ("count", 2 / 7),
    ],
)
def test_gdl_weight_basis_only_matters_against_smoothing(basis, expected):
    unsmoothed = _loss(gdl_weight_basis=basis)
    unsmoothed(B_LOGITS, B_LABELS)
    assert unsmoothed.last_terms["gdl"].item() == pytest.approx(10 / 27, abs=1e-6)
    smoothed = _loss(gdl_weight_basis=basis, smooth_nr=1.0, smooth_dr=1.0)
    smoothed(B_LOGITS, B_LABELS)
    assert smoothed.last_terms["gdl"].item() == pytest.approx(expected, abs=1e-6)


def test_gdl_count_basis_is_monai():
    logits = torch.randn(2, 3, 6, 6, 4)
    labels = torch.randint(0, 3, (2, 1, 6, 6, 4))
    labels[1][labels[1] == 2] = 0  # tumour absent from sample 1
    ours = FocalGeneralizedDiceLoss(lambda_focal=0.0, gdl_weight_basis="count")(logits, labels)
    monai = GeneralizedDiceLoss(to_onehot_y=True, softmax=True)(logits, labels)
    torch.testing.assert_close(ours, monai)


def test_gdl_absent_class_gets_largest_present_weight():
    # Example C — both voxels label 0, class 1 absent:
    #   v1: (ln 3, 0) → p = (3/4, 1/4) ; v2: (0, 0) → p = (1/2, 1/2)
    #   G0 = 2 (f = 1, w0 = 1); G1 = 0 → w1 = inf → replaced by max present weight = 1
    #   TP0 = 5/4, TP1 = 0 ; P0 = 5/4, P1 = 3/4 ; numer = 2·5/4 = 5/2 ; denom = (5/4 + 2) + (3/4 + 0) = 4
    #   GDL = 1 - 5/8 = 3/8
    loss = _loss()
    loss(_logits((LN3, 0.0), (0.0, 0.0)), _labels(0, 0))
    assert loss.last_terms["gdl"].item() == pytest.approx(3 / 8, abs=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("patch", ["no_tumour", "all_background"])
def test_empty_classes_give_finite_loss_and_gradients(include_background, patch):
    labels = torch.randint(0, 2, (2, 1, 8, 8, 4))  # background and lung only
    if patch == "all_background":
        labels.zero_()
    logits = (torch.randn(2, 3, 8, 8, 4) * 20).requires_grad_(True)  # saturated softmax too
    loss_fn = FocalGeneralizedDiceLoss(include_background=include_background)
    loss = loss_fn(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    if patch == "all_background" and not include_background:
        # Nothing takes part: the focal term has no foreground voxel, the GDL no present class.
        assert torch.count_nonzero(logits.grad) == 0
    else:
        assert logits.grad.abs().sum() > 0


def test_all_background_without_background_channel_has_zero_gdl():
    # No class takes part: all GDL weights are 0 → 1 - smooth_nr/smooth_dr = 0, with zero gradient.
    logits = torch.randn(1, 3, 4, 4, 2, requires_grad=True)
    labels = torch.zeros(1, 1, 4, 4, 2, dtype=torch.long)
    terms = FocalGeneralizedDiceLoss(include_background=False).forward_terms(logits, labels)
    assert terms["gdl"].item() == 0.0
    terms["gdl"].backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_float_labels_and_float16_logits_are_accepted():
    loss = _loss()
    value = loss(A_LOGITS.half(), A_LABELS.float())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(A_FOCAL + A_GDL, abs=2e-3)


@pytest.mark.parametrize(
    ("logits_shape", "target_shape", "match"),
    [
        ((2, 3, 8, 8, 4), (2, 1, 8, 8, 5), r"target shape \(2, 1, 8, 8, 5\) does not fit logits shape \(2, 3, 8, 8, 4\)"),
        ((2, 3, 8, 8, 4), (1, 1, 8, 8, 4), r"target shape \(1, 1, 8, 8, 4\) does not fit logits shape \(2, 3, 8, 8, 4\)"),
        ((2, 3, 8, 8, 4), (2, 3, 8, 8, 4), r"target shape \(2, 3, 8, 8, 4\) .*not one-hot"),
        ((2, 1, 8, 8, 4), (2, 1, 8, 8, 4), r"logits have 1 channel \(shape \(2, 1, 8, 8, 4\)\)"),
    ],
)
def test_shape_errors_show_both_shapes(logits_shape, target_shape, match):
    with pytest.raises(InputError, match=match):
        FocalGeneralizedDiceLoss()(torch.zeros(logits_shape), torch.zeros(target_shape, dtype=torch.long))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([0, 3]), r"labels in \[0, 3\] but the logits have 3 classes: expected labels 0..2"),
        (torch.tensor([-1, 1]), r"labels in \[-1, 1\]"),
        (torch.tensor([0.0, 1.5]), r"non-integer values"),
    ],
)
def test_bad_label_values_are_rejected(labels, match):
    with pytest.raises(InputError, match=match):
        FocalGeneralizedDiceLoss()(torch.zeros(1, 3, 2, 1, 1), labels.reshape(1, 1, 2, 1, 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": -1.0}, r"gamma must be a finite number >= 0, not -1.0"),
        ({"alpha": -0.5}, r"alpha must be a finite number >= 0, not -0.5"),
        ({"alpha": (1.0, -2.0, 1.0)}, r"alpha\[1\] must be a finite number >= 0, not -2.0"),
        ({"alpha": "high"}, r"alpha must be a number or a non-empty list"),
        ({"lambda_focal": -1.0}, r"lambda_focal must be a finite number >= 0"),
        ({"lambda_gdl": float("nan")}, r"lambda_gdl must be a finite number >= 0"),
        ({"lambda_focal": 0.0, "lambda_gdl": 0.0}, r"both 0"),
        ({"gdl_w_type": "cubic"}, r"gdl_w_type must be one of"),
        ({"gdl_weight_basis": "area"}, r"gdl_weight_basis must be one of"),
        ({"smooth_dr": -1e-5}, r"smooth_dr must be a finite number >= 0"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FocalGeneralizedDiceLoss(**kwargs)


def test_alpha_length_must_match_classes():
    loss = FocalGeneralizedDiceLoss(alpha=(1.0, 2.0))
    with pytest.raises(ConfigError, match=r"alpha has 2 values .* logits \(shape \(1, 3, 2, 1, 1\)\) have 3 classes"):
        loss(torch.zeros(1, 3, 2, 1, 1), torch.zeros(1, 1, 2, 1, 1, dtype=torch.long))
