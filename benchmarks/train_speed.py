"""Training speed and memory: seconds per step and peak memory, RRc-UNet 3D beside MONAI's UNet.

One training step = forward (optionally under autocast) + the paper's Focal + Generalized Dice
loss + backward + an Adam step, batch size 1, on random inputs. Each configuration runs in its own
subprocess so that its peak RSS (``ru_maxrss``) is its own.

Tables printed:

1. **Speed** — for each configuration: seconds per step (median of ``--steps`` after
   ``--warmup``), and peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process
   peak RSS and the peak of live tensor bytes during one step (tracked exactly with a
   ``TorchDispatchMode`` that follows every tensor storage's allocation and release, plus the
   weights, buffers and Adam state that exist before the step). CPU rows use the small CPU
   recipe size; with a GPU (``--gpu``) the paper's configuration (base 32, 5 levels,
   2×256×256×48) with and without activation checkpointing, in float32 and bf16.
2. **Estimate** (``--estimate``, CPU) — GPU memory of the paper's configuration without a GPU:
   the peak live tensor bytes of one training step (and, as an upper reference, the process RSS
   rise) are measured at reduced in-plane sizes (the whole depth 48, in-plane 32×64 and 64×64,
   i.e. 1/32 and 1/16 of the volume), a line ``bytes = a + b × voxels`` is fitted (weights,
   gradients and Adam state are the constant ``a``; every activation of a fully convolutional
   network scales with the voxel count, ``b``) and evaluated at 256×256×48. CUDA adds its own
   workspace and allocator rounding, so a GPU needs somewhat more than the tensor estimate.

Examples::

    python benchmarks/train_speed.py                    # CPU speed table (small recipe size)
    python benchmarks/train_speed.py --estimate         # + memory estimate of the paper's config
    python benchmarks/train_speed.py --gpu --steps 10   # on a GPU: the paper's config
    python benchmarks/train_speed.py --cpu-amp bf16 --layouts channels-last --compile --steps 10  # + torch.compile
    # the paper's config on CPU (about 15 GB of RAM without checkpointing)
    python benchmarks/train_speed.py --cpu-base 32 --cpu-levels 5 --cpu-shape 256 256 48 --cpu-amp bf16 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import weakref
from typing import Any

PAPER_SHAPE = (256, 256, 48)


# ---------------------------------------------------------------------------------------------
# child: one configuration


class LiveTensorBytes:
    """Track the bytes of tensor storages created inside the context, and their peak.

    A ``TorchDispatchMode`` sees every op's outputs (forward, backward and optimiser ops, also
    the recomputation of checkpointed blocks); each new storage is counted until Python frees
    it (``weakref.finalize`` on the storage, whose Python object lives as long as the storage).
    """

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker._track(t)
                return out

        self.mode = _Mode()
        self.seen = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.current -= n

    def _track(self, t: Any) -> None:
        st = t.untyped_storage()
        if st in self.seen:
            return
        n = st.nbytes()
        self.seen[st] = True
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, n)

    def __enter__(self) -> "LiveTensorBytes":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _build(spec: dict[str, Any]) -> Any:
    if spec["model"] == "monai_unet":
        from monai.networks.nets import UNet

        base, levels = spec["base"], spec["levels"]
        channels = tuple(base * 2**i for i in range(levels))
        # MONAI's defaults otherwise (2 residual units per level, instance norm, PReLU).
        return UNet(spatial_dims=3, in_channels=2, out_channels=3, channels=channels, strides=(2,) * (levels - 1),
                    num_res_units=2, dropout=spec["dropout"])
    from rrcunet.models import build_model

    return build_model("rrcunet", base_filters=spec["base"], levels=spec["levels"],
                       checkpointing=spec["checkpointing"], dropout=spec["dropout"])


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from rrcunet.losses import build_loss

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model = _build(spec).to(device)
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss_fn = build_loss()
    shape = tuple(spec["shape"])
    x = torch.randn(1, 2, *shape, device=device)
    if spec.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 3, (1, 1, *shape), device=device)
    amp = spec["amp"]
    rss_base = _current_rss()
    forward = torch.compile(model) if spec.get("compile") else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if amp == "none":
            logits = forward(x)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
                logits = forward(x)
        loss_fn(logits.float(), y).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_warm = time.perf_counter()
    for _ in range(spec["warmup"]):
        step()
    sync()
    warmup_s = time.perf_counter() - t_warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    result: dict[str, Any] = {"s_per_step": statistics.median(times) if times else None,
                              "params": sum(p.numel() for p in model.parameters()), "warmup_s": warmup_s}
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    else:
        result["rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # Cross-check of the tracker: how far the process RSS rose above its level before the
        # first step (weights and inputs already allocated, so compare with tensor_peak - static).
        result["rss_rise_bytes"] = result["rss_peak_bytes"] - rss_base if rss_base else None
        if spec.get("track", True):
            static = sum(t.untyped_storage().nbytes() for t in list(model.parameters()) + list(model.buffers()))
            static += sum(v.untyped_storage().nbytes() for s in opt.state.values() for v in s.values()
                          if isinstance(v, torch.Tensor))
            opt.zero_grad(set_to_none=True)  # grads are re-created inside the tracked step
            with LiveTensorBytes() as tracker:
                step()
            result["tensor_peak_bytes"] = static + tracker.peak
            result["tensor_step_bytes"] = tracker.peak
    return result


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# parent


def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _row(spec: dict[str, Any], res: dict[str, Any]) -> str:
    name = "RRc-UNet 3D" if spec["model"] == "rrcunet" else "MONAI UNet"
    if spec.get("compile"):
        name += f" (torch.compile; warm-up {res.get('warmup_s', 0):.0f} s)"
    shape = "×".join(str(s) for s in spec["shape"])
    layout = "channels-last" if spec.get("channels_last") else "contiguous"
    ckpt = "yes" if spec["checkpointing"] else "no"
    head = f"| {name} | {spec['base']} | 2×{shape} | {layout} | {ckpt} | {spec['amp']} |"
    if "error" in res:
        return f"{head} error: {res['error']} | | |"
    mem = (f"{_gb(res['cuda_peak_bytes'])} (cuda max allocated)" if "cuda_peak_bytes" in res
           else f"{_gb(res.get('tensor_peak_bytes'))} tensors / {_gb(res.get('rss_peak_bytes'))} RSS")
    return f"{head} {res['s_per_step']:.3f} | {mem} | {res['params'] / 1e6:.2f} M |"


def speed_table(args: argparse.Namespace) -> None:
    layouts = [layout == "channels-last" for layout in args.layouts]
    if args.gpu:  # the paper's configuration
        device, base, levels, shape, amps, dropout = "cuda", 32, 5, PAPER_SHAPE, ("none", "bf16"), 0.1
    else:
        device, base, levels, amps = "cpu", args.cpu_base, args.cpu_levels, (args.cpu_amp,)
        shape, dropout = tuple(args.cpu_shape), args.cpu_dropout
    specs = []
    for amp in amps:
        for cl in layouts:
            common = dict(base=base, levels=levels, shape=shape, amp=amp, channels_last=cl, dropout=dropout)
            specs += [dict(model="rrcunet", checkpointing=ckpt, **common) for ckpt in (False, True)]
            if args.compile:
                specs.append(dict(model="rrcunet", checkpointing=False, compile=True, track=False, **common))
            specs.append(dict(model="monai_unet", checkpointing=False, **common))
    print(f"## Training step speed ({device}, batch 1, {args.threads} threads, median of {args.steps} steps "
          f"after {args.warmup} warm-up)\n")
    print("| model | base | input | layout | checkpointing | amp | s/step | peak memory GiB | params |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        spec.update(device=device, steps=args.steps, warmup=args.warmup, threads=args.threads)
        print(_row(spec, _spawn(spec, args.timeout)), flush=True)
    print()


def estimate_table(args: argparse.Namespace) -> None:
    import numpy as np

    sizes = [(32, 64, 48), (64, 64, 48)]
    full = int(np.prod(PAPER_SHAPE))
    print("## Estimated memory of one training step at the paper's size (base 32, 5 levels, "
          f"2×{'×'.join(map(str, PAPER_SHAPE))}, batch 1, float32, Adam)\n")
    print("One step measured on CPU at reduced in-plane sizes; a line bytes = a + b·voxels fitted and "
          "evaluated at the full size, (1) on the peak of live tensor bytes (weights, gradients, Adam "
          "state, activations and temporaries: what a GPU's max_memory_allocated counts) and (2) on the "
          "process RSS rise during the step plus the weights (adds allocator caching and oneDNN scratch "
          "space, an upper reference).\n")
    head = " | ".join("2×" + "×".join(map(str, s)) for s in sizes)
    print(f"| checkpointing | measure | {head} | a GiB | b bytes/voxel | estimate at 2×256×256×48 GiB |")
    print("|---|---|" + "---|" * len(sizes) + "---|---|---|")
    for ckpt in (False, True):
        tensors, rss = [], []
        for shape in sizes:
            spec = dict(model="rrcunet", base=32, levels=5, shape=shape, checkpointing=ckpt, amp="none",
                        dropout=0.1, device="cpu", steps=0, warmup=1, threads=args.threads, track=True)
            res = _spawn(spec, args.timeout)
            if "error" in res:
                print(f"| {'yes' if ckpt else 'no'} | error at {shape}: {res['error']} |")
                return
            vox = int(np.prod(shape))
            tensors.append((vox, res["tensor_peak_bytes"]))
            if res.get("rss_rise_bytes") is not None:
                rss.append((vox, res["rss_rise_bytes"] + 4 * res["params"]))
        for label, points in (("tensors", tensors), ("RSS", rss)):
            if len(points) < 2:
                continue
            vox = np.array([p[0] for p in points], dtype=float)
            byt = np.array([p[1] for p in points], dtype=float)
            b, a = np.polyfit(vox, byt, 1)
            print(f"| {'yes' if ckpt else 'no'} | {label} | " + " | ".join(_gb(p[1]) for p in points)
                  + f" | {_gb(a)} | {b:.0f} | **{_gb(a + b * full)}** |", flush=True)
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--gpu", action="store_true", help="benchmark the paper's configuration on CUDA")
    parser.add_argument("--estimate", action="store_true", help="estimate the paper config's memory on CPU")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-base", type=int, default=8, help="base filters of the CPU rows (default 8)")
    parser.add_argument("--cpu-shape", type=int, nargs=3, default=(80, 80, 48),
                        help="CPU input size (default: the cpu_tumour recipe's)")
    parser.add_argument("--cpu-levels", type=int, default=4, help="levels of the CPU rows (default 4; the paper: 5)")
    parser.add_argument("--cpu-amp", choices=("none", "bf16"), default="none", help="autocast of the CPU rows")
    parser.add_argument("--cpu-dropout", type=float, default=0.0,
                        help="dropout of the CPU rows (default 0: the cpu_tumour recipe's; the GPU rows use the "
                             "paper's 0.1; before 2026-12-06 the CPU rows used 0.1)")
    parser.add_argument("--layouts", nargs="+", choices=("contiguous", "channels-last"),
                        default=["contiguous", "channels-last"], help="memory layouts of the speed rows")
    parser.add_argument("--compile", action="store_true",
                        help="add RRc-UNet rows run through torch.compile (its compile time is in the warm-up; "
                             "shorter when torch's on-disk compile cache already holds the graphs)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if not args.no_speed:
        speed_table(args)
    if args.estimate:
        estimate_table(args)


if __name__ == "__main__":
    main()
