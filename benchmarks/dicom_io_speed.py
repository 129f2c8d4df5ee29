"""Reading LUNG1-001's DICOM series and writing a DICOM SEG on it: median seconds of ``--repeats``.

The two DICOM stages of ``rrcunet predict`` on its own (issue 23): :func:`rrcunet.io.read_image` of
the 134-slice series, and :func:`rrcunet.io.write_seg` of a two-segment label map on its grid (a
lung box and a tumour box, so the frames are not empty). To compare code versions, run it on each
commit in turn; the CPU model is printed.

    python benchmarks/dicom_io_speed.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_speed import LUNG1  # noqa: E402  (the benchmarks' one path to LUNG1-001)
from model_speed import cpu_model  # noqa: E402  (the benchmarks' one CPU-name reader)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not LUNG1.is_dir():
        print(f"skipped: {LUNG1} is absent (set RRCUNET_REALDATA to the shared realdata folder)")
        return 0
    from rrcunet.io import Volume, read_image, write_seg

    print(f"# CPU: {cpu_model()}; load average at start {os.getloadavg()[0]:.1f}")
    ct = read_image(LUNG1)  # warm-up: imports, file cache
    label = np.zeros(ct.shape, np.uint8)
    label[100:400, 100:400, 20:110] = 1
    label[200:250, 200:250, 50:70] = 2
    volume = Volume(label, ct.geometry, "label", {})
    reads, writes = [], []
    with tempfile.TemporaryDirectory(prefix="rrcunet_dicom_io_") as tmp:
        write_seg(volume, ct.meta["dicom"], Path(tmp) / "warm.dcm")
        for i in range(args.repeats):
            t = time.perf_counter()
            read_image(LUNG1)
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_seg(volume, ct.meta["dicom"], Path(tmp) / f"{i}.dcm")
            writes.append(time.perf_counter() - t)
    print(f"| LUNG1-001 {ct.shape[0]}×{ct.shape[1]}×{ct.shape[2]} | median s of {args.repeats} |\n|---|---:|")
    print(f"| read the DICOM series | {statistics.median(reads):.3f} |")
    print(f"| write the DICOM SEG | {statistics.median(writes):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
