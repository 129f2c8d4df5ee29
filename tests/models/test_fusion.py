"""The decoder's inference-time fusion of upsampling and entry convolution (rrcunet.models.fusion):
same function as the network as written, and the upsampled tensor is really never built."""

from __future__ import annotations

import pytest
import torch

from rrcunet.models import build_model
from rrcunet.models import fusion
from rrcunet.models.fusion import can_fuse

SMALL = {"levels": 3, "base_filters": 8, "dropout": 0.0}
SPATIAL = (16, 24, 8)

FUSED = [
    ("rrcunet", {}),
    ("rrcunet", {"join": "add"}),
    ("rrcunet", {"up_channels": "halve"}),
    ("rrcunet", {"t": 3, "levels": 4}),
    ("recurrent", {}),
    ("coordunet", {"block": "rrc"}),
]
NOT_FUSED = [("unet", {}), ("coordunet", {}), ("residual", {}), ("cgpd", {}), ("rrcunet", {"upsample": "interp"}),
             ("rrcunet", {"entry_kernel_size": 3})]


def _pair(name, kwargs, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, **{**SMALL, **kwargs}).eval()
    # non-trivial biases and GroupNorm affine parameters, so a missing bias term would show
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, model.in_channels, *SPATIAL)
    return model, x


@pytest.mark.parametrize(("name", "kwargs"), FUSED, ids=lambda v: str(v))
def test_fused_inference_equals_the_network_as_written(name, kwargs):
    model, x = _pair(name, kwargs)
    assert all(can_fuse(u, s.block) for u, s in zip(model.decoder.upsamples, model.decoder.stages))
    calls = []
    hooks = [u.register_forward_hook(lambda *a: calls.append(1)) for u in model.decoder.upsamples]
    reference = model(x)  # autograd on: the unfused path
    assert len(calls) == len(model.decoder.upsamples)
    calls.clear()
    with torch.inference_mode():
        fused = model(x)
    for h in hooks:
        h.remove()
    assert not calls, "the upsampling module ran: the fused path was not taken"
    torch.testing.assert_close(fused, reference.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), NOT_FUSED, ids=lambda v: str(v))
def test_levels_that_cannot_be_fused_run_as_written(name, kwargs):
    model, x = _pair(name, kwargs)
    assert not any(can_fuse(u, s.block) for u, s in zip(model.decoder.upsamples, model.decoder.stages))
    reference = model(x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.detach(), rtol=1e-6, atol=1e-6)


def test_fused_path_under_bf16_autocast_stays_close_to_fp32():
    model, x = _pair("rrcunet", {})
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x)
    assert bf16.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: a few per cent of the logit range
    assert (bf16.float() - fp32).abs().max() <= 0.05 * fp32.abs().max()


def test_training_gradients_do_not_use_the_fused_path():
    model, x = _pair("rrcunet", {})
    model.train()
    model(x).square().mean().backward()
    for u in model.decoder.upsamples:
        assert u.deconv.weight.grad is not None and u.deconv.weight.grad.abs().sum() > 0


def test_disabled_runs_the_upsampling_as_written():
    model, x = _pair("rrcunet", {})
    calls = []
    for u in model.decoder.upsamples:
        u.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        fused = model(x)
        assert not calls
        with fusion.disabled():
            written = model(x)
        assert len(calls) == len(model.decoder.upsamples) and fusion.enabled()
    torch.testing.assert_close(fused, written, rtol=1e-5, atol=1e-5)


def test_set_enabled_switches_the_process_wide_default():
    model, x = _pair("rrcunet", {})
    calls = []
    for u in model.decoder.upsamples:
        u.register_forward_hook(lambda *a: calls.append(1))
    try:
        fusion.set_enabled(False)
        with torch.no_grad():
            model(x)
        assert len(calls) == len(model.decoder.upsamples)
    finally:
        fusion.set_enabled(True)
    assert fusion.enabled()
