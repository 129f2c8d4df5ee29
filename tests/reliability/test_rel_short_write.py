"""A write that comes up short (a file-size limit, a full disk) fails the command; nothing truncated is
renamed into place or marked complete, and a rerun with room completes. Tested for real with
``ulimit -f`` in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.reliability.rel_helpers import chest_ct, subprocess_env, tiny_model

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for ulimit -f")


def _limited(kb: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = " ".join([f"ulimit -f {kb};", sys.executable, "-m", "rrcunet", *args])
    return subprocess.run(["bash", "-c", command], env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_write_volume_refuses_a_truncated_file(tmp_path):
    script = tmp_path / "write.py"
    script.write_text("import numpy as np, sys\n"
                      "from rrcunet.io import Geometry, Volume, write_volume\n"
                      "g = Geometry((96, 96, 48), (1.0, 1.0, 1.0))\n"
                      "a = np.random.default_rng(0).normal(size=g.shape).astype(np.float32)\n"
                      "write_volume(Volume(a, g, 'image'), sys.argv[1])\n")
    out = tmp_path / "out" / "x.nii.gz"
    proc = subprocess.run(["bash", "-c", f"ulimit -f 100; {sys.executable} {script} {out}"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "cannot be read back whole" in proc.stderr, proc.stderr[-500:]
    assert not list(out.parent.iterdir())  # nothing renamed into place, no temporary left


def test_predict_under_a_file_size_limit_fails_and_a_rerun_completes(tmp_path):
    from rrcunet.io import write_volume

    write_volume(chest_ct(0), tmp_path / "in" / "case.mha")
    model = tiny_model(tmp_path / "m.safetensors")
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model),
            "--save-probabilities", "--no-progress", "--device", "cpu"]
    limited = _limited(20, *args)
    assert limited.returncode == 3, limited.stdout + limited.stderr[-800:]
    assert "cannot be read back whole" in limited.stderr or "File too large" in limited.stderr
    doc = json.loads((tmp_path / "out" / "case.json").read_text())
    assert doc.get("status") == "started"  # not complete: the rerun redoes it
    rerun = _limited(1_000_000, *args)
    assert rerun.returncode == 0 and "1 predicted" in rerun.stdout, rerun.stderr[-800:]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root with CAP_SYS_ADMIN only; skipped with the reason elsewhere), unmounted after."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a real full disk ({proc.stderr.strip() or 'not permitted'}); "
                    "the ulimit -f tests above cover the same write path")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_predict_onto_a_full_disk_fails_and_a_rerun_with_room_completes(tmp_path, small_disk):
    from rrcunet.io import write_volume

    write_volume(chest_ct(0), tmp_path / "in" / "case.nii.gz")
    model = tiny_model(tmp_path / "m.safetensors")
    out = small_disk / "out"
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leaves ~64 KiB: the JSON fits, the outputs do not
    args = [sys.executable, "-m", "rrcunet", "predict", str(tmp_path / "in"), "-o", str(out), "--model", str(model),
            "--save-probabilities", "--no-progress", "--device", "cpu"]
    full = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode != 0, full.stdout
    assert "Traceback" not in full.stderr and ("No space left" in full.stderr or "read back whole" in full.stderr), \
        full.stderr[-800:]
    doc_path = out / "case.json"
    assert not doc_path.exists() or json.loads(doc_path.read_text()).get("status") != "done"
    if doc_path.exists():
        assert json.loads(doc_path.read_text()).get("status") in ("started", None)
    filler.unlink()  # room again
    rerun = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "1 predicted" in rerun.stdout, rerun.stderr[-800:]
    assert not [p.name for p in out.iterdir() if ".part" in p.name]


def test_convert_onto_a_full_disk_fails_and_a_rerun_with_room_completes(tmp_path, small_disk):
    from rrcunet.io import read_image, write_ct_series

    write_ct_series(chest_ct(0), tmp_path / "dicom" / "P1", patient_id="P1")
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (1024 * 1024 - 16 * 1024))
    out = small_disk / "converted"  # convert's -o is a folder
    args = [sys.executable, "-m", "rrcunet", "convert", str(tmp_path / "dicom" / "P1"), "-o", str(out)]
    full = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode != 0 and "Traceback" not in full.stderr, full.stderr[-800:]
    assert "disk is probably full" in full.stderr and "run the command again" in full.stderr
    # nothing truncated left, no temporary; at most convert's own "started" record, for the rerun
    assert [p.name for p in out.rglob("*") if p.is_file()] in ([], [".rrcunet-convert.json"])
    filler.unlink()
    rerun = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-800:]
    (image,) = [p for p in out.rglob("*.nii.gz") if p.is_file()]
    assert read_image(image).shape == chest_ct(0).shape


def test_a_seg_under_a_file_size_limit_is_one_clean_line(tmp_path):
    """pydicom wraps the OSError of a short write in its own text with a traceback; the user sees one line."""
    from rrcunet.io import write_ct_series

    write_ct_series(chest_ct(0), tmp_path / "in" / "P1", patient_id="P1")
    model = tiny_model(tmp_path / "m.safetensors")
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model), "--no-progress",
            "--device", "cpu"]
    limited = _limited(20, *args)  # the NIfTI mask (< 1 KB) fits, the SEG (~30 KB) does not
    assert limited.returncode == 3, limited.stdout + limited.stderr[-800:]
    (line,) = [ln for ln in limited.stderr.splitlines() if ln.startswith("rrcunet predict:")]
    assert "P1_seg.dcm: could not be written (File too large)" in line and "run the command again" in line
    assert "Traceback" not in limited.stderr and "With tag" not in limited.stderr
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".dcm") or ".part" in p.name]
