"""`rrcunet train` output: progress bars only on a terminal, one log line per epoch otherwise, and
--quiet for warnings only (train.log keeps every line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.training.conftest import tiny_overrides, write_tiny_dataset

REPO = Path(__file__).resolve().parents[2]


def _train(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    data = write_tiny_dataset(tmp_path / "data", n=3, n_val=1)
    overrides = [o for o in tiny_overrides(data) if o != "runtime.progress=false"]  # bars asked for
    return subprocess.run([sys.executable, "-m", "rrcunet", "train", "-o", str(tmp_path / "run"), *extra, *overrides],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_a_log_file_gets_epoch_lines_not_progress_bars(tmp_path):
    proc = _train(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum("epoch 1/2" in ln for ln in lines) == 1 and sum("epoch 2/2" in ln for ln in lines) == 1
    assert not [ln for ln in lines if "\r" in ln or "it/s" in ln or "case/s" in ln], lines  # no tqdm bar
    assert len(lines) < 20, lines


def test_quiet_keeps_the_terminal_to_warnings_and_the_log_file_whole(tmp_path):
    proc = _train(tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "INFO" not in proc.stderr
    assert "epoch 2/2" in (tmp_path / "run" / "train.log").read_text()
