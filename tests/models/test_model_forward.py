"""Small real forward/backward passes of every registered model and option, input checks,
activation checkpointing and state-dict keys."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rrcunet.errors import InputError
from rrcunet.models import BLOCK_REGISTRY, build_model, list_models

SMALL = {"levels": 3, "base_filters": 4}
SPATIAL = (32, 32, 16)


def _forward_backward(model: nn.Module, in_channels: int) -> torch.Tensor:
    x = torch.randn(1, in_channels, *SPATIAL, requires_grad=True)
    y = model(x)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    return y


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_and_backward(name):
    model = build_model(name, **SMALL).train()
    y = _forward_backward(model, model.in_channels)
    assert y.shape == (1, model.out_channels, *SPATIAL)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("join", ["cat", "add"])
@pytest.mark.parametrize("up_channels", ["keep", "halve"])
@pytest.mark.parametrize("upsample", ["transpose", "interp"])
def test_rrcunet_readings_and_upsampling_modes(join, up_channels, upsample):
    model = build_model("rrcunet", join=join, up_channels=up_channels, upsample=upsample, **SMALL)
    assert _forward_backward(model, 2).shape == (1, 3, *SPATIAL)


def test_four_levels_and_per_level_options():
    model = build_model("rrcunet", levels=4, filters=[4, 8, 8, 16], t=[1, 2, 2, 3], dropout=[0.0, 0.1, 0.1, 0.2])
    assert [s.block.recurrent[0].t for s in model.encoder.stages] == [1, 2, 2, 3]
    assert isinstance(model.encoder.stages[0].dropout, nn.Identity)
    assert model.encoder.stages[3].dropout.p == 0.2
    assert _forward_backward(model, 2).shape == (1, 3, *SPATIAL)


@pytest.mark.parametrize("block", sorted(BLOCK_REGISTRY))
def test_dropout_after_every_block_except_cgpd(block):
    model = build_model({"rrc": "rrcunet"}.get(block, block), dropout=0.3, **SMALL)
    stages = [*model.encoder.stages, *model.decoder.stages]
    n_dropout = sum(isinstance(m, nn.Dropout) for m in model.modules())
    if block == "cgpd":  # dropout inside each of the two units, none after the block
        assert all(isinstance(s.dropout, nn.Identity) for s in stages)
        assert n_dropout == 2 * len(stages)
    else:
        assert all(isinstance(s.dropout, nn.Dropout) and s.dropout.p == 0.3 for s in stages)
        assert n_dropout == len(stages)


def test_spatial_size_not_divisible_is_refused_with_the_padded_shape():
    model = build_model("rrcunet", levels=4, base_filters=4)
    with pytest.raises(InputError, match=r"divisible by 8.*got \(30, 32, 17\).*pad the input to \(32, 32, 24\)"):
        model(torch.zeros(1, 2, 30, 32, 17))
    assert model.padded_shape((30, 32, 17)) == (32, 32, 24)


def test_forward_padded_runs_any_size_and_crops_back():
    from rrcunet.models.unet3d import forward_padded

    torch.manual_seed(0)
    model = build_model("rrcunet", levels=4, base_filters=4, dropout=0.0).eval()
    x = torch.randn(1, 2, 30, 32, 17)
    with torch.no_grad():
        out = forward_padded(model, x)
        padded = model(torch.nn.functional.pad(x, (0, 7, 0, 0, 0, 2)))
    assert out.shape == (1, 3, 30, 32, 17)
    torch.testing.assert_close(out, padded[..., :30, :32, :17])
    with torch.no_grad():  # a divisible input is passed through unpadded
        y = torch.randn(1, 2, 32, 32, 24)
        torch.testing.assert_close(forward_padded(model, y), model(y))


def test_wrong_channels_and_rank_are_refused():
    model = build_model("rrcunet", **SMALL)
    with pytest.raises(InputError, match=r"expects 2 input channel\(s\), got 1"):
        model(torch.zeros(1, 1, *SPATIAL))
    with pytest.raises(InputError, match=r"5-D tensor.*got shape \(2, 32, 32, 16\)"):
        model(torch.zeros(2, *SPATIAL))


@pytest.mark.parametrize("name", ["rrcunet", "cgpd", "residual"])
def test_checkpointing_gives_same_outputs_and_gradients(name):
    torch.manual_seed(1)
    plain = build_model(name, dropout=0.0, **SMALL).eval()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpointing = True
    x = torch.randn(1, 2, 16, 16, 8)

    # count block-internal conv calls: checkpointing recomputes each block during backward
    calls = []
    first_conv = next(m for m in ckpt.encoder.stages[0].block.modules() if isinstance(m, nn.Conv3d))
    first_conv.register_forward_hook(lambda *_: calls.append(1))

    outputs, grads = [], []
    for model in (plain, ckpt):
        model.zero_grad()
        y = model(x)
        y.square().mean().backward()
        outputs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert len(calls) == 2, "checkpointing did not recompute the block in backward"
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


def test_checkpointing_is_off_under_no_grad():
    model = build_model("rrcunet", checkpointing=True, **SMALL).eval()
    calls = []
    next(m for m in model.modules() if isinstance(m, nn.Conv3d)).register_forward_hook(lambda *_: calls.append(1))
    with torch.inference_mode():
        model(torch.zeros(1, 2, *SPATIAL))
    assert len(calls) == 1


def test_state_dict_keys_are_readable_and_stable():
    model = build_model("rrcunet", levels=5, base_filters=4)
    keys = set(model.state_dict())
    for key in (
        "encoder.stages.0.block.entry.weight",
        "encoder.stages.2.block.recurrent.0.unit.conv.weight",
        "encoder.stages.4.block.recurrent.1.unit.adn.N.weight",
        "decoder.upsamples.3.deconv.weight",
        "decoder.stages.3.block.entry.weight",
        "decoder.stages.0.block.recurrent.1.unit.adn.A.weight",
        "head.weight",
        "head.bias",
    ):
        assert key in keys, key
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "head"}
    # decoder.stages.{i} is level i: it outputs that level's filters
    assert [model.decoder.stages[i].block.entry.out_channels * 2 for i in range(4)] == [4, 8, 16, 32]
    # options without parameters never move keys
    other = build_model("rrcunet", levels=5, base_filters=4, dropout=0.0, checkpointing=True, t=3)
    assert set(other.state_dict()) == keys
    other.load_state_dict(model.state_dict())  # strict


def test_parameters_do_not_depend_on_t():
    counts = {t: sum(p.numel() for p in build_model("rrcunet", t=t, **SMALL).parameters()) for t in (1, 2, 5)}
    assert len(set(counts.values())) == 1
