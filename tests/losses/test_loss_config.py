"""Tests of rrcunet.losses.LossConfig / build_loss: defaults are the paper's, round trip, errors."""

from __future__ import annotations

import json

import pytest

from rrcunet.errors import ConfigError
from rrcunet.losses import LOSSES, FocalGeneralizedDiceLoss, LossConfig, build_loss


def test_defaults_are_the_paper_values():
    loss = build_loss()
    assert isinstance(loss, FocalGeneralizedDiceLoss)
    # §3.2: γ = 2, α = 1, Loss = Focal + GDL (weights 1), GDL class weights 1/frequency².
    assert (loss.gamma, loss.alpha, loss.lambda_focal, loss.lambda_gdl) == (2.0, 1.0, 1.0, 1.0)
    assert str(loss.gdl.w_type) == "square" and loss.gdl.weight_basis == "frequency"
    assert loss.include_background is True


def test_mapping_and_overrides():
    loss = build_loss({"gamma": 1.0, "alpha": [1, 1, 4]}, lambda_gdl=0.5, include_background=False)
    assert loss.gamma == 1.0
    assert loss.alpha == (1.0, 1.0, 4.0)
    assert loss.lambda_gdl == 0.5
    assert loss.include_background is False


def test_config_json_round_trip():
    cfg = LossConfig(alpha=(0.5, 1.0, 2.0), gdl_w_type="simple", smooth_nr=0.0)
    again = LossConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert build_loss(again).alpha == (0.5, 1.0, 2.0)


def test_registry_names_the_paper_loss():
    assert LOSSES["focal_gdl"] is FocalGeneralizedDiceLoss


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"gama": 2.0}, r"unknown loss option\(s\) \['gama'\]; valid options are \['name', 'gamma'"),
        ({"name": "dice_ce"}, r"unknown loss name 'dice_ce'; expected one of \['focal_gdl'\]"),
        ({"gamma": -2}, r"gamma must be a finite number >= 0"),
        ({"lambda_focal": 0, "lambda_gdl": 0}, r"both 0"),
    ],
)
def test_bad_configs_are_rejected(config, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(config)


def test_non_mapping_is_rejected():
    with pytest.raises(ConfigError, match=r"takes a LossConfig or a mapping of options, not list"):
        build_loss([("gamma", 2.0)])
