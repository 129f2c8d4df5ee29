"""Shared pieces of the reliability tests: hostile-file builders, a tiny model, output checks.

Every builder writes a small file (a few kB) into a folder the test owns and returns its path.
The NIfTI builders write the header bytes themselves (nibabel header + ``struct`` edits) so a
field can hold a value no well-behaved writer would produce (negative dimensions, zero or NaN
voxel size, a declared grid of 10¹³ voxels with a 500-byte file).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]

# byte offsets of NIfTI-1 header fields (nifti1.h)
DIM_OFFSET = 40  # short dim[8]
DATATYPE_OFFSET = 70  # short datatype
PIXDIM_OFFSET = 76  # float pixdim[8]
VOX_OFFSET_OFFSET = 108  # float vox_offset


# ---------------------------------------------------------------------------------------------
# small volumes
# ---------------------------------------------------------------------------------------------
def chest_ct(seed: int = 0):
    """A 42×32×20 synthetic chest CT (int16 HU, 8×8×10 mm voxels) whose lungs the classical extractor finds."""
    from tests.lungmask.chest import synthetic_chest

    return synthetic_chest(spacing=(8.0, 8.0, 10.0), seed=seed).ct


def small_ct(shape=(16, 12, 6), seed: int = 0, spacing=(1.0, 1.0, 2.5)):
    """A small random CT volume in HU (int16), for DICOM series builders."""
    from rrcunet.io import Geometry, Volume

    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1024, 400, size=shape).astype(np.int16), Geometry(shape, spacing, (0.0, 0.0, 0.0)))


# ---------------------------------------------------------------------------------------------
# NIfTI bytes
# ---------------------------------------------------------------------------------------------
def nifti_bytes(array: np.ndarray, *, spacing=(1.0, 1.0, 2.0)) -> bytes:
    """A single-file NIfTI-1 (``.nii``) holding ``array`` as written by nibabel (qform and sform set)."""
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(array, affine)
    return img.to_bytes()


def edit_header(raw: bytes, *, dims=None, pixdim=None, datatype=None, vox_offset=None) -> bytes:
    """``raw`` with NIfTI-1 header fields overwritten: ``dims`` = dim[0..] (shorts), ``pixdim`` = pixdim[1..]."""
    b = bytearray(raw)
    if dims is not None:
        struct.pack_into(f"<{len(dims)}h", b, DIM_OFFSET, *dims)
    if pixdim is not None:
        struct.pack_into(f"<{len(pixdim)}f", b, PIXDIM_OFFSET + 4, *pixdim)
    if datatype is not None:
        struct.pack_into("<h", b, DATATYPE_OFFSET, datatype)
    if vox_offset is not None:
        struct.pack_into("<f", b, VOX_OFFSET_OFFSET, vox_offset)
    return bytes(b)


def write_nifti(path: Path, raw: bytes) -> Path:
    """Write ``raw`` NIfTI bytes, gzip-compressed when ``path`` ends with ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def ct_array(shape=(16, 12, 8), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 400, size=shape).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# checks on outputs
# ---------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (mtime_ns, sha256)}`` of every file under ``folder`` (empty when it is absent)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def temp_files(folder: Path) -> list[Path]:
    """Temporaries of :func:`rrcunet.io.atomic_path` (``.<name>.XXXX.part<suffix>``) left under ``folder``."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if ".part" in p.name)


def assert_whole(folder: Path) -> int:
    """Every output under ``folder`` is whole: NIfTI loads (header and voxels), JSON parses,
    safetensors and DICOM files read. Returns the number of files checked."""
    import json

    import nibabel as nib
    import pydicom
    from safetensors import safe_open

    n = 0
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file() or ".part" in p.name:
            continue
        name = p.name.lower()
        if name.endswith((".nii.gz", ".nii")):
            np.asarray(nib.load(str(p)).dataobj)  # decompresses and reads every voxel
        elif name.endswith(".json"):
            json.loads(p.read_text(encoding="utf-8"))
        elif name.endswith(".safetensors"):
            with safe_open(str(p), framework="pt") as fh:
                for k in fh.keys():
                    fh.get_tensor(k)
        elif name.endswith(".dcm"):
            pydicom.dcmread(p)
        else:
            continue
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# a tiny model file
# ---------------------------------------------------------------------------------------------
TINY_KW = {"base_filters": 2, "levels": 2, "norm_groups": 1}


def tiny_model(path: Path, *, seed: int = 0) -> Path:
    """An RRc-UNet 3D with 2 base filters (a few hundred weights) saved as an rrcunet model file."""
    import torch

    from rrcunet.models import build_model
    from rrcunet.preprocessing import PreprocessConfig
    from rrcunet.models.model_file import save_model

    torch.manual_seed(seed)
    net = build_model("rrcunet", **TINY_KW)
    return save_model(path, net, model_name="rrcunet", model_kwargs=dict(TINY_KW),
                      preprocess_config=PreprocessConfig(target_shape=(32, 32, 16)))


# ---------------------------------------------------------------------------------------------
# a pickle payload
# ---------------------------------------------------------------------------------------------
class SystemPayload:
    """Unpickling this object runs ``touch <marker>`` through :func:`os.system`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def write_pickle_payload(path: Path, marker: Path, kind: str = "pickle") -> Path:
    """A "checkpoint" whose loading with pickle / ``torch.load(weights_only=False)`` creates ``marker``.

    ``kind``: ``"pickle"`` (a raw pickle stream) or ``"torch_save"`` (a ``torch.save`` zip archive
    holding a state dict plus the payload, i.e. a typical malicious ``.pt``/``.ckpt``).
    """
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}, "payload": SystemPayload(marker)}))
    elif kind == "torch_save":
        import torch

        torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": SystemPayload(marker)}, path)
    else:
        raise ValueError(kind)
    return path


# ---------------------------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------------------------
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    # this checkout's src first, so the subprocess tests the code under test, not an installed copy
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env


def run_rrcunet(args: list[str], *, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m rrcunet ARGS`` in a fresh interpreter; text stdout/stderr captured."""
    return subprocess.run([sys.executable, "-m", "rrcunet", *map(str, args)], env=subprocess_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_python(code: str, *args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a fresh interpreter; text stdout/stderr captured."""
    return subprocess.run([sys.executable, "-c", code, *args], env=subprocess_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
