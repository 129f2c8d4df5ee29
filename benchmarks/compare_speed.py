"""Speed of ``rrcunet compare`` and of ``predict --uncertainty N`` on NSCLC-Radiomics LUNG1-001 (issue 19).

1. ``compare`` on two LUNG1-001-sized scans whose predictions are already made: LUNG1-001 (DICOM)
   and a copy turned by 3° and shifted by (8, −6, 5) mm (as in tests/response/test_compare_realdata.py),
   median of ``--repeats`` runs, with the stage times (goal: ≤ 20 s on 2 cores).
2. ``rrcunet predict`` on LUNG1-001 once plainly and once with ``--uncertainty N``, each a fresh
   process, alternated, ``--repeats`` times: wall seconds and peak RSS (``/usr/bin/time``), and the
   ratio (goal: ≤ N× a single prediction, ≤ 3 GB).

Example (docs/RESULTS.md, "Tumour response")::

    python benchmarks/compare_speed.py --repeats 3 --uncertainty 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))


def timed_predict(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one ``rrcunet predict`` process."""
    with tempfile.NamedTemporaryFile(suffix=".txt") as rss:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, sys.executable, "-m", "rrcunet", "predict",
                        *args, "--no-progress", "--overwrite"], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        return seconds, int(Path(rss.name).read_text().split()[-1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--uncertainty", type=int, default=8)
    parser.add_argument("--model", help="tumour model file (default: the bundled model)")
    args = parser.parse_args(argv)
    lung1 = REALDATA / "nsclc-radiomics-lung1-001" / "image"
    if not lung1.is_dir():
        print(f"{lung1} not found; set RRCUNET_REALDATA", file=sys.stderr)
        return 2

    import torch

    sys.path.insert(0, str(REPO))
    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.io import read_image, write_volume
    from rrcunet.response import compare_scans
    from tests.response.test_compare_realdata import moved_copy

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="rrcunet_compare_") as tmp:
        work = Path(tmp)
        moved, _ = moved_copy(read_image(lung1))
        write_volume(moved, work / "moved.nii.gz")
        predictor = Predictor.from_file(args.model, config=InferenceConfig(device="cpu"))
        predictor.predict_paths([lung1], work / "base", progress=False)
        predictor.predict_paths([work / "moved.nii.gz"], work / "moved", progress=False)
        runs = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            doc = compare_scans(work / "base", work / "moved", work / f"out{r}")
            runs.append((time.perf_counter() - t0, doc["runtime_s"]))
        total = statistics.median(s for s, _ in runs)
        stages = {k: statistics.median(rt[k] for _, rt in runs) for k in runs[0][1]}
        print(f"compare, predictions made (2 scans 512x512x134 / 130): median {total:.2f} s of {args.repeats} "
              f"(goal <= 20 s); stages {json.dumps({k: round(v, 2) for k, v in stages.items()})}; "
              f"RECIST {doc['recist']['category']}, volume change {doc['volumetric']['change_pct']:+.1f} %")

        common = [str(lung1), "-o", str(work / "pred")]
        if args.model:
            common += ["--model", args.model]
        plain, unc = [], []
        for _ in range(args.repeats):
            plain.append(timed_predict(common))
            unc.append(timed_predict(common + ["--uncertainty", str(args.uncertainty)]))
        p_s, u_s = statistics.median(s for s, _ in plain), statistics.median(s for s, _ in unc)
        p_m, u_m = max(m for _, m in plain), max(m for _, m in unc)
        print(f"predict LUNG1-001 (DICOM in, NIfTI + SEG out, default precision), fresh process, median of "
              f"{args.repeats}: plain {p_s:.2f} s / {p_m:.0f} MiB peak; --uncertainty {args.uncertainty}: "
              f"{u_s:.2f} s / {u_m:.0f} MiB peak; ratio {u_s / p_s:.2f}x (goal <= {args.uncertainty}x, <= 3 GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
