"""Fingerprints of rrcunet's outputs, to show that a refactoring changed no result.

Runs, in a scratch folder:

* ``rrcunet predict`` with the bundled model on 3 small phantoms (seed 731) and, when
  ``../shared/realdata`` is present, on the LUNG1-001 DICOM series (NIfTI + DICOM SEG out);
* a short ``rrcunet train`` (``cpu_tumour``, 2 epochs, seed 0) on 6 phantoms;
* reads every bundled model file.

and prints one SHA-256 per output: the label map's voxels and geometry for each mask, each
tensor of the trained ``best.safetensors`` / ``last.safetensors``. Run it before and after a change
and compare (``--save before.json`` then ``--compare before.json``)::

    python benchmarks/identity_check.py --save /tmp/before.json
    # ... change the code ...
    python benchmarks/identity_check.py --compare /tmp/before.json

Exit status 1 when ``--compare`` finds a difference. Takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LUNG1 = REPO.parent / "shared" / "realdata" / "nsclc-radiomics-lung1-001" / "image"  # --realdata changes it


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", "rrcunet", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _mask_hash(path: Path) -> str:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    h = hashlib.sha256(sitk.GetArrayViewFromImage(img).tobytes())
    h.update(repr((img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())).encode())
    return h.hexdigest()


def _tensor_hashes(path: Path) -> dict[str, str]:
    from safetensors.numpy import load_file

    return {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in sorted(load_file(str(path)).items())}


def fingerprints(work: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    _run("phantoms", "-n", "3", "--seed", "731", "--size", "small", "-o", str(work / "ph"))
    _run("predict", str(work / "ph" / "images"), "-o", str(work / "pred"), "--no-progress")
    for p in sorted((work / "pred").glob("*_seg.nii.gz")):
        out[f"predict/{p.name}"] = _mask_hash(p)
    if LUNG1.is_dir():
        _run("predict", str(LUNG1), "-o", str(work / "lung1"), "--no-progress")
        for p in sorted((work / "lung1").glob("*_seg.nii.gz")):
            out[f"predict-lung1/{p.name}"] = _mask_hash(p)
    _run("phantoms", "-n", "6", "--seed", "732", "--size", "small", "--val-fraction", "0.34", "-o", str(work / "tr"))
    _run("train", "--config", "cpu_tumour", "-o", str(work / "run"), f"data.dataset={work / 'tr'}",
         "schedule.epochs=2", "schedule.max_minutes=null", "runtime.seed=0", "data.num_workers=0")
    for name in ("best.safetensors", "last.safetensors"):
        path = work / "run" / name
        if path.is_file():
            for k, v in _tensor_hashes(path).items():
                out[f"train/{name}/{k}"] = v
    from rrcunet.inference.bundled import bundled_model_path

    for task in ("tumour", "lung"):
        path = bundled_model_path(task)
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            out[f"bundled/{task}/keys"] = hashlib.sha256(",".join(sorted(f.keys())).encode()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path, help="write the fingerprints to this JSON file")
    ap.add_argument("--compare", type=Path, help="compare with fingerprints saved earlier")
    ap.add_argument("--realdata", type=Path, help="the shared realdata folder (default: ../shared/realdata)")
    args = ap.parse_args()
    global LUNG1
    if args.realdata:
        LUNG1 = args.realdata / "nsclc-radiomics-lung1-001" / "image"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        fp = fingerprints(Path(tmp))
    print(f"{len(fp)} fingerprints ({'with' if LUNG1.is_dir() else 'without'} LUNG1-001)")
    if args.save:
        args.save.write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        diff = sorted(k for k in set(before) | set(fp) if before.get(k) != fp.get(k))
        for k in diff:
            print(f"DIFFERENT {k}: {before.get(k, 'missing')[:12]} -> {fp.get(k, 'missing')[:12]}")
        print("identical" if not diff else f"{len(diff)} of {len(before)} differ")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
