"""Time the phantom generator and print a table (seconds per phantom, voxels per second).

Usage::

    python benchmarks/phantom_speed.py [--seeds 0 1 2] [--full-slices 3.0]

Rows: the "small" preset as sampled, and the "full" preset at a fixed slice spacing (default
3 mm, about 130 slices of 512×512; 1 mm gives ~400 slices). Single process; numpy/scipy are
single-threaded here, so the numbers are per core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--full-slices", type=float, default=3.0, help="slice spacing (mm) of the full-preset rows")
    args = ap.parse_args(argv)

    from rrcunet.synthetic import PhantomConfig, generate_phantom

    generate_phantom(0, config=PhantomConfig.preset("small"))  # warm-up (imports, caches)
    rows = []
    configs = {"small": PhantomConfig.preset("small"),
               f"full @ {args.full_slices:g} mm": PhantomConfig.preset(
                   "full", slice_spacing_mm=(args.full_slices, args.full_slices))}
    for name, cfg in configs.items():
        for seed in args.seeds:
            t0, c0 = time.perf_counter(), time.process_time()
            ph = generate_phantom(seed, config=cfg)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            n = int(np.prod(ph.image.shape))
            rows.append((name, seed, "×".join(map(str, ph.image.shape)), len(ph.facts.tumours), dt, dc, n / dt / 1e6))
    # Wall time depends on machine load; CPU time of this process much less so.
    print("| preset | seed | shape | tumours | wall s | CPU s | Mvoxel/s (wall) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
