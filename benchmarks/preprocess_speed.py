"""Benchmark: read + lung mask + §4.1 preprocessing (+ inverse) time for a 512×512×300 chest CT.

The CT is NSCLC-Radiomics LUNG1-001 (../shared/realdata) resampled along z from 134 to 300
slices (same physical extent), or, when that folder is absent, the analytic test chest of
tests/lungmask/chest.py rendered on 512×512×300. It is written to NIfTI in a temporary folder,
then each stage is timed separately (best and median of ``--repeats`` runs):

* ``read_image``      NIfTI → Volume
* ``extract_lungs``   classical lung region
* ``preprocess``      orient, clip, z-normalise, crop, resize to 256×256×48, lung channel
* ``invert``          (3, 256, 256, 48) logits → label map on the 512×512×300 grid

Goal: read + lung mask + preprocess ≤ 10 s on 2 CPU cores.

``--realdata`` also prints the lung extractor's accuracy on the real scans: Dice against the
manual Lung-Left ∪ Lung-Right contours of LUNG1-001 (and against lungs ∪ GTV-1, since those
contours exclude the tumour), the fraction of GTV-1 inside the mask, and for the cropped IBSI
phantom the fraction of its GTV inside the mask.

``--working-mm X Y Z`` runs the real-scan check with another working grid of the classical
extractor (its speed against its Dice and tumour coverage).

Run from the repository root::

    python benchmarks/preprocess_speed.py --threads 2 --repeats 3 --realdata
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def _lung1_resampled(slices: int):
    from rrcunet.io import Volume, read_image
    from rrcunet.preprocessing.resample import resize, resized_geometry

    ct = read_image(REALDATA / "nsclc-radiomics-lung1-001" / "image")
    shape = (ct.shape[0], ct.shape[1], slices)
    arr = resize(torch.from_numpy(ct.array.astype(np.float32))[None], shape, mode="linear")[0]
    return Volume(arr.round().to(torch.int16).numpy(), resized_geometry(ct.geometry, shape), "image"), "LUNG1-001 resampled"


def _synthetic(slices: int):
    sys.path.insert(0, str(REPO))
    from tests.lungmask.chest import synthetic_chest

    extent = (512 * 0.7, 512 * 0.7, slices * 1.0)
    chest = synthetic_chest(spacing=(0.7, 0.7, 1.0), extent_mm=extent)
    return chest.ct, "synthetic chest"


def _time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def speed(args: argparse.Namespace) -> None:
    from rrcunet.io import read_image, write_volume
    from rrcunet.lungmask import extract_lungs
    from rrcunet.preprocessing import PreprocessConfig, invert_prediction, preprocess

    have_real = (REALDATA / "nsclc-radiomics-lung1-001" / "image").is_dir() and not args.synthetic
    ct, what = _lung1_resampled(args.slices) if have_real else _synthetic(args.slices)
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        write_volume(ct, path)
        rows = []
        best, med, ct_read = _time(lambda: read_image(path), args.repeats)
        rows.append(("read_image (.nii.gz)", best, med))
        best, med, lungs = _time(lambda: extract_lungs(ct_read), args.repeats)
        rows.append(("extract_lungs (classical)", best, med))
        best, med, case = _time(lambda: preprocess(ct_read, lungs, config=config), args.repeats)
        rows.append(("preprocess (256×256×48)", best, med))
        logits = torch.randn(3, *case.record.network_shape)
        best, med, back = _time(lambda: invert_prediction(logits, case.record), args.repeats)
        rows.append(("invert (3-class logits)", best, med))
    assert back.geometry == ct_read.geometry
    total_best = sum(r[1] for r in rows[:3])
    total_med = sum(r[2] for r in rows[:3])
    print(f"CT: {what}, {ct.shape[0]}×{ct.shape[1]}×{ct.shape[2]}, spacing "
          f"{tuple(round(s, 3) for s in ct.spacing)} mm; torch threads {torch.get_num_threads()}; "
          f"repeats {args.repeats}")
    print(f"{'stage':<30}{'best s':>10}{'median s':>10}")
    for name, b, m in rows:
        print(f"{name:<30}{b:>10.2f}{m:>10.2f}")
    print(f"{'read + lungs + preprocess':<30}{total_best:>10.2f}{total_med:>10.2f}   (goal ≤ 10 s)")
    print(f"crop {case.record.crop.shape} → network {case.record.network_shape}; "
          f"lung region {lungs.array.sum() * lungs.geometry.voxel_volume_ml:.0f} mL")


def realdata(args: argparse.Namespace) -> None:
    from rrcunet.io import read_image, read_rtstruct
    from rrcunet.lungmask import extract_lungs

    options = {} if getattr(args, "working_mm", None) is None else {"working_mm": tuple(args.working_mm)}
    if options:
        print(f"classical extractor with working_mm={options['working_mm']}")
    root = REALDATA / "nsclc-radiomics-lung1-001"
    if root.is_dir():
        ct = read_image(root / "image")
        rois = read_rtstruct(root / "mask_rtstruct" / "1-1.dcm", ct, rois=["Lung-Left", "Lung-Right", "GTV-1"])
        lungs = (rois["Lung-Left"].array > 0) | (rois["Lung-Right"].array > 0)
        gtv = rois["GTV-1"].array > 0
        best, med, mask = _time(lambda: extract_lungs(ct, **options), args.repeats)
        m = mask.array > 0
        print(f"LUNG1-001 {ct.shape}: Dice vs Lung-Left∪Lung-Right {_dice(m, lungs):.4f}, "
              f"vs lungs∪GTV-1 {_dice(m, lungs | gtv):.4f}, GTV-1 inside mask {(m & gtv).sum() / gtv.sum():.1%}, "
              f"time best {best:.2f} s / median {med:.2f} s")
    else:
        print(f"LUNG1-001 skipped: {root} is absent")
    root = REALDATA / "ibsi-ct-radiomics-phantom" / "nifti"
    if root.is_dir():
        ct = read_image(root / "image" / "phantom.nii.gz")
        gtv = read_image(root / "mask" / "mask.nii.gz", kind="label").array > 0
        m = extract_lungs(ct, **options).array > 0
        print(f"IBSI phantom {ct.shape}: GTV-1 inside mask {(m & gtv).sum() / gtv.sum():.1%} "
              f"({(m & gtv).sum()} of {gtv.sum()} voxels); lung region {m.sum() * ct.geometry.voxel_volume_ml:.0f} mL")
    else:
        print(f"IBSI phantom skipped: {root} is absent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per stage (default 3)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the benchmark CT (default 300)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic chest even if LUNG1-001 exists")
    parser.add_argument("--realdata", action="store_true", help="also print the extractor's Dice on real scans")
    parser.add_argument("--working-mm", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="--realdata only: the classical extractor's working grid in mm (default: its own, "
                             "2 2 3), to weigh a coarser grid's time against its Dice and tumour coverage")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed(args)
    if args.realdata:
        realdata(args)


if __name__ == "__main__":
    main()
