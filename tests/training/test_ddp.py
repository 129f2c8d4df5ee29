"""DDP on 2 CPU processes (gloo): identical weights on both ranks, and the same result as one
process with the same effective batch; validation metrics pooled across ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrcunet.models import build_model
from rrcunet.training import load_config, train
from tests.training.conftest import tiny_overrides, write_tiny_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# A known flake, not understood: on the 2-core build machine under load, 3 of about 45 launches
# failed (2026-11-29). The one whose rank logs were kept had aborted in rank 0 with the C++
# runtime's message below, after both ranks had trained and saved their weights and before rank 0
# wrote its validation result; the abort comes from C++ (PyTorch's gloo process group), not from
# a Python exception. A launch that dies with that message is retried once; any other failure,
# or the same abort twice, fails the test.
_RUNTIME_ABORT = "terminate called without an active exception"


def _torchrun(tmp_path: Path, overrides: list[str], env: dict[str, str]) -> Path:
    """Run the worker on 2 processes; return its run folder. Each rank's stdout/stderr go to files
    (torchrun --redirects 3), so that a failing rank's message is shown and not buried under
    torchrun's summary. --standalone lets torchrun pick a free rendezvous port itself."""
    for attempt in (1, 2):
        run, logs = tmp_path / f"ddp{attempt}", tmp_path / f"logs{attempt}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--log-dir", str(logs), "--redirects", "3", str(WORKER), str(run), *overrides]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            return run
        rank_logs = "\n".join(f"--- {f}\n{f.read_text()[-3000:]}" for f in sorted(logs.rglob("*.log")))
        if attempt == 2 or _RUNTIME_ABORT not in rank_logs:
            pytest.fail(f"torchrun exited with {proc.returncode} (attempt {attempt})\n{rank_logs}\n"
                        f"--- torchrun\n{proc.stderr[-2000:]}")
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(tmp_path):
    # 4 training cases (2 per rank), 2 validation cases (1 per rank); deterministic: no dropout,
    # no augmentation; K = all, so both runs make one step per epoch on the mean loss of all 4.
    # Adam with eps=1 (>> sqrt of the gradient moments) steps ≈ lr × gradient: linear in the
    # gradient, so a wrong reduction (a sum instead of a mean, a missed rank) changes the weights,
    # and float noise in near-zero gradients is not amplified to ±lr as with the default eps.
    data = write_tiny_dataset(tmp_path / "data", n=6, n_val=2, seed=3)
    overrides = tiny_overrides(data, epochs=2, extra=(
        "augment.enabled=false", "model.dropout=0.0", "schedule.accumulate=all",
        "optim.lr=1.0", "optim.eps=1.0", "optim.weight_decay=0"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(str(Path(__file__).resolve().parents[2] / d) for d in ("src", ".")))
    ddp_run = _torchrun(tmp_path, overrides, env)

    r0, r1 = load_file(str(ddp_run / "rank0.safetensors")), load_file(str(ddp_run / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP keeps the replicas identical

    torch.manual_seed(0)
    init = build_model("rrcunet", base_filters=4, levels=3, norm_groups=2, dropout=0.0).state_dict()
    single = train(load_config(None, overrides), tmp_path / "single")
    ref = {k: v.detach() for k, v in single.model.state_dict().items()}
    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref)
    assert moved > 0.05  # the weights did move, by far more than the tolerance below
    for k in ref:
        torch.testing.assert_close(r0[k], ref[k], rtol=0, atol=1e-5)

    ddp_rows, single_rows = _rows(ddp_run), _rows(tmp_path / "single")
    assert [r["epoch"] for r in ddp_rows] == ["1", "2"]
    assert not (ddp_run / "checkpoints" / "rank1").exists()
    for a, b in zip(ddp_rows, single_rows):
        for key in ("train_loss", "val_loss", "val_dice_lung", "val_dice_tumour", "val_dice_tumour_pooled"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5), key
    assert float(single_rows[1]["train_loss"]) != float(single_rows[0]["train_loss"])  # it did train

    # Validation sums pooled over ranks (rank 0: tumour Dice 1 and 2/3; rank 1: Dice 0), worked by
    # hand: mean over the 3 cases 5/9 (a mean of per-rank means would give 5/12); pooled over
    # voxels TP=3, FP=1, FN=2 -> 6/9; lung absent everywhere -> Dice 1 per case.
    reduced = json.loads((ddp_run / "reduce.json").read_text())
    assert reduced["val_dice_tumour"] == pytest.approx(5 / 9)
    assert reduced["val_dice_tumour_pooled"] == pytest.approx(6 / 9)
    assert reduced["val_dice_lung"] == pytest.approx(1.0)
