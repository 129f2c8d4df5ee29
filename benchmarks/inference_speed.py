"""Benchmark: end-to-end prediction time per CT (read → write), model-only time, peak memory, and
how the time grows with the number of slices.

Every row runs in a fresh subprocess (``THP_MEM_ALLOC_ENABLE=1`` unless the caller's environment sets
it, ``OMP_NUM_THREADS=--threads``; the glibc malloc variables of the caller pass through too),
so its peak memory is that process's own ``ru_maxrss``. Sections:

1. **model only**: one forward pass on ``(1, 2, 256, 256, 48)`` — the paper's input — with 32 base
   filters and 5 levels, for RRc-UNet 3D (and ``rrcunet-unfused``: without the decoder's
   inference-time fusion, rrcunet.models.fusion) and, on the same input in the same run, MONAI's ``UNet``
   and ``DynUNet`` (built as in benchmarks/model_speed.py: our filters, GroupNorm/PReLU); fp32 and
   bf16 autocast, contiguous and ``channels_last_3d`` (RRc-UNet); and RRc-UNet exported to ONNX
   and run with ONNX Runtime (CPU provider, ``--threads`` intra-op threads). Median of
   ``--repeats`` passes after one warm-up pass; ``CPU s`` is the process CPU time of one pass (all
   threads): on an unloaded machine ≈ threads × wall; much less means the row was starved.
2. **end to end**: ``rrcunet.inference.predict_paths`` (with the CLI's malloc settings,
   ``rrcunet.heap.MALLOPT``; ``RRCUNET_MALLOPT=0`` for glibc's) on one CT with a randomly initialised
   RRc-UNet 3D (base 32, 256×256×48) model file: read → lung region (classical) → preprocess →
   network → invert → postprocess/measure → write (NIfTI, plus DICOM SEG for DICOM input) →
   JSON. Per-stage seconds come from the prediction JSON (``runtime_s``); ``total`` is read → write of
   the case; ``wall`` is the whole ``predict_paths`` call (finding the case — for DICOM, reading every
   slice's header, which the read then takes from the header cache — the case, and its JSON): the
   figure a user waits for after the model is loaded. ``gc`` is the part of ``wall`` spent in
   Python's cyclic garbage collector (``gc.callbacks``; rrcunet.heap.fewer_collections); ``--json``
   also records its collections, the objects they found and the objects tracked at the end. ``load``
   is ``Predictor.from_file`` (not in ``wall``).
   The CT is NSCLC-Radiomics LUNG1-001 (512×512×134 DICOM, ../shared/realdata) when present —
   once as its DICOM folder, once converted to NIfTI — else the analytic chest of
   tests/lungmask/chest.py on 512×512×134.
3. **slices**: the same CT resampled along z to 512×512×N (N = ``--slices``; same physical extent,
   thinner slices), NIfTI in → NIfTI out, to check that the cost grows no faster than linearly
   with N (the network input is always 256×256×48, so its time is constant).

``--model-files A B …`` runs the end-to-end section with those model files instead (e.g. the bundled
model against the previous one, in the same run: issue 17's ≤ 15 s / ≤ 3 GB check); a file's name
labels its rows.

``--profile`` adds a :mod:`torch.profiler` table of one end-to-end run (stages are labelled
``rrcunet::<stage>``).

Goals on 2 CPU cores: ≤ 15 s end to end for a 512×512×~130 CT, ≤ 3 GB peak memory, linear growth.

Run from the repository root (about 10 minutes on 2 loaded cores)::

    python benchmarks/inference_speed.py --threads 2
    python benchmarks/inference_speed.py --skip-model --slices 60 150 300 600 --profile
    python benchmarks/inference_speed.py --skip-model --slices --dtypes fp32 \
        --model-files old_tumour.safetensors src/rrcunet/weights/demo_tumour.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))
LUNG1 = REALDATA / "nsclc-radiomics-lung1-001" / "image"
SHAPE = (1, 2, 256, 256, 48)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------------------------
# worker side (a subprocess; prints one JSON line)
# --------------------------------------------------------------------------------------------
def _model_speed():
    """The sibling ``benchmarks/model_speed.py`` module (its baselines and subprocess runner)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import model_speed

    return model_speed


