"""The fused GroupNorm → PReLU (→ + residual) CPU kernel against the eager modules it replaces."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rrcunet.models import kernels
from rrcunet.models.blocks.common import conv_norm_act
from rrcunet.models.registry import build_model

CL = torch.channels_last_3d


@pytest.fixture(scope="module")
def ext():
    if kernels.extension() is None:
        pytest.skip(f"the fused kernel could not be built here: {kernels.failure()}")
    return kernels.extension()


def _modules(channels: int, groups: int, seed: int = 0) -> tuple[nn.GroupNorm, nn.PReLU]:
    g = torch.Generator().manual_seed(seed)
    norm = nn.GroupNorm(groups, channels)
    act = nn.PReLU()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
        act.weight.fill_(0.3)
    return norm, act


@pytest.mark.parametrize(("channels", "groups", "shape"), [(16, 8, (2, 20, 18, 9)), (6, 3, (1, 7, 5, 3)),
                                                             (48, 8, (1, 9, 8, 6))])
@pytest.mark.parametrize("residual", [False, True])
def test_float32_forward_and_gradients_match_the_modules_in_float64(ext, channels, groups, shape, residual):
    """Against the eager modules run in float64; odd sizes too (a voxel count that is no multiple of the
    kernel's strips, C not a power of two). The kernel's statistics are taken in double, so it is closer
    to float64 than eager float32 GroupNorm (8e-4 off here at a mean of 40)."""
    n, *spatial = shape
    g = torch.Generator().manual_seed(1)
    # a large offset: the statistics must not cancel (mean 40, std 3)
    x = (torch.randn(n, channels, *spatial, generator=g) * 3 + 40).contiguous(memory_format=CL)
    r = torch.randn(n, channels, *spatial, generator=g).contiguous(memory_format=CL) if residual else None
    gy = torch.randn(n, channels, *spatial, generator=g).contiguous(memory_format=CL)
    results = []
    for dtype in (torch.float32, torch.float64):
        norm, act = _modules(channels, groups)
        norm, act = norm.to(dtype), act.to(dtype)
        xi = x.to(dtype, copy=True).requires_grad_()
        ri = r.to(dtype, copy=True).requires_grad_() if residual else None
        y = kernels.norm_act(norm, act, xi, ri)
        assert y.dtype == dtype
        y.backward(gy.to(dtype))
        grads = [xi.grad, norm.weight.grad, norm.bias.grad, act.weight.grad] + ([ri.grad] if residual else [])
        results.append((y.detach().double(), [t.double() for t in grads]))
    (y_f, g_f), (y_e, g_e) = results
    torch.testing.assert_close(y_f, y_e, atol=1e-4, rtol=1e-4)
    for a, b in zip(g_f, g_e):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


def test_bfloat16_stays_bfloat16_and_agrees_within_bf16_rounding(ext):
    norm, act = _modules(16, 8)
    x = torch.randn(1, 16, 24, 20, 12, generator=torch.Generator().manual_seed(2)).bfloat16().contiguous(memory_format=CL)
    y = kernels.norm_act(norm, act, x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=CL)
    expected = act(norm(x.float()))
    # one bf16 rounding of the output: relative 2**-8
    torch.testing.assert_close(y.float(), expected, atol=2e-2, rtol=2 ** -7)


def test_only_channels_last_cpu_tensors_take_the_fused_path(ext):
    norm, act = _modules(8, 4)
    x = torch.randn(1, 8, 6, 6, 4)
    assert not kernels.fusable(norm, act, x)  # contiguous
    assert kernels.fusable(norm, act, x.contiguous(memory_format=CL))
    assert not kernels.fusable(norm, nn.PReLU(num_parameters=8), x.contiguous(memory_format=CL))
    assert not kernels.fusable(nn.GroupNorm(4, 8, affine=False), act, x.contiguous(memory_format=CL))
    with kernels.disabled():
        assert not kernels.fusable(norm, act, x.contiguous(memory_format=CL))
    assert kernels.enabled()


def test_a_unit_with_dropout_runs_as_monai_wrote_it(ext):
    unit = conv_norm_act(4, 8, dropout=0.5).eval()
    calls = []
    original = kernels._NormAct.apply
    try:
        kernels._NormAct.apply = lambda *a: calls.append(1) or original(*a)
        unit(torch.randn(1, 4, 6, 6, 4).bfloat16().contiguous(memory_format=CL).float())
    finally:
        kernels._NormAct.apply = original
    assert not calls


def test_the_network_in_bf16_channels_last_matches_its_eager_run(ext):
    """RRc-UNet 3D under bf16 autocast, channels-last: the fused run against the eager run of the same
    weights (inference and one training gradient)."""
    torch.manual_seed(0)
    net = build_model("rrcunet", in_channels=2, out_channels=3, base_filters=8, levels=3, dropout=0.0)
    net = net.to(memory_format=CL)
    x = torch.randn(1, 2, 32, 32, 16, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=CL)
    calls = []
    original = kernels._NormAct.apply
    kernels._NormAct.apply = lambda *a: calls.append(1) or original(*a)
    try:
        outs, grads = {}, {}
        for fused in (True, False):
            with (warnings.catch_warnings() if fused else kernels.disabled()):
                net.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    outs[fused] = torch.softmax(net(x).float(), 1)
                net.train()
                net.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = net(x).float().square().mean()
                loss.backward()
                grads[fused] = torch.cat([p.grad.flatten() for p in net.parameters()])
    finally:
        kernels._NormAct.apply = original
    assert calls, "the fused path never ran"
    assert (outs[True] - outs[False]).abs().max() < 0.05
    assert F.cosine_similarity(grads[True], grads[False], dim=0) > 0.999


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(kernels, "_EXTENSION", None)
    monkeypatch.setattr(kernels, "_FAILURE", None)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++ not found")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    with pytest.warns(RuntimeWarning, match="could not be built.*g\\+\\+ not found"):
        assert kernels.extension() is None
    assert not kernels.available() and "g++ not found" in kernels.failure()
    norm, act = _modules(8, 4)
    x = torch.randn(1, 8, 6, 6, 4).contiguous(memory_format=CL)
    torch.testing.assert_close(kernels.norm_act(norm, act, x), act(norm(x)))


def test_the_build_name_changes_with_the_cpu(monkeypatch):
    name = kernels.build_name()
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: "flags : fpu sse2 avx2")
    assert kernels.build_name() != name and kernels.build_name().startswith("rrcunet_norm_act_")


def test_the_build_name_changes_with_the_compiler_flags(monkeypatch):
    # a cached build made with other flags (e.g. before -mprefer-vector-width=512) is never reused
    name = kernels.build_name()
    monkeypatch.setattr(kernels, "CFLAGS", tuple(f for f in kernels.CFLAGS if "vector-width" not in f))
    assert kernels.build_name() != name


def test_the_build_name_changes_with_the_source_path(monkeypatch, tmp_path):
    # two installs of the package keep one build each instead of rebuilding each other's
    name = kernels.build_name()
    copy = tmp_path / "norm_act.cpp"
    copy.write_bytes(kernels.SOURCE.read_bytes())
    monkeypatch.setattr(kernels, "SOURCE", copy)
    assert kernels.build_name() != name


def test_max_pooling_keeps_bf16_under_autocast_and_the_network_output_is_unchanged(ext, monkeypatch):
    """The encoder pools a bf16 activation in bf16 (CPU autocast would run it in float32 after a cast of
    the whole level); a maximum is exact, so the outputs and gradients equal the cast-and-pool ones."""
    import rrcunet.models.unet3d as unet3d

    torch.manual_seed(0)
    model = build_model("rrcunet", base_filters=8, levels=3).to(memory_format=CL)
    x = torch.randn(1, 2, 32, 32, 16).contiguous(memory_format=CL)
    seen = []

    def run():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        y.float().square().mean().backward()
        return y.detach(), [p.grad.clone() for p in model.parameters()]

    native = unet3d.pool_in_own_dtype
    monkeypatch.setattr(unet3d, "pool_in_own_dtype", lambda pool, t: seen.append(native(pool, t).dtype) or native(pool, t))
    y_new, g_new = run()
    assert seen and set(seen) == {torch.bfloat16}
    monkeypatch.setattr(unet3d, "pool_in_own_dtype", lambda pool, t: pool(t))  # autocast's float32 pooling
    y_old, g_old = run()
    assert torch.equal(y_new, y_old)
    for a, b in zip(g_new, g_old):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_rrc_join_written_by_the_kernel_equals_the_concatenation(ext):
    """The last RB writes the entry output beside its own (``tail``): the same tensor, bit for bit, as
    ``torch.cat`` of the two, and the same gradients (bf16 autocast, channels-last: float32 Conv3d
    returns the contiguous layout on CPU, so the kernel runs for bf16)."""
    from rrcunet.models.blocks.rrc import RRcBlock

    torch.manual_seed(0)
    block = RRcBlock(4, 16).to(memory_format=CL)
    x = torch.randn(1, 4, 9, 8, 7).contiguous(memory_format=CL)
    grad = torch.randn(1, 16, 9, 8, 7)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    calls = []
    original = kernels._NormAct.apply
    kernels._NormAct.apply = lambda *a: calls.append(a[5] is not None) or original(*a)
    try:
        results = []
        for joined_by_kernel in (True, False):
            xi = x.clone().requires_grad_()
            block.zero_grad()
            with autocast:
                e = block.entry(xi)
                out = block.after_entry(e) if joined_by_kernel else torch.cat((block.recurrent(e), e), dim=1)
            out.backward(grad.to(out.dtype))
            results.append((out.detach(), xi.grad, [p.grad.clone() for p in block.parameters()]))
    finally:
        kernels._NormAct.apply = original
    assert any(calls), "the kernel never wrote a tail"
    (out_k, dx_k, dp_k), (out_c, dx_c, dp_c) = results
    assert out_k.dtype == out_c.dtype and torch.equal(out_k, out_c)
    # autograd may add the entry output's two gradients in another order (bf16 rounding)
    assert torch.allclose(dx_k, dx_c, rtol=1e-2, atol=1e-3)
    assert all(torch.allclose(a, b, rtol=1e-2, atol=1e-3) for a, b in zip(dp_k, dp_c))


def test_the_eager_path_concatenates_the_tail(ext):
    norm, act = _modules(8, 4)
    x, r, t = torch.randn(1, 8, 4, 5, 3), torch.randn(1, 8, 4, 5, 3), torch.randn(1, 3, 4, 5, 3)
    out = kernels.norm_act(norm, act, x, r, t)  # contiguous: not fusable
    assert torch.equal(out, torch.cat((act(norm(x)) + r, t), dim=1))
    fused = kernels.norm_act(norm, act, x.contiguous(memory_format=CL), r.contiguous(memory_format=CL),
                             t.contiguous(memory_format=CL))
    assert torch.allclose(fused, out, atol=1e-5)


def _rrc_step(seed: int = 0):
    """Gradients of one bf16 channels-last training step of a small base-8 RRc-UNet (4-channel
    level-0 units, the narrow convolutions :func:`kernels.conv` routes)."""
    torch.manual_seed(seed)
    model = build_model("rrcunet", in_channels=2, out_channels=3, levels=2, base_filters=8,
                        entry_kernel_size=1).to(memory_format=CL)
    x = torch.randn(1, 2, 12, 10, 8).contiguous(memory_format=CL).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    return loss.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_the_training_convolutions_give_the_autocast_convolutions_gradients(monkeypatch):
    """Issue 23: in training, the 4-channel 3×3×3 convolutions and the pointwise ones (the entry
    convolutions, the head) run through kernels.conv with our backward, and the ×2 transposed
    convolution through kernels.upsample as a matrix product. The same sums in another order, and
    weight gradients summed in float32 where autocast sums a recurrent unit's in bf16: the loss,
    the input gradient and every parameter's gradient are autocast's within bf16 rounding (bf16
    has 8 bits: 2⁻⁷ of the gradient's norm), not bit for bit."""
    kinds = []
    real = kernels._TrainingConv.apply
    monkeypatch.setattr(kernels, "_cpu_has_amx", lambda: True)  # the path is on only where measured (AMX)
    monkeypatch.setattr(kernels._TrainingConv, "apply", lambda *a: kinds.append((a[4], a[1].shape)) or real(*a))
    loss_f, dx_f, grads_f = _rrc_step()
    assert {kind for kind, _ in kinds} == {"narrow", "pointwise"}
    assert all(shape[2:] == (1, 1, 1) for kind, shape in kinds if kind == "pointwise")
    assert any(shape[:2] == (4, 2) for kind, shape in kinds if kind == "pointwise")  # the first block's entry
    assert all(max(shape[:2]) <= kernels.NARROW_MAX_CHANNELS for kind, shape in kinds if kind == "narrow")
    monkeypatch.setattr(kernels, "_cpu_has_amx", lambda: False)
    kinds.clear()
    loss_a, dx_a, grads_a = _rrc_step()
    assert not kinds
    assert abs(loss_f.item() - loss_a.item()) <= 1e-3 * abs(loss_a.item())
    assert _relative(dx_f, dx_a) < 2 ** -7
    assert grads_f.keys() == grads_a.keys()
    for name, grad in grads_a.items():
        assert _relative(grads_f[name], grad) < 2 ** -7, name


def test_the_narrow_weight_gradient_is_the_exact_sum(ext):
    """kernels' narrow_weight_grad (issue 23) against the float64 weight gradient of the same bf16
    values, for 1-4 channels, 3×3×3 and other kernels and paddings; bit for bit the same with one
    thread or two (each slice's sums are added in order)."""
    args = ([1, 1, 1], None, [1, 1, 1], False, [0, 0, 0], 1)
    for (c_in, c_out), kernel, padding, shape in [((4, 4), (3, 3, 3), (1, 1, 1), (11, 9, 37)),
                                                  ((2, 3), (3, 3, 3), (1, 1, 1), (7, 9, 13)),
                                                  ((1, 4), (3, 3, 1), (1, 0, 0), (6, 5, 40)),
                                                  ((4, 2), (3, 3, 3), (0, 2, 1), (8, 8, 8))]:
        g = torch.Generator().manual_seed(c_in * 10 + c_out)
        x = torch.randn(2, c_in, *shape, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
        out = [s + 2 * p - k + 1 for s, p, k in zip(shape, padding, kernel)]
        dy = torch.randn(2, c_out, *out, generator=g).to(torch.bfloat16).contiguous(memory_format=CL)
        weight = torch.zeros(c_out, c_in, *kernel, dtype=torch.float64)
        want = torch.ops.aten.convolution_backward(dy.double(), x.double(), weight, None, args[0], list(padding),
                                                   *args[2:], [False, True, False])[1]
        got = ext.narrow_weight_grad(dy, x, list(kernel), list(padding))
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = ext.narrow_weight_grad(dy, x, list(kernel), list(padding))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(one, got)


def test_the_training_upsampling_is_the_transposed_convolution(monkeypatch):
    """kernels.upsample (issue 23): in a bf16 training pass the ×2 transposed convolution as a matrix
    product and a depth-to-space copy; output and gradients are the module's within bf16 rounding,
    channels-last. Outside training (and for other upsamplings) it is the module itself."""
    monkeypatch.setattr(kernels, "_cpu_has_amx", lambda: True)
    torch.manual_seed(0)
    from rrcunet.models.blocks.upsample import upsample2x
    from rrcunet.models.fusion import deconv_of

    up = upsample2x(8, 6).to(memory_format=CL)  # the decoder's module: MONAI UpSample("deconv")
    x = torch.randn(1, 8, 5, 6, 7).contiguous(memory_format=CL).requires_grad_()
    g = torch.randn(1, 6, 10, 12, 14)

    def run(fn):
        x.grad = None
        up.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn()
        (y.float() * g).sum().backward()
        return [y.detach(), x.grad, up.deconv.weight.grad, up.deconv.bias.grad]

    with torch.autocast("cpu", dtype=torch.bfloat16):  # the product form, not the module, ran
        assert "Convolution" not in type(kernels.upsample(up, x).grad_fn).__name__
    ours, theirs = run(lambda: kernels.upsample(up, x)), run(lambda: up(x))
    assert ours[0].is_contiguous(memory_format=CL) and ours[0].dtype == theirs[0].dtype
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and _relative(a, b) < 2 ** -7
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(kernels.upsample(up, x), up(x))
    assert deconv_of(nn.Sequential(nn.ConvTranspose3d(8, 6, 2, stride=2), nn.ReLU())) is None
    assert deconv_of(nn.ConvTranspose3d(8, 6, 3, stride=2)) is None


@pytest.mark.parametrize("case", ["inference", "float32", "contiguous", "wide", "switched off", "no AMX"])
@pytest.mark.parametrize("kernel", [3, 1])
def test_the_training_convolutions_apply_only_to_bf16_training_passes(monkeypatch, case, kernel):
    monkeypatch.setattr(kernels, "_cpu_has_amx", lambda: case != "no AMX")
    channels = 8 if case == "wide" else 4
    x = torch.randn(1, channels, 6, 6, 6)
    x = x if case == "contiguous" else x.contiguous(memory_format=CL)
    if case == "switched off":
        monkeypatch.setattr(kernels, "enabled", lambda: False)
    module = nn.Conv3d(channels, channels, kernel, padding=kernel // 2, bias=kernel == 1).to(memory_format=CL)
    expected = "pointwise" if case == "wide" and kernel == 1 else None  # pointwise: any width
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case != "float32"), \
            torch.set_grad_enabled(case != "inference"):
        assert kernels.training_conv_path(module, x) == expected
    narrow = nn.Conv3d(4, 4, kernel, padding=kernel // 2, bias=False).to(memory_format=CL)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same convolution in a bf16 training pass
        monkeypatch.setattr(kernels, "_cpu_has_amx", lambda: True)
        monkeypatch.setattr(kernels, "enabled", lambda: True)
        assert kernels.training_conv_path(narrow, torch.randn(1, 4, 6, 6, 6).contiguous(memory_format=CL)) == (
            "narrow" if kernel == 3 else "pointwise")
