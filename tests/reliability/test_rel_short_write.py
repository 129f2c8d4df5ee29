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
