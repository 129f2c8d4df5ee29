"""The model registry shared by API, CLI and configs: names, options and their errors."""

from __future__ import annotations

import pytest
import torch

from rrcunet.errors import ConfigError
from rrcunet.models import MODEL_REGISTRY, CoordUNet3D, UNet3D, build_model, list_models, model_defaults


def test_registered_names():
    assert list_models() == ["rrcunet", "cgpd", "residual", "recurrent", "unet", "coordunet"]
    assert MODEL_REGISTRY["cgpd"].preset == {"block": "cgpd"}


def test_default_build_is_the_paper_model():
    with torch.device("meta"):
        model = build_model()
    assert isinstance(model, UNet3D)
    assert (model.in_channels, model.out_channels, model.levels, model.filters) == (2, 3, 5, [32, 64, 128, 256, 512])
    assert model.block_type == "rrc"


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="unknown model 'rrunet': known models are rrcunet, cgpd, residual"):
        build_model("rrunet")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="has no option.*depth: valid options are .*levels"):
        build_model("rrcunet", depth=4)


def test_name_preset_cannot_be_contradicted():
    with pytest.raises(ConfigError, match="fixes block='cgpd', got block='rrc'"):
        build_model("cgpd", block="rrc")
    assert build_model("cgpd", block="cgpd", levels=2, base_filters=2).block_type == "cgpd"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"join": "sum"}, "join='sum' is invalid: expected one of 'cat', 'add'"),
        ({"up_channels": "double"}, "up_channels='double' is invalid"),
        ({"upsample": "pixelshuffle"}, "upsample='pixelshuffle' is invalid"),
        ({"t": 0}, "t=0 is invalid: expected an integer >= 1"),
        ({"levels": 1}, "levels=1 is invalid: expected an integer >= 2"),
        ({"filters": [4, 8]}, r"filters=\[4, 8\] has 2 entries: expected one per level \(5\)"),
        ({"dropout": 1.0}, r"dropout=1.0 is invalid: expected probabilities in \[0, 1\)"),
        ({"kernel_size": 2}, "kernel_size=2 is invalid: expected an odd kernel size"),
    ],
)
def test_invalid_option_values(options, message):
    with pytest.raises(ConfigError, match=message):
        with torch.device("meta"):
            build_model("rrcunet", **options)


def test_model_defaults_is_complete_and_rebuilds_the_same_model():
    opts = model_defaults("coordunet")
    assert isinstance(build_model("coordunet", **{**opts, "levels": 2, "base_filters": 2}), CoordUNet3D)
    assert {"coords_at", "levels", "join", "checkpointing"} <= set(opts)
    assert model_defaults("recurrent")["block"] == "recurrent"
    with torch.device("meta"):
        a = build_model("rrcunet", **model_defaults("rrcunet"))
        b = build_model("rrcunet")
    assert set(a.state_dict()) == set(b.state_dict())
