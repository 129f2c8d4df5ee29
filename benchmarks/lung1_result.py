"""Real data: the bundled demo model (or ``--model``) on NSCLC-Radiomics LUNG1-001, scored against its RTSTRUCT.

Runs ``rrcunet predict`` on the DICOM series (``../shared/realdata/nsclc-radiomics-lung1-001/image``,
or ``RRCUNET_REALDATA``), checks that the mask lies on the series' own grid, rasterises ``GTV-1``,
``Lung-Left`` and ``Lung-Right`` from the RTSTRUCT onto that grid, and prints tumour Dice against
``GTV-1``, predicted and reference tumour volume, lung-region Dice against the union of the lungs
and ``GTV-1`` (the lung region the network's lung channel covers), and the command's wall time.

Example (the figures of docs/inference.md, "Real data")::

    python benchmarks/lung1_result.py
    python benchmarks/lung1_result.py --model runs/demo_tumour/best.safetensors -- --bf16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RRCUNET_REALDATA", REPO.parent / "shared" / "realdata"))
CASE = REALDATA / "nsclc-radiomics-lung1-001"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: the bundled demo model)")
    parser.add_argument("predict_args", nargs="*", help="extra `rrcunet predict` options, after --")
    args = parser.parse_args(argv)
    if not (CASE / "image").is_dir():
        print(f"LUNG1-001 not found under {CASE} (set RRCUNET_REALDATA)", file=sys.stderr)
        return 2

    from rrcunet.io import read_image, read_rtstruct

    with tempfile.TemporaryDirectory(prefix="rrcunet_lung1_") as tmp:
        cmd = ["rrcunet", "predict", str(CASE / "image"), "-o", tmp, "--no-progress", *args.predict_args]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        ct = read_image(CASE / "image")
        seg = read_image(next(Path(tmp).glob("*_seg.nii.gz")), kind="label")
        if seg.geometry != ct.geometry:
            print(f"mask geometry {seg.geometry} differs from the CT's {ct.geometry}", file=sys.stderr)
            return 1
        rois = read_rtstruct(CASE / "mask_rtstruct", ct, rois=["GTV-1", "Lung-Left", "Lung-Right"])
        gtv = np.asarray(rois["GTV-1"].array) > 0
        lungs = (np.asarray(rois["Lung-Left"].array) > 0) | (np.asarray(rois["Lung-Right"].array) > 0) | gtv
        labels = np.asarray(seg.array)
        ml = float(np.prod(ct.spacing)) / 1000.0
        print(f"grid: {ct.shape}, identical to the DICOM series: yes")
        print(f"tumour Dice against GTV-1: {dice(labels == 2, gtv):.3f}")
        print(f"tumour volume: predicted {(labels == 2).sum() * ml:.1f} mL, GTV-1 {gtv.sum() * ml:.1f} mL")
        print(f"lung-region Dice against Lung-Left + Lung-Right + GTV-1: {dice(labels > 0, lungs):.3f}")
        print(f"wall time of `rrcunet predict`: {wall:.1f} s")
        print("DICOM-SEG written:", "yes" if any(Path(tmp).glob("*_seg.dcm")) else "no")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
