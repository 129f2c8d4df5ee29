"""The fused GroupNorm → PReLU (→ + residual) kernel for channels-last CPU tensors, and its dispatch;
and (:func:`conv`, at the end) the training backward of the narrow and pointwise convolutions where
oneDNN's bf16 one is slow.

Why our own kernel (issue 23): every unit of RRc-UNet 3D is Conv3d → GroupNorm → PReLU, and its
recurrent blocks add the block input to each unit's output. On CPU, eager PyTorch runs those as
separate passes over memory, with layout copies around GroupNorm (its channels-last CPU kernel is
slow, see :class:`~rrcunet.models.blocks.common.LayoutGroupNorm`) and, under bf16 autocast, dtype
casts around every convolution (GroupNorm and PReLU run in float32). At the paper's size that is
about 6-7× the time of the convolutions themselves. ``torch.compile`` (inductor) fused them but
generated a slow channels-last group reduction (measured: 153 ms for one 16-channel
256×256×48 bf16 GroupNorm + PReLU + add, against 90 ms eager and 37 ms here), and it did not
speed up the training step at all. oneDNN has no GroupNorm post-op for convolutions. So
``csrc/norm_act.cpp`` does the whole unit tail in two passes over channels-last memory, forward
and backward, in float32 arithmetic on float32 or bfloat16 storage:

* forward: per-channel sums (shifted by each channel's first value, accumulated per block in
  float and across blocks in double), group mean and 1/std, then ``y = prelu(gn(x)) [+ r]``;
* backward: per-channel sums of ``dz`` and ``dz·x̂`` and the PReLU slope's gradient, then ``dx``.

It keeps bf16 activations in bf16 (no float32 round trip between convolutions), which is where
most of the gain comes from under autocast.

The kernel is compiled on first use with :func:`torch.utils.cpp_extension.load` (a C++ compiler and
ninja, about 25 s once) for the CPU it runs on (``-march=native``; the build name includes a hash
of the source and its path, the compiler flags, the torch version and the CPU's flags, so a cache shared by
different CPUs never loads a binary built for another, and two installs do not rebuild each other's). The build is cached by PyTorch under
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). If it cannot be built, one
warning says why and every unit runs the eager path, which is the same function.

Dispatch (:func:`norm_act`): the fused path runs for a 5-D CPU tensor in ``channels_last_3d``
layout, float32 or bfloat16, a GroupNorm with affine parameters followed by a single-slope PReLU,
when the kernel is built and :func:`enabled` is true (``RRCUNET_FUSED_KERNELS=0`` or
:func:`disabled` turn it off). Anything else (GPU, contiguous layout, dropout in the unit, other
activations) takes the eager path.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrcunet.models.fusion import deconv_of
from rrcunet.models.switch import Switch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "norm_act.cpp"
#: Environment switch: ``0`` turns the fused kernels off for the process.
ENV_SWITCH = "RRCUNET_FUSED_KERNELS"

_SWITCH = Switch(os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "no", "off"))
#: Whether units take the fused path when it applies (default True, unless ``RRCUNET_FUSED_KERNELS=0``);
#: ``set_enabled`` switches it for the process, ``disabled()`` for a block.
enabled, set_enabled, disabled = _SWITCH.enabled, _SWITCH.set_enabled, _SWITCH.disabled
_EXTENSION: Any = None
_FAILURE: str | None = None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> str:
    """The ``flags`` line of ``/proc/cpuinfo`` (read once: :func:`training_conv_path` asks on every
    convolution of a training step)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16 in its flags).

    The rule for the fast inference default (docs/inference.md): on such a CPU the network runs
    in bf16 autocast, channels-last, through the fused kernel; on any other CPU in float32, where
    bf16 would be emulated and slower.
    """
    flags = set(_cpu_flags().split(":", 1)[-1].split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


#: Compiler flags of the build. ``-mprefer-vector-width=512``: GCC's ``-march=native`` keeps loops at
#: 256-bit vectors on AVX-512 CPUs; the kernel's loops are memory-streaming and run about 1.6× faster
#: with 512-bit vectors (``python benchmarks/norm_act_speed.py``, issue 23). Per-lane arithmetic is the
#: same at either width, so the results are bit for bit the same. CPUs without AVX-512 ignore it.
CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp")


def build_name() -> str:
    """Extension name: a hash of the source and its path, the compiler flags, the torch version and
    the CPU flags (see module doc). The path: PyTorch rebuilds a cached extension whose recorded
    source path differs, so two installs of the package (two checkouts, two virtual environments)
    that shared one name rebuilt each other's kernel on every switch (about 30 s each time, seen
    with `rrcunet demo` alternating between two checkouts); with the path in the name each keeps
    its own build."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(str(SOURCE.resolve()).encode())
    digest.update(" ".join(CFLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(_cpu_flags().encode())
    return f"rrcunet_norm_act_{digest.hexdigest()[:16]}"


def build(name: str | None = None, cflags: tuple[str, ...] = CFLAGS) -> Any:
    """Compile :data:`SOURCE` with ``cflags`` (or load the cached build) as module ``name`` (default
    :func:`build_name`); raises what the compiler raises. ``benchmarks/norm_act_speed.py`` builds it
    with other flags to compare."""
    from torch.utils.cpp_extension import load  # lazy: imports setuptools machinery

    return load(name=name or build_name(), sources=[str(SOURCE)], extra_cflags=list(cflags),
                extra_ldflags=["-fopenmp"], verbose=False)


def extension() -> Any | None:
    """The compiled kernel module, building it on first call; None (with one warning) if it cannot be built."""
    global _EXTENSION, _FAILURE
    if _EXTENSION is not None or _FAILURE is not None:
        return _EXTENSION
    try:
        _EXTENSION = build()
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the eager path
        _FAILURE = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        warnings.warn(f"rrcunet: the fused GroupNorm+PReLU CPU kernel could not be built ({_FAILURE}); "
                      "running the eager path, which gives the same results more slowly. It needs a C++ "
                      "compiler (g++) and ninja; set RRCUNET_FUSED_KERNELS=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=2)
    return _EXTENSION


def failure() -> str | None:
    """Why the kernel could not be built (None if it was, or was not tried yet)."""
    return _FAILURE


def available() -> bool:
    """Whether the fused path can run in this process (enabled and built; builds on first call)."""
    return enabled() and extension() is not None


def _eager() -> bool:
    """Not inside TorchScript, tracing or ``torch.compile`` (where the Python-side paths do not apply)."""
    return not torch.jit.is_scripting() and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


def _dense_split(dy: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``dy[:, :channels]`` and ``dy[:, channels:]`` as dense channels-last tensors, not views.

    A concatenation's backward hands each input a channel slice of the gradient, and autograd adds
    it to the input's other gradients (a residual's, a skip connection's). With channels-last
    memory a slice has the wide tensor's voxel stride, and that add was several times slower than
    copying the slice and adding dense tensors (issue 23: the step is in docs/training.md, "The
    step at 2×")."""
    cl = torch.channels_last_3d
    return dy[:, :channels].contiguous(memory_format=cl), dy[:, channels:].contiguous(memory_format=cl)


class _DenseCat(torch.autograd.Function):
    """``torch.cat((a, b), dim=1)`` whose backward gives dense channels-last gradients (:func:`_dense_split`)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.channels, ctx.dtypes = a.shape[1], (a.dtype, b.dtype)
        return torch.cat((a, b), dim=1)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        da, db = _dense_split(dy, ctx.channels)
        return (da.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None,
                db.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None)


def cat_channels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.cat((a, b), dim=1)``; in a training pass on channels-last 5-D tensors with the kernels
    :func:`enabled`, one whose backward gives each input a dense gradient (:func:`_dense_split`).
    Same values."""
    cl = torch.channels_last_3d
    if (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad) and a.dim() == 5 and b.dim() == 5
            and a.device.type == "cpu" and a.is_contiguous(memory_format=cl) and b.is_contiguous(memory_format=cl)
            and _eager() and enabled()):
        return _DenseCat.apply(a, b)
    return torch.cat((a, b), dim=1)


class _NormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: torch.Tensor,
                residual: torch.Tensor | None, tail: torch.Tensor | None, groups: int, eps: float) -> torch.Tensor:
        y, mean, rstd = _EXTENSION.forward(x, weight.detach(), bias.detach(), slope.detach(), residual, groups, eps,
                                           tail)
        ctx.save_for_backward(x, weight, bias, slope, mean, rstd)
        ctx.groups = groups
        ctx.has_residual = residual is not None
        ctx.has_tail = tail is not None
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        x, weight, bias, slope, mean, rstd = ctx.saved_tensors
        dtail = None
        if ctx.has_tail:  # the concatenation's backward: split the gradient along channels
            dy, dtail = _dense_split(dy, x.shape[1])
        dx, dweight, dbias, dslope = _EXTENSION.backward(dy, x, mean, rstd, weight.detach(), bias.detach(),
                                                         slope.detach(), ctx.groups)
        dres = dy if ctx.has_residual else None
        return (dx, dweight.to(weight.dtype), dbias.to(bias.dtype), dslope.to(slope.dtype).reshape(slope.shape),
                dres, dtail, None, None)


def fusable(norm: nn.Module, act: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``act(norm(x))`` can take the fused path (see the module docstring)."""
    return (
        x.device.type == "cpu"
        and x.dim() == 5
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and isinstance(norm, nn.GroupNorm)
        and norm.affine
        and isinstance(act, nn.PReLU)
        and act.weight.numel() == 1
        and _eager()
        and available()
    )


def norm_act(norm: nn.Module, act: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None,
             tail: torch.Tensor | None = None) -> torch.Tensor:
    """``cat(act(norm(x)) + residual, tail)`` along channels (residual and tail optional), fused when
    :func:`fusable`, else eagerly.

    The fused path returns ``x``'s dtype (bf16 stays bf16 under autocast) and writes ``tail`` beside
    the unit's output in the same pass (the RRc block's join without a separate concatenation); the
    eager path returns what the modules and ``torch.cat`` return (float32 under autocast), as before.
    """
    if fusable(norm, act, x):
        if residual is not None:
            residual = residual.to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        if tail is not None:
            tail = tail.to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        return _NormAct.apply(x, norm.weight, norm.bias, act.weight, residual, tail, norm.num_groups,
                              float(norm.eps))
    y = act(norm(x))
    if residual is not None:
        y = y + residual
    return y if tail is None else torch.cat((y, tail), dim=1)


# --------------------------------------------------------------------------------------------
# convolutions in training: a faster backward where oneDNN's bf16 one is slow

#: Widest 3×3×3 convolution (input and output channels) that :func:`conv` gives the float32 weight
#: gradient. ``python benchmarks/conv_backward_speed.py`` (2026-12-06, Intel Xeon with AMX-BF16): at
#: 4 → 4 channels on 80×80×48, oneDNN's bf16 weight gradient took 10.3 ms against 4.4 ms in float32
#: (its forward 1.3 ms); at 8 → 8, 12.3 against 7.7 ms, but with the casts one convolution's forward
#: and backward was no faster (one-off prototype: 21.0 against 22.2 ms).
NARROW_MAX_CHANNELS = 4
#: Widest pointwise (1×1×1) convolution that :func:`conv` gives the matrix-product backward. One-off
#: timings of the backward alone (2026-12-06, Intel Xeon with AMX-BF16): oneDNN's bf16 one took
#: 19-21 ms for 24 → 4, 16 → 8 and 8 → 8 channels on 80×80×48 and 80×80×40 against 4-6 ms as matrix
#: products, and 4-5 ms on 96×96×24 and 128×128×24 (matrix products 4-7 ms), 0.4-0.9 ms on
#: 64×64×24 (matrix products 0.8-1.6 ms). So the products lose at most about a millisecond where
#: oneDNN is fast and save 15 where it is slow; no simple rule predicts which shapes are slow. Wider
#: than 24 channels was not measured.
POINTWISE_MAX_CHANNELS = 24
#: voxels per block of the pointwise weight gradient's float32 products (:func:`_pointwise_backward`)
POINTWISE_BLOCK = 32768


def _cpu_has_amx() -> bool:
    return "amx_bf16" in _cpu_flags().split()


class _TrainingConv(torch.autograd.Function):
    """``conv3d(x, weight.to(bf16), bias.to(bf16))`` (stride 1) for a channels-last bf16 ``x`` and the
    float32 master parameters, as CPU autocast computes it (oneDNN's forward), with our backward:

    * ``"narrow"`` (3×3×3 and the like, at most :data:`NARROW_MAX_CHANNELS` channels, no bias): the
      input gradient in bf16 as oneDNN's forward convolution of the output gradient with the kernel
      flipped (:func:`_narrow_backward`); the weight gradient in float32, not rounded to bf16
      (autocast's is, at every application of the convolution), from the compiled kernel's
      ``narrow_weight_grad`` (the bf16 products summed in float32 lanes, then in double: 2.02 ms
      against 4.45 ms for oneDNN's float32 kernel with its casts, 10.09 ms in bf16, on 4 → 4
      channels of 80×80×48, ``python benchmarks/conv_backward_speed.py``, 2026-12-07, Intel Xeon
      with AMX-BF16), or, without the kernel, from oneDNN's float32 kernel on float32 copies of
      ``x`` and the output gradient (bf16 values are float32 values);
    * ``"pointwise"`` (1×1×1, at most :data:`POINTWISE_MAX_CHANNELS` channels): matrix products over
      the voxels, which is what a pointwise convolution is (channels-last ``x`` and output gradient
      are ``(voxels, channels)`` matrices without a copy): the input gradient in bf16 as oneDNN's,
      the weight and bias gradients in float32, not rounded to bf16.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, ...], kind: str) -> torch.Tensor:
        w16 = weight.detach().to(torch.bfloat16)
        b16 = None if bias is None else bias.detach().to(torch.bfloat16)
        ctx.save_for_backward(x, w16)
        ctx.padding, ctx.kind = padding, kind
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return torch.nn.functional.conv3d(x, w16, b16, 1, padding)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        x, w16 = ctx.saved_tensors
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        has_bias = ctx.dtypes[1] is not None
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        args = ([1, 1, 1], list(ctx.padding), [1, 1, 1], False, [0, 0, 0], 1)

        backward = _narrow_backward if ctx.kind == "narrow" else _pointwise_backward
        dx, dweight, dbias = backward(dy, x, w16, args, mask)
        dweight = None if dweight is None else dweight.to(ctx.dtypes[0])
        dbias = None if dbias is None else dbias.to(ctx.dtypes[1])
        return dx, dweight, dbias, None, None


def _narrow_backward(dy: torch.Tensor, x: torch.Tensor, w16: torch.Tensor, args: tuple[Any, ...],
                     mask: list[bool]) -> tuple[Any, ...]:
    dx = None
    if mask[0]:
        # the input gradient of a stride-1 convolution is the forward convolution of dy with the
        # kernel flipped and its channel axes swapped, padded k - 1 - p: oneDNN's forward at 4
        # channels takes about 60 % of its backward (1.32 against 2.26 ms for 4 → 4 channels on
        # 80×80×48, benchmarks/conv_backward_speed.py). The same sums, in another order: equal up
        # to bf16 rounding (tested).
        padding = [k - 1 - p for k, p in zip(w16.shape[2:], args[1])]
        if min(padding) >= 0:
            dx = torch.nn.functional.conv3d(dy, w16.transpose(0, 1).flip(2, 3, 4), None, 1, padding)
        else:
            dx = torch.ops.aten.convolution_backward(dy, x, w16, None, *args, [True, False, False])[0]
    dweight = None
    if mask[1]:
        ext = extension()
        if ext is not None:  # the kernel's own weight gradient: float32 sums of the bf16 products
            dweight = ext.narrow_weight_grad(dy, x, list(w16.shape[2:]), list(args[1]))
        else:  # oneDNN's float32 kernel on float32 copies (bf16 values are float32 values)
            dweight = torch.ops.aten.convolution_backward(dy.float(), x.float(), w16.float(), None, *args,
                                                          [False, True, False])[1]
    return dx, dweight, None


def _pointwise_backward(dy: torch.Tensor, x: torch.Tensor, w16: torch.Tensor, args: tuple[Any, ...],
                        mask: list[bool]) -> tuple[Any, ...]:
    cout, cin = w16.shape[:2]
    d2 = dy.permute(0, 2, 3, 4, 1).reshape(-1, cout)  # views: channels-last is (voxels, channels)
    dx = ((d2 @ w16.view(cout, cin)).view(dy.shape[0], *dy.shape[2:], cin).permute(0, 4, 1, 2, 3)
          if mask[0] else None)
    # float32 products: exact sums of the bf16 values, and faster than a bf16 product with so long a
    # reduction (one-off timing: 0.8-3.8 ms against 3.7-4.2 ms for 307,200 voxels, 2-24 → 3-4 channels);
    # in blocks of voxels, so the float32 copies are small and reused instead of fresh pages (a
    # full float32 copy of a 24-channel 80×80×48 input is 29 MB of new memory every step)
    dweight = None
    if mask[1]:
        x2 = x.permute(0, 2, 3, 4, 1).reshape(-1, cin)
        dweight = torch.zeros(cout, cin, dtype=torch.float32)
        for start in range(0, x2.shape[0], POINTWISE_BLOCK):
            stop = start + POINTWISE_BLOCK
            dweight.addmm_(d2[start:stop].t().float(), x2[start:stop].float())
        dweight = dweight.view(w16.shape)
    dbias = d2.sum(0, dtype=torch.float32) if mask[2] else None
    return dx, dweight, dbias


def _training_pass(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """A CPU bf16-autocast training pass (gradients on, ``weight`` trained) on a channels-last 5-D
    ``x``, outside TorchScript, tracing and ``torch.compile``, with the kernels :func:`enabled`, on a
    CPU with AMX-BF16: where :func:`conv` and :func:`upsample` take their own backward."""
    return (
        torch.is_grad_enabled()
        and weight.requires_grad
        and x.device.type == "cpu" and x.dim() == 5
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and _eager()
        and enabled()
        and _cpu_has_amx()
    )


def training_conv_path(module: nn.Module, x: torch.Tensor) -> str | None:
    """Which backward :func:`conv` gives ``module(x)``: ``"pointwise"``, ``"narrow"`` (see
    :class:`_TrainingConv`) or None (``module(x)`` as it is).

    Both need a training pass (gradients on) under CPU bf16 autocast, a channels-last 5-D input,
    an ``nn.Conv3d`` with stride 1 and no dilation or groups, a CPU with AMX-BF16 (the only kind they
    were measured on) and the fused kernels :func:`enabled` (``RRCUNET_FUSED_KERNELS=0`` turns them
    off too). ``"pointwise"``: a 1×1×1 kernel without padding, at most
    :data:`POINTWISE_MAX_CHANNELS` channels in and out; ``"narrow"``: no bias, at most
    :data:`NARROW_MAX_CHANNELS` channels in and out.
    """
    if not (
        type(module) is nn.Conv3d
        and module.stride == (1, 1, 1) and module.dilation == (1, 1, 1) and module.groups == 1
        and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
        and _training_pass(module.weight, x)
    ):
        return None
    widest = max(module.in_channels, module.out_channels)
    if module.kernel_size == (1, 1, 1) and module.padding == (0, 0, 0) and widest <= POINTWISE_MAX_CHANNELS:
        return "pointwise"
    if module.bias is None and widest <= NARROW_MAX_CHANNELS:
        return "narrow"
    return None


def conv(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; in training, the convolutions of :func:`training_conv_path` with our backward
    (issue 23: oneDNN's bf16 backward of a 4-channel 3×3×3 convolution took 7-8× its forward, of
    some pointwise ones 3-5× the matrix products). The choice is fixed, not timed per shape, so a
    run repeats bit for bit on the CPU (docs/training.md, "Determinism"). Same outputs; input
    and weight gradients differ from autocast's only in rounding: the narrow input gradient is a
    forward convolution (the same sums in another order), a weight applied several times (a
    recurrent unit's) has its gradients summed in float32, where autocast sums them in bf16, and
    our backward does not round them to bf16 (tested). Inference, float32 and everything else run
    ``module(x)`` unchanged."""
    path = training_conv_path(module, x)
    if path is None:
        return module(x)
    with torch.autocast("cpu", enabled=False):
        return _TrainingConv.apply(x.to(torch.bfloat16), module.weight, module.bias,
                                   tuple(int(p) for p in module.padding), path)


def upsample(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; in a bf16 training pass (the conditions of :func:`training_conv_path`), the
    decoder's ×2 transposed convolution (MONAI's ``UpSample(mode="deconv")`` holding only a kernel-2,
    stride-2 ``ConvTranspose3d``: :func:`rrcunet.models.fusion.deconv_of`, the test the inference
    fusion uses) as what it is: one matrix product over the input
    voxels (``(voxels, C_in) @ (C_in, 8·C_out)``, bias added in the product) and a depth-to-space
    copy, whose backward is two products and the inverse copy. For the 16 → 16-channel one from
    40×40×24 to 80×80×48, forward and backward, 8.31 against 11.52 ms (``python benchmarks/conv_backward_speed.py``, 2026-12-07,
    Intel Xeon with AMX-BF16). The same sums in another order: outputs and gradients equal up to
    bf16 rounding (tested)."""
    deconv = deconv_of(module)
    if deconv is None or not _training_pass(deconv.weight, x):
        return module(x)
    n, c_in, d, h, w = x.shape
    c_out = deconv.weight.shape[1]
    weight = deconv.weight.permute(0, 2, 3, 4, 1).reshape(c_in, 8 * c_out)  # columns (a, b, c, c_out)
    x2 = x.permute(0, 2, 3, 4, 1).reshape(-1, c_in)  # channels-last: a view
    cols = (torch.addmm(deconv.bias.repeat(8), x2, weight) if deconv.bias is not None else x2 @ weight)
    out = cols.view(n, d, h, w, 2, 2, 2, c_out).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return out.reshape(n, 2 * d, 2 * h, 2 * w, c_out).permute(0, 4, 1, 2, 3)
