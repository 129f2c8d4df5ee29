"""Deep supervision option of the U-Net (not in the paper): auxiliary heads, outputs per mode, keys."""

from __future__ import annotations

import pytest
import torch

from rrcunet.errors import ConfigError
from rrcunet.models import build_model

SMALL = {"base_filters": 4, "levels": 4, "norm_groups": 1, "dropout": 0.0}


@pytest.mark.parametrize("name", ["rrcunet", "unet"])
def test_training_mode_returns_every_scale_eval_mode_only_the_full_size(name):
    torch.manual_seed(0)
    net = build_model(name, deep_supervision=2, **SMALL)
    x = torch.randn(1, 2, 32, 32, 16)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 32, 32, 16), (1, 3, 16, 16, 8), (1, 3, 8, 8, 4)]
    with torch.no_grad():
        full = net.eval()(x)
    # the full-size output is the network's ordinary output (no dropout here, GroupNorm has no running stats)
    torch.testing.assert_close(outs[0].detach(), full, rtol=1e-5, atol=1e-5)


def test_aux_heads_see_the_decoder_level_they_name():
    torch.manual_seed(0)
    net = build_model("rrcunet", deep_supervision=1, **SMALL).train()
    x = torch.randn(1, 2, 32, 32, 16)
    seen = {}
    hook = net.decoder.stages[1].register_forward_hook(lambda m, i, o: seen.setdefault("level1", o))
    outs = net(x)
    hook.remove()
    torch.testing.assert_close(outs[1], net.aux_heads[0](seen["level1"]))


def test_state_dict_keys_unchanged_without_it_and_aux_heads_with_it():
    plain = set(build_model("rrcunet", **SMALL).state_dict())
    with_ds = set(build_model("rrcunet", deep_supervision=2, **SMALL).state_dict())
    assert not any(k.startswith("aux_heads") for k in plain)
    assert with_ds - plain == {f"aux_heads.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}


@pytest.mark.parametrize("value", [-1, 3])
def test_bad_deep_supervision_raises(value):
    with pytest.raises(ConfigError, match="deep_supervision"):
        build_model("rrcunet", deep_supervision=value, **SMALL)


def test_coordunet_refuses_deep_supervision():
    with pytest.raises(ConfigError, match="deep_supervision is not available for coordunet"):
        build_model("coordunet", deep_supervision=1)
