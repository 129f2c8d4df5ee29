"""A run killed with SIGKILL at a random moment leaves no corrupt file, and ``--resume`` finishes
it with the right epochs and the same weights as a run that was never interrupted."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rrcunet.training import load_config, train
from rrcunet.models.model_file import load_model
from rrcunet.training.checkpoint import load_checkpoint
from tests.training.conftest import tiny_overrides

EPOCHS = 6


def _completed(run: Path) -> int:
    try:
        return load_checkpoint(run / "checkpoints" / "last.safetensors").epoch
    except Exception:
        return 0


def _assert_nothing_corrupt(run: Path, *, exact: bool) -> None:
    for path in run.rglob("*.safetensors"):
        if path.name.startswith("."):  # a temporary of a write the kill interrupted, never a final name
            continue
        if path.name == "last.safetensors":
            load_checkpoint(path)
        else:
            load_model(path)
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    # metrics.csv is written after the checkpoint, from its history: a kill between the two leaves
    # it one epoch behind (never ahead); a resume rewrites it from the checkpoint.
    completed = _completed(run)
    assert len(rows) == completed if exact else completed - 1 <= len(rows) <= completed


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tiny_dataset, tmp_path):
    overrides = tiny_overrides(tiny_dataset, epochs=EPOCHS, extra=("schedule.accumulate=1", "model.dropout=0.1"))
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "rrcunet", "train", "-o", str(run), *overrides]
    log = open(tmp_path / "killed.log", "wb")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while _completed(run) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + \
            (tmp_path / "killed.log").read_text()[-2000:]
        t2 = time.monotonic()
        while _completed(run) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        epoch_s = time.monotonic() - t2
        time.sleep(epoch_s * 0.4)  # well inside epoch 4
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    killed_at = _completed(run)
    assert proc.returncode == -signal.SIGKILL and 3 <= killed_at < EPOCHS
    _assert_nothing_corrupt(run, exact=False)

    resumed = subprocess.run([sys.executable, "-m", "rrcunet", "train", "--resume", str(run)], env=env,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{EPOCHS} epochs" in resumed.stdout
    _assert_nothing_corrupt(run, exact=True)
    assert _completed(run) == EPOCHS
    assert not list(run.rglob(".*.part*"))  # temporaries of the interrupted write were removed

    straight = train(load_config(None, overrides), tmp_path / "straight")
    assert straight.epochs_completed == EPOCHS
    resumed_model, _ = load_model(run / "checkpoints" / "last.safetensors")
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