def _build(variant: str, base: int, levels: int):
    return _model_speed()._build(variant, SHAPE[1], base, levels)  # the same MONAI baselines


def _model_worker(job: dict) -> dict:
    import contextlib

    import torch

    torch.set_num_threads(job["threads"])
    fmt = torch.channels_last_3d if job["layout"] == "cl3d" else torch.contiguous_format
    if job["variant"].endswith("-unfused"):
        from rrcunet.models import fusion

        fusion.set_enabled(False)  # the network as written, for the whole subprocess
    model = _build(job["variant"], job["base"], job["levels"]).eval().to(memory_format=fmt)
    x = torch.randn(SHAPE).contiguous(memory_format=fmt)
    rss0 = _maxrss_mib()
    if job["runtime"] == "onnxruntime":
        import onnxruntime as ort

        export_s = job.get("export_s")
        del model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = job["threads"]
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(job["onnx"], opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}

        def run() -> None:
            session.run(None, feed)
    else:
        export_s = None
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if job["dtype"] == "bf16"
                    else contextlib.nullcontext())

        def run() -> None:
            with torch.inference_mode(), autocast:
                model(x)

    run()  # warm-up: oneDNN primitives, allocator growth
    wall, cpu = [], []
    for _ in range(job["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"seconds": statistics.median(wall), "cpu_seconds": statistics.median(cpu), "peak_mib": _maxrss_mib(),
            "before_mib": rss0, "export_s": export_s}


def _export_worker(job: dict) -> dict:
    """Export the model to ONNX (own process, so the runtime row's peak memory is ONNX Runtime's alone)."""
    import torch

    from rrcunet.inference.export import export_onnx

    torch.set_num_threads(job["threads"])
    model = _build(job["variant"], job["base"], job["levels"]).eval()
    t0 = time.perf_counter()
    export_onnx(model, torch.randn(SHAPE), job["onnx"])
    return {"export_s": time.perf_counter() - t0, "peak_mib": _maxrss_mib()}


def _e2e_worker(job: dict) -> dict:
    import rrcunet.cli.main  # noqa: F401  (importing it applies the CLI's malloc settings, as `rrcunet predict` has them)
    import torch

    torch.set_num_threads(job["threads"])
    from rrcunet.inference import InferenceConfig, Predictor

    if job["dtype"] == "default":  # the predict default: the fast-path rule decides (docs/inference.md)
        config = InferenceConfig(device="cpu")
    elif job["dtype"] == "fp32-default":  # the predict default where the CPU has no native bf16
        config = InferenceConfig(device="cpu", bf16=False)
    elif job["dtype"] == "bf16-eager":  # bf16 channels-last with the fused kernel off
        from rrcunet.models import kernels

        kernels.set_enabled(False)
        config = InferenceConfig(device="cpu", bf16=True, channels_last=True)
    else:
        config = InferenceConfig(device="cpu", bf16=job["dtype"] == "bf16", channels_last=bool(job.get("channels_last")))
    t0 = time.perf_counter()
    predictor = Predictor.from_file(job["model"], config=config)
    load_s = time.perf_counter() - t0
    profiler = None
    if job.get("profile"):
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        profiler.__enter__()
    import gc

    collector = {"s": 0.0, "start": 0.0, "runs": 0, "found": 0}

    def timed(phase: str, info: dict) -> None:  # Python's cyclic collector, while predict runs
        if phase == "start":
            collector["start"] = time.perf_counter()
        else:
            collector["s"] += time.perf_counter() - collector["start"]
            collector["runs"] += 1
            collector["found"] += info["collected"]

    gc.callbacks.append(timed)
    t0, c0 = time.perf_counter(), time.process_time()
    report = predictor.predict_paths([job["input"]], job["out"], overwrite=True, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.callbacks.remove(timed)
    table = None
    if profiler is not None:
        profiler.__exit__(None, None, None)
        table = profiler.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=48)
    outcome = report.outcomes[0]
    if outcome.status != "done":
        return {"error": outcome.message}
    doc = json.loads((Path(job["out"]) / f"{outcome.case_id}.json").read_text())
    return {"runtime": doc["runtime_s"], "wall": wall, "cpu_seconds": cpu, "load_s": load_s, "gc_s": collector["s"],
            "gc_runs": collector["runs"], "gc_found": collector["found"], "gc_tracked": len(gc.get_objects()),
            "peak_mib": _maxrss_mib(), "shape": doc["input"]["geometry"]["shape"], "profile": table}


def worker(job: dict) -> dict:
    return {"model": _model_worker, "export": _export_worker, "e2e": _e2e_worker}[job["kind"]](job)


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------
def run_job(job: dict, timeout: float) -> dict:
    # the same subprocess runner as the model benchmark
    return _model_speed().run_worker(__file__, job, timeout, [str(REPO / "src"), str(REPO)])


def _source_ct():
    """LUNG1-001 (DICOM folder path and Volume) when present, else the analytic chest on 512×512×134."""
    from rrcunet.io import read_image

    if LUNG1.is_dir():
        return read_image(LUNG1), LUNG1, "LUNG1-001"
    sys.path.insert(0, str(REPO))
    from tests.lungmask.chest import synthetic_chest

    chest = synthetic_chest(spacing=(0.7, 0.7, 2.5), extent_mm=(512 * 0.7, 512 * 0.7, 134 * 2.5))
    return chest.ct, None, "synthetic chest"


def _resampled(ct, slices: int):
    """``ct`` resampled along its third axis to ``slices`` slices, same physical extent."""
    import numpy as np
    import torch

    from rrcunet.io import Volume
    from rrcunet.preprocessing.resample import resize, resized_geometry

    shape = (ct.shape[0], ct.shape[1], slices)
    arr = resize(torch.from_numpy(np.asarray(ct.array, dtype=np.float32))[None], shape, mode="linear")[0]
    return Volume(arr.round().to(torch.int16).numpy(), resized_geometry(ct.geometry, shape), "image")


def _fmt_stages(rt: dict) -> list[str]:
    return [f"{rt.get(k, 0.0):.2f}" for k in ("read", "lungmask", "preprocess", "model", "invert", "postprocess",
                                              "measure", "quality", "write", "total")]


def _print_fit(points: list[tuple[int, float]]) -> None:
    """Least-squares ``t = a + b·N`` of the non-model time, and the growth exponent between the extremes."""
    import math

    import numpy as np

    if len(points) < 2:
        return
    n = np.array([p[0] for p in points], dtype=float)
    t = np.array([p[1] for p in points], dtype=float)
    b, a = np.polyfit(n, t, 1)
    (n0, t0), (n1, t1) = points[0], points[-1]
    k = math.log(t1 / t0) / math.log(n1 / n0) if t0 > 0 and t1 > 0 and n1 != n0 else float("nan")
    print(f"\nfit of total − model: {a:.2f} s + {b * 100:.3f} s per 100 slices; growth exponent between N={n0} and "
          f"N={n1}: {k:.2f} (1 = linear)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="timed forward passes per model row (median)")
    parser.add_argument("--slices", type=int, nargs="*", default=[60, 150, 300, 600],
                        help="slice counts of the scaling section (empty to skip)")
    parser.add_argument("--skip-model", action="store_true", help="skip the model-only section")
    parser.add_argument("--variants", default="rrcunet,rrcunet-unfused,monai-unet,monai-dynunet",
                        help="model-only section: comma list of rrcunet, monai-unet, monai-dynunet")
    parser.add_argument("--runtimes", default="torch,onnxruntime", help="model-only section: torch, onnxruntime")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end section")
    parser.add_argument("--channels-last", action="store_true",
                        help="end-to-end and slice rows with `rrcunet predict --channels-last`")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of one end-to-end run")
    parser.add_argument("--model-files", nargs="+", metavar="FILE",
                        help="end to end: run these model files instead of a random base-32 RRc-UNet")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "default", "fp32-default", "bf16-eager"],
                        help="end to end: which precisions (default fp32 bf16). fp32 = float32, contiguous unless "
                             "--channels-last (the default of `rrcunet predict` before issue 23); bf16 = autocast, "
                             "same layout rule; default = what `rrcunet predict` does now (bf16, channels-last and "
                             "the fused kernel on a CPU with native bf16, else fp32); fp32-default = what it does on a CPU "
                             "without native bf16 (float32, channels-last and the fused kernel); bf16-eager = bf16 "
                             "channels-last with the fused kernel off")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row before giving up")
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch

    results: dict[str, list] = {"model": [], "e2e": [], "slices": []}
    common = {"threads": args.threads, "base": args.base, "levels": args.levels, "repeats": args.repeats}
    print(f"# CPU: {_model_speed().cpu_model()}")
    print(f"# {args.threads} thread(s); torch {torch.__version__}; THP_MEM_ALLOC_ENABLE={_model_speed().thp_setting()}; "
          f"load average at start {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs visible"
          + "".join(f"; {k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_") or k == "RRCUNET_MALLOPT"))
    with tempfile.TemporaryDirectory(prefix="rrcunet_bench_") as tmp_s:
        tmp = Path(tmp_s)
        if not args.skip_model:
            print(f"\n## Model only: input {SHAPE}, base {args.base}, {args.levels} levels\n")
            print("| model | runtime | dtype | layout | fwd s | CPU s | peak MiB |")
            print("|---|---|---|---|---:|---:|---:|")
            rows = [(v, "torch", d, "contiguous") for v in ("rrcunet", "rrcunet-unfused", "monai-unet", "monai-dynunet")
                    for d in ("fp32", "bf16")]
            rows[2:2] = [("rrcunet", "torch", d, "cl3d") for d in ("fp32", "bf16")]
            rows.append(("rrcunet", "onnxruntime", "fp32", "contiguous"))
            rows = [r for r in rows if r[0] in args.variants.split(",") and r[1] in args.runtimes.split(",")]
            for variant, runtime, dtype, layout in rows:
                job = {**common, "kind": "model", "variant": variant, "runtime": runtime, "dtype": dtype,
                       "layout": layout}
                if runtime == "onnxruntime":
                    job["onnx"] = str(tmp / f"{variant}.onnx")
                    exported = run_job({**job, "kind": "export"}, args.timeout)
                    if "error" in exported:
                        print(f"| {variant} | {runtime} | {dtype} | {layout} | export error: {exported['error']} | | |")
                        continue
                    job["export_s"] = exported["export_s"]
                r = run_job(job, args.timeout)
                results["model"].append({"variant": variant, "runtime": runtime, "dtype": dtype, "layout": layout, **r})
                if "error" in r:
                    print(f"| {variant} | {runtime} | {dtype} | {layout} | error: {r['error']} | | |", flush=True)
                    continue
                extra = f" (export {r['export_s']:.1f} s)" if r.get("export_s") else ""
                print(f"| {variant} | {runtime}{extra} | {dtype} | {layout} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
                      f"| {r['peak_mib']:.0f} |", flush=True)

        if not args.skip_e2e or args.slices or args.profile:
            from rrcunet.io import write_volume
            from rrcunet.models import build_model
            from rrcunet.preprocessing import PreprocessConfig
            from rrcunet.models.model_file import save_model

            torch.manual_seed(0)
            kwargs = {"base_filters": args.base, "levels": args.levels}
            model_path = save_model(tmp / "rrcunet_b32.safetensors", build_model("rrcunet", **kwargs),
                                    model_name="rrcunet", model_kwargs=kwargs, preprocess_config=PreprocessConfig())
            ct, dicom_dir, name = _source_ct()
            nifti = tmp / "ct.nii.gz"
            write_volume(ct, nifti)
            e2e = {"kind": "e2e", "threads": args.threads, "model": str(model_path),
                   "channels_last": args.channels_last}
            models = ([(Path(f).name, str(Path(f).resolve())) for f in args.model_files] if args.model_files
                      else [(f"random RRc-UNet base {args.base}", str(model_path))])
            header = ("| model | input | dtype | read | lung | preproc | model | invert | post | measure | quality | write | total s "
                      "| wall s | gc s | CPU s | peak MiB | load s |")
            rule = "|---|---|---|" + "---:|" * 15

            if not args.skip_e2e:
                what = (", ".join(m for m, _ in models) if args.model_files
                        else f"RRc-UNet base {args.base} at 256x256x48")
                print(f"\n## End to end (read → write), {name} {'x'.join(map(str, ct.shape))}, {what}\n")
                print(header)
                print(rule)
                inputs = ([("DICOM → NIfTI + SEG", dicom_dir)] if dicom_dir is not None else []) + [("NIfTI → NIfTI", nifti)]
                for model_label, model_file in models:
                    for label, path in inputs:
                        for dtype in args.dtypes:
                            r = run_job({**e2e, "model": model_file, "input": str(path), "out": str(tmp / "out_e2e"),
                                         "dtype": dtype}, args.timeout)
                            results["e2e"].append({"model": model_label, "input": label, "dtype": dtype, **r})
                            if "error" in r:
                                print(f"| {model_label} | {label} | {dtype} | error: {r['error']} |", flush=True)
                                continue
                            print(f"| {model_label} | {label} | {dtype} | " + " | ".join(_fmt_stages(r["runtime"]))
                                  + f" | {r['wall']:.2f} | {r.get('gc_s', 0.0):.2f} | {r['cpu_seconds']:.1f} | {r['peak_mib']:.0f} "
                                  f"| {r['load_s']:.2f} |", flush=True)

            if args.slices:
                print(f"\n## Slices: {name} resampled to 512x512xN, NIfTI → NIfTI, fp32\n")
                print(header.replace("| model | input |", "| N |") + " total − model s |")
                print("|---|---|" + "---:|" * 15 + "---:|")
                for n in args.slices:
                    path = tmp / f"ct_{n}.nii.gz"
                    write_volume(_resampled(ct, n), path)
                    r = run_job({**e2e, "input": str(path), "out": str(tmp / f"out_{n}"), "dtype": "fp32"}, args.timeout)
                    path.unlink()
                    results["slices"].append({"slices": n, **r})
                    if "error" in r:
                        print(f"| {n} | fp32 | error: {r['error']} |", flush=True)
                        continue
                    rt = r["runtime"]
                    print(f"| {n} | fp32 | " + " | ".join(_fmt_stages(rt))
                          + f" | {r['wall']:.2f} | {r.get('gc_s', 0.0):.2f} | {r['cpu_seconds']:.1f} | {r['peak_mib']:.0f} "
                          f"| {r['load_s']:.2f} "
                          f"| {rt['total'] - rt['model']:.2f} |",
                          flush=True)
                _print_fit([(x["slices"], x["runtime"]["total"] - x["runtime"]["model"]) for x in results["slices"]
                            if "runtime" in x])

            if args.profile:
                r = run_job({**e2e, "input": str(nifti), "out": str(tmp / "out_prof"), "dtype": "fp32", "profile": True},
                            args.timeout)
                print("\n## torch.profiler, one end-to-end run (NIfTI, fp32)\n")
                print(r.get("profile") or r.get("error"))
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
