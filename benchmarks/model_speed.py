"""Inference speed, FLOPs and memory of RRc-UNet 3D, the §4.5 ablation variants and MONAI baselines.

Prints one row per (variant, dtype, memory layout):

* ``params``  trainable parameters;
* ``GFLOP``   per forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode`` on a
  ``meta``-device copy (convolutions and matrix products only; norms/activations are not counted);
* ``fwd s``   (``step s`` with ``--train``: forward + backward in train mode) median wall time of ``--repeats`` forward passes under ``torch.inference_mode``
  (after one untimed warm-up pass); ``CPU s`` the median process CPU time of the same passes
  (all threads): on an unloaded machine about ``threads × fwd s``; much less means the run was
  starved by other processes and its wall time is inflated;
* ``GFLOP/s`` and ``eff.``: achieved FLOP/s, and that divided by the **peak reference**: the best
  FLOP/s of the network's own 3×3×3 convolutions run alone — one C → C Conv3d per level, at that
  level's width (base·2^i channels) and size (the input halved i times), with the same dtype, layout
  and threads, each repeated until it has run for at least 0.2 s. So ``eff.`` cannot exceed 1 by
  a timing accident, and it says how close the network gets to what its own convolutions reach;
* ``conv s`` and ``×conv`` (``--profile``): the time :mod:`torch.profiler` attributes to the
  convolutions in a profiled pass (:func:`conv_self_seconds`: the transposed convolutions of the
  decoder count too; rows before 2026-12-06 night left them out), and the pass's total time divided by it (1 = nothing but
  convolutions; issue 23's goal is ≤ 2). ``--repeats`` passes are profiled one by one and the row
  shows the pass with the median ratio: on a shared machine a single pass's ratio ranged from 2.4
  to 3.1 over five runs of the same command;
* ``peak MiB`` / ``Δ MiB``: CPU: the process's ``ru_maxrss`` high-water mark at the end, and its
  growth during the forward passes (each row runs in a fresh subprocess, so rows do not share a
  high-water mark); CUDA: ``torch.cuda.max_memory_allocated``.

``heap`` (``--heaps``): the glibc malloc settings of the row. ``network-pass`` (the default) runs
inference as ``rrcunet predict`` does: the CLI's settings and :func:`rrcunet.heap.network_pass`
around each pass, so activations reuse freed heap memory instead of fresh, zero-filled pages;
and without transparent huge pages during the pass; ``network-pass-thp`` the same with huge pages
(``network_pass`` before 2026-12-06, second session); ``cli`` the CLI's settings only; ``glibc``
glibc's defaults (every row before issue 23's heap change). Training rows (``--train``) never use
``network_pass`` (the trainer does not).

``--first-pass`` times the first pass of each row's fresh process instead (no warm-up, one pass):
what ``rrcunet predict`` pays for one CT. oneDNN's primitive creation and every first-touched page
are in it.

``rrcunet-eager`` is RRc-UNet 3D with the fused GroupNorm → PReLU CPU kernel off
(``rrcunet.models.kernels``; it runs for bf16 channels-last tensors), so its gain is measured in
the same run. ``rrcunet-unfused`` is RRc-UNet 3D run as written, without the decoder's inference-time fusion of
upsampling and entry convolution (``rrcunet.models.fusion``), so the gain of the fusion is measured
in the same run (training steps never fuse).

dtypes: ``fp32``, and ``bf16`` = ``torch.autocast`` to bfloat16 (weights stay fp32). Layouts:
``contiguous`` (NCDHW) and ``cl3d`` = ``torch.channels_last_3d`` (NDHWC) for model and input.

Subprocesses get ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's CPU allocator then uses transparent huge
pages), as the ``rrcunet`` CLI sets it, unless the caller's environment sets the variable (then its
value, e.g. ``THP_MEM_ALLOC_ENABLE=0 python benchmarks/...``; the header prints it), and
``OMP_NUM_THREADS=--threads``.

Examples::

    # the reduced configuration used for docs/architecture.md (about 3 minutes on 2 cores)
    python benchmarks/model_speed.py --shape 1 2 128 128 32 --base 16 --repeats 2
    # the paper's input and width, RRc-UNet only, fp32
    python benchmarks/model_speed.py --variants rrcunet --dtypes fp32 --layouts contiguous
    # memory of a training step with and without activation checkpointing
    python benchmarks/model_speed.py --train --variants rrcunet --dtypes fp32 --layouts contiguous \
        --shape 1 2 128 128 32 --base 16
    python benchmarks/model_speed.py --train --checkpointing ...
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("rrcunet", "rrcunet-eager", "rrcunet-unfused", "cgpd", "residual", "recurrent", "unet", "monai-unet", "monai-dynunet")
DTYPES = ("fp32", "bf16")
LAYOUTS = ("contiguous", "cl3d")
HEAPS = ("network-pass", "network-pass-thp", "cli", "glibc")
REF_MIN_SECONDS = 0.2
#: Profiler events that are convolution work (self time), for ``--profile``.
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_overrideable", "aten::slow_conv3d_forward",
            "aten::_slow_conv2d_forward", "aten::cudnn_convolution", "aten::mkldnn_convolution_backward",
            "aten::convolution_backward", "aten::slow_conv_transpose3d", "aten::mkldnn_convolution_transpose")


def conv_self_seconds(events) -> float:
    """Seconds of convolution work in a profile: the self time of :data:`CONV_OPS`, plus that of each
    ``aten::_convolution`` under a transposed convolution (``aten::conv_transpose*``). The decoder's
    ×2 upsampling is a ``ConvTranspose3d``; on the CPU its oneDNN work has no event of its own and
    is recorded as ``aten::_convolution``'s self time (the regular convolutions' ``_convolution``
    self time is dispatch overhead and stays outside)."""
    total = 0.0
    for e in events:
        if e.name in CONV_OPS:
            total += e.self_cpu_time_total
        elif e.name == "aten::_convolution":
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith("aten::conv_transpose"):
                parent = parent.cpu_parent
            if parent is not None:
                total += e.self_cpu_time_total
    return total / 1e6


def reference_convs(shape: list[int], base: int, levels: int) -> list[tuple[int, tuple[int, int, int]]]:
    """(channels, spatial size) of the network's own C → C 3×3×3 convolution at each level: its width at
    that level's size, but never smaller than 32×32×16 (or the input), so every reference is large."""
    floor = [min(s, f) for s, f in zip(shape[2:], (32, 32, 16))]
    return [(base * 2**i, tuple(max(f, s // 2**i) for s, f in zip(shape[2:], floor))) for i in range(levels)]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), printed with every result: speeds compare only within a run."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------------------------
# worker side (runs in a subprocess, prints one JSON line)
# --------------------------------------------------------------------------------------------
def _build(variant: str, in_channels: int, base: int, levels: int):
    """The network for ``variant``; the MONAI baselines get our depth, filters, GN and PReLU."""
    filters = [base * 2**i for i in range(levels)]
    if variant == "monai-unet":
        from monai.networks.nets import UNet

        # MONAI's UNet down-samples with a strided convolution at the start of every level, the
        # first included, and normalises its 3-channel last up-convolution: GroupNorm(8) cannot,
        # so it keeps its default instance norm.
        return UNet(
            spatial_dims=3, in_channels=in_channels, out_channels=3, channels=filters,
            strides=[2] * (levels - 1), num_res_units=2, act="PRELU", norm="INSTANCE",
        )
    if variant == "monai-dynunet":
        from monai.networks.nets import DynUNet

        return DynUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=3, kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1), upsample_kernel_size=[2] * (levels - 1), filters=filters,
            norm_name=("group", {"num_groups": 8}), act_name="prelu",
        )
    from rrcunet.models import build_model

    return build_model(variant.removesuffix("-unfused").removesuffix("-eager"), in_channels=in_channels,
                       base_filters=base, levels=levels)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timed(fn, repeats: int, device: str) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of ``repeats`` calls."""
    import torch

    wall, cpu = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def worker(job: dict) -> dict:
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(job["threads"])
    device = job["device"]
    dtype, layout = job["dtype"], job["layout"]
    fmt = torch.channels_last_3d if layout == "cl3d" else torch.contiguous_format

    if job["variant"] == "ref-conv":
        return reference_worker(job, fmt)
    else:
        shape = tuple(job["shape"])
        make = lambda: _build(job["variant"], shape[1], job["base"], job["levels"])  # noqa: E731

    train = job.get("train", False)
    if job["variant"].endswith("-unfused"):
        from rrcunet.models import fusion

        fusion.set_enabled(False)  # the network as written, for the whole subprocess
    if job["variant"].endswith("-eager"):
        from rrcunet.models import kernels

        kernels.set_enabled(False)  # GroupNorm and PReLU as separate eager modules
    with torch.device("meta"):
        meta_model = make().train(train)
    # the FLOPs of the pass that is timed: inference runs without autograd (fused decoder)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = meta_model(torch.empty(shape, device="meta"))
        if train:  # useful work of a training step: forward + backward, no recomputation
            out.float().square().mean().backward()
    flops = counter.get_total_flops()
    del meta_model, out

    model = make().train(train).to(device=device, memory_format=fmt)
    if train and job.get("checkpointing"):
        if not hasattr(model, "checkpointing"):
            raise SystemExit(f"{job['variant']} has no activation-checkpointing option")
        model.checkpointing = True
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _maxrss_mib()

    # the allocator as `rrcunet predict` runs the network (rrcunet.heap), or as this benchmark did before
    heap_mode = job.get("heap", "glibc")
    pass_heap = contextlib.nullcontext
    if heap_mode in ("cli", "network-pass", "network-pass-thp"):
        from rrcunet import heap

        heap.configure()
        if heap_mode.startswith("network-pass"):  # inference passes only: the trainer does not use it
            pass_heap = functools.partial(heap.network_pass, huge_pages=heap_mode == "network-pass-thp")

    def run() -> None:
        if train:
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = model(x).float().square().mean()  # dense gradients, like a real loss
            loss.backward()
            return
        with torch.inference_mode(), autocast, pass_heap():
            model(x)

    if job.get("first_pass"):
        times, cpu_times = _timed(run, 1, device)
    else:
        run()  # warm-up: oneDNN primitive creation, allocator growth
        times, cpu_times = _timed(run, job["repeats"], device)
    conv_seconds = total_seconds = None
    if job.get("profile"):
        from torch.profiler import ProfilerActivity, profile

        passes = []  # (conv, total) of each profiled pass; the row reports the pass with the median ratio
        for _ in range(job["repeats"]):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            events = prof.key_averages()
            passes.append((conv_self_seconds(prof.events()),
                           sum(e.self_cpu_time_total for e in events) / 1e6))
        conv_seconds, total_seconds = sorted(passes, key=lambda p: p[1] / p[0])[len(passes) // 2]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        delta = peak
    else:
        peak = _maxrss_mib()
        delta = peak - rss_before
    return {"params": params, "flops": flops, "seconds": statistics.median(times), "times": times,
            "cpu_seconds": statistics.median(cpu_times), "peak_mib": peak, "delta_mib": delta,
            "conv_seconds": conv_seconds, "profiled_seconds": total_seconds}


def reference_worker(job: dict, fmt) -> dict:
    """The best FLOP/s of the network's own per-level 3×3×3 convolutions, each run ≥ REF_MIN_SECONDS."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    best = {"flops_per_s": 0.0}
    for channels, spatial in reference_convs(job["shape"], job["base"], job["levels"]):
        conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False).eval().to(memory_format=fmt)
        x = torch.randn(1, channels, *spatial).contiguous(memory_format=fmt)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            conv(x)
        flops = counter.get_total_flops()
        autocast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if job["dtype"] == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            conv(x)  # warm-up
            runs, t0 = 0, time.perf_counter()
            while runs == 0 or time.perf_counter() - t0 < REF_MIN_SECONDS:
                conv(x)
                runs += 1
            seconds = (time.perf_counter() - t0) / runs
        if flops / seconds > best["flops_per_s"]:
            best = {"flops_per_s": flops / seconds, "channels": channels, "spatial": list(spatial),
                    "seconds": seconds, "runs": runs}
    return best


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------
def thp_setting() -> str:
    """``THP_MEM_ALLOC_ENABLE`` of the worker processes: the caller's value, else ``1`` (the CLI's default)."""
    return os.environ.get("THP_MEM_ALLOC_ENABLE", "1")


def run_worker(script: str | Path, job: dict, timeout: float, pythonpath: list[str]) -> dict:
    """Run ``script --worker JOB`` in a fresh process (``THP_MEM_ALLOC_ENABLE``: :func:`thp_setting`,
    ``OMP_NUM_THREADS=job["threads"]``) and return the last JSON line it prints, or ``{"error": ...}``."""
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE=thp_setting(), OMP_NUM_THREADS=str(job["threads"]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*pythonpath, env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(script), "--worker", json.dumps(job)],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def run_job(job: dict, timeout: float) -> dict:
    return run_worker(__file__, job, timeout, [str(Path(__file__).resolve().parents[1] / "src")])


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=5, default=[1, 2, 256, 256, 48], metavar=("B", "C", "X", "Y", "Z"))
    parser.add_argument("--base", type=int, default=32, help="level-0 filters (default 32)")
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per row (median reported)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {','.join(VARIANTS)}")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--train", action="store_true",
                        help="time a training step (forward + backward, train mode) instead of inference")
    parser.add_argument("--checkpointing", action="store_true",
                        help="with --train: turn on activation checkpointing in our models")
    parser.add_argument("--profile", action="store_true",
                        help="also profile --repeats passes: time in convolutions and the total as a multiple of it "
                             "(the median pass)")
    parser.add_argument("--first-pass", action="store_true",
                        help="time the first pass of each row's fresh process (no warm-up), as `rrcunet predict` "
                             "runs one CT")
    parser.add_argument("--heaps", default="network-pass",
                        help="comma list of glibc malloc settings, one row each: network-pass (what `rrcunet "
                             "predict` does: the CLI's settings plus rrcunet.heap.network_pass around each "
                             "inference pass, without huge pages), network-pass-thp (the same with huge pages), "
                             "cli (the CLI's settings only), glibc (glibc's defaults: this "
                             "benchmark before issue 23's heap change)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row before giving up")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    dtypes, layouts = args.dtypes.split(","), args.layouts.split(",")
    heaps = [h for h in args.heaps.split(",") if h]
    if not heaps or any(h not in HEAPS for h in heaps):
        parser.error(f"--heaps: choose from {list(HEAPS)}, not {args.heaps!r}")
    common = {"threads": args.threads, "device": args.device, "repeats": args.repeats}
    if args.checkpointing and not args.train:
        parser.error("--checkpointing only applies with --train")
    if args.first_pass and (args.profile or args.train):
        parser.error("--first-pass times one inference pass; it does not combine with --profile or --train")

    print(f"# CPU: {cpu_model()}")
    print(f"# input {tuple(args.shape)}, base {args.base}, {args.levels} levels, {args.threads} thread(s), "
          f"device {args.device}, " + ("the first pass of each process" if args.first_pass else f"median of {args.repeats}")
          + f"; THP_MEM_ALLOC_ENABLE={thp_setting()}; "
          f"load average at start {os.getloadavg()[0]:.1f}; torch {_torch_version()}"
          + ("; TRAINING STEP (fwd+bwd)" + (" with activation checkpointing" if args.checkpointing else "")
             + ": GFLOP and GFLOP/s count forward + backward" if args.train else ""))
    ref: dict[tuple[str, str], float] = {}
    for dtype in dtypes:
        for layout in layouts:
            r = run_job({**common, "variant": "ref-conv", "dtype": dtype, "layout": layout, "shape": args.shape,
                         "base": args.base, "levels": args.levels}, args.timeout)
            ref[(dtype, layout)] = r.get("flops_per_s", float("nan"))
            print(f"# peak reference {dtype}/{layout}: {ref[(dtype, layout)] / 1e9:.1f} GFLOP/s"
                  + (f" ({r['error']})" if "error" in r else
                     f", the best of the per-level 3x3x3 C->C convolutions: {r['channels']} channels on "
                     f"{tuple(r['spatial'])}, {r['seconds'] * 1e3:.1f} ms x {r['runs']} runs"))

    header = ["variant", "dtype", "layout", "heap", "params", "GFLOP", "step s" if args.train else "fwd s", "CPU s", "GFLOP/s",
              "eff.", "peak MiB", "Δ MiB"] + (["conv s", "×conv"] if args.profile else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|")
    for variant, dtype, layout, heap_mode in itertools.product(variants, dtypes, layouts, heaps):
        job = {**common, "variant": variant, "dtype": dtype, "layout": layout, "shape": args.shape,
               "base": args.base, "levels": args.levels, "train": args.train,
               "checkpointing": args.checkpointing, "profile": args.profile, "heap": heap_mode,
               "first_pass": args.first_pass}
        r = run_job(job, args.timeout)
        if "error" in r:
            print(f"| {variant} | {dtype} | {layout} | {heap_mode} | error: {r['error']} |" + " |" * 7,
                  flush=True)
            continue
        rate = r["flops"] / r["seconds"]
        cells = [variant, dtype, layout, heap_mode, f"{r['params'] / 1e6:.2f} M", f"{r['flops'] / 1e9:.1f}",
                 f"{r['seconds']:.3f}", f"{r['cpu_seconds']:.2f}", f"{rate / 1e9:.1f}", f"{rate / ref[(dtype, layout)]:.2f}",
                 f"{r['peak_mib']:.0f}", f"{r['delta_mib']:.0f}"]
        if args.profile:
            cells += [f"{r['conv_seconds']:.3f}", f"{r['profiled_seconds'] / r['conv_seconds']:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
