"""Cohort throughput of ``rrcunet predict``: sequential, overlapped (worker processes) and split in parts.

One run measures, on the same cohort and machine (issue 21):

* ``sequential``: ``rrcunet predict --workers 0`` (read, lung, preprocess, network, write one after
  the other);
* ``overlapped, processes``: ``rrcunet predict --workers W --worker-kind process`` (W processes
  prepare the next cases while the network runs; a thread writes the previous case);
* ``overlapped, threads``: the same with ``--worker-kind thread`` (the default: the workers are
  threads of the one process);
* ``2 parts``: two ``rrcunet predict --num-parts 2 --part-id I --workers 0`` processes at once,
  sharing the output folder;
* ``1 case``: a single case, the memory reference of the cohort rows.

For each: CTs per minute, wall time, CPU utilisation (CPU seconds of the process tree ÷ wall ÷
cores), peak RSS of the whole process tree (sampled from /proc every 0.1 s: workers included) and
the per-stage times summed over the case JSONs. The cohort is copies of LUNG1-001 (converted once
to NIfTI; ``../shared/realdata``) and small phantoms, alternating. The CPU model is printed; compare
rows only within one run.

Examples::

    python benchmarks/cohort_throughput.py                    # 8 cases
    python benchmarks/cohort_throughput.py --cases 40 --modes sequential overlapped   # the 40-case cohort
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))
STAGES = ("read", "lungmask", "preprocess", "model", "invert", "postprocess", "measure", "write")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _rss_and_cpu(pid: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds (user + system) of one process; zeros once it has gone."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return 0, 0.0


def run_tree(commands: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    """Run commands at once; wall time, peak RSS of all their process trees together, CPU seconds."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    peak, cpu_seen = 0, {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            usage = {q: _rss_and_cpu(q) for p in procs for q in _tree(p.pid)}
            peak = max(peak, sum(rss for rss, _ in usage.values()))
            for q, (_, cpu) in usage.items():  # CPU per process, last value seen (a process's time only grows)
                cpu_seen[q] = cpu or cpu_seen.get(q, 0.0)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outputs = [p.communicate()[0] for p in procs]
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    for p, text in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"failed ({p.returncode}): {' '.join(p.args)}\n{text[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": peak / 2**20, "cpu_s": sum(cpu_seen.values())}


def stage_totals(folder: Path) -> dict[str, float]:
    totals = dict.fromkeys(STAGES, 0.0)
    for path in folder.glob("*.json"):
        if path.name.endswith(".failed.json") or path.name.startswith("cohort"):
            continue
        runtime = json.loads(path.read_text()).get("runtime_s", {})
        for k in STAGES:
            totals[k] += float(runtime.get(k, 0.0))
    return totals


def make_cohort(root: Path, n: int) -> Path:
    """``n`` cases: LUNG1-001 (NIfTI, hard links of one file) and small phantoms, alternating."""
    from rrcunet.io import read_image, write_volume
    from rrcunet.synthetic import PhantomConfig, generate_phantom

    cases = root / "cases"
    cases.mkdir(parents=True)
    lung1 = root / "lung1.nii.gz"
    source = REALDATA / "nsclc-radiomics-lung1-001" / "image"
    if source.is_dir():
        write_volume(read_image(source), lung1)
    for i in range(n):
        if i % 2 == 0 and lung1.exists():
            os.link(lung1, cases / f"lung1_{i:03d}.nii.gz")
        else:
            write_volume(generate_phantom(1000 + i, config=PhantomConfig.preset("small")).image,
                         cases / f"phantom_{i:03d}.nii.gz")
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8, help="cohort size (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="workers of the overlapped row (default 1)")
    parser.add_argument("--modes", nargs="+", default=["one", "sequential", "overlapped", "threads", "parts"],
                        choices=["one", "sequential", "overlapped", "threads", "parts"])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("RRCUNET_WORKERS", None)
    cores = os.cpu_count() or 1
    print(f"# CPU: {cpu_model()}; {cores} cores; load average at start {os.getloadavg()[0]:.1f}")
    results = []
    with tempfile.TemporaryDirectory(prefix="rrcunet_cohort_") as tmp:
        cases = make_cohort(Path(tmp), args.cases)
        one = sorted(cases.iterdir())[0]
        base = [sys.executable, "-m", "rrcunet", "predict", "--no-progress"]
        plans = {
            "one": ("1 case", [[*base, str(one), "-o", f"{tmp}/out_one", "--workers", "0"]], f"{tmp}/out_one", 1),
            "sequential": ("sequential (--workers 0)", [[*base, str(cases), "-o", f"{tmp}/out_seq", "--workers", "0"]],
                           f"{tmp}/out_seq", args.cases),
            "overlapped": (f"overlapped, processes (--workers {args.workers} --worker-kind process)",
                           [[*base, str(cases), "-o", f"{tmp}/out_ovl", "--workers", str(args.workers),
                             "--worker-kind", "process"]],
                           f"{tmp}/out_ovl", args.cases),
            "threads": (f"overlapped, threads (--workers {args.workers} --worker-kind thread)",
                        [[*base, str(cases), "-o", f"{tmp}/out_thr", "--workers", str(args.workers),
                          "--worker-kind", "thread"]], f"{tmp}/out_thr", args.cases),
            "parts": ("2 parts at once (--workers 0 each)",
                      [[*base, str(cases), "-o", f"{tmp}/out_parts", "--workers", "0", "--num-parts", "2",
                        "--part-id", str(k)] for k in (0, 1)], f"{tmp}/out_parts", args.cases),
        }
        print(f"# cohort: {args.cases} cases (LUNG1-001 512x512x134 as NIfTI and small phantoms, alternating); "
              "NIfTI in, NIfTI out; the predict default precision")
        print("\n| run | cases | wall s | CTs/min | CPU util. | peak RSS MiB | " + " | ".join(STAGES) + " |")
        print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES))
        for mode in args.modes:
            label, commands, out, n = plans[mode]
            r = run_tree(commands, env)
            totals = stage_totals(Path(out))
            r.update({"mode": mode, "label": label, "cases": n, "ct_per_min": 60 * n / r["wall_s"],
                      "cpu_util": r["cpu_s"] / r["wall_s"] / cores, "stages_s": totals})
            results.append(r)
            print(f"| {label} | {n} | {r['wall_s']:.1f} | {r['ct_per_min']:.2f} | {r['cpu_util']:.0%} | "
                  f"{r['peak_rss_mib']:.0f} | " + " | ".join(f"{totals[k]:.1f}" for k in STAGES) + " |", flush=True)
    by = {r["mode"]: r for r in results}
    print()
    for mode, name in (("overlapped", "overlapped processes"), ("threads", "overlapped threads"), ("parts", "2 parts")):
        if "sequential" in by and mode in by:
            print(f"{name} / sequential throughput: {by[mode]['ct_per_min'] / by['sequential']['ct_per_min']:.2f}x")
    if "one" in by:
        for mode in ("sequential", "overlapped", "threads", "parts"):
            if mode in by:
                print(f"peak RSS {mode} / 1 case: {by[mode]['peak_rss_mib'] / by['one']['peak_rss_mib']:.2f}x")
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
