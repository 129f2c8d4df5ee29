"""Crash safety and non-destructive outputs.

* A ``rrcunet predict`` or ``rrcunet import`` killed with SIGKILL (no clean-up code can run) leaves
  only whole files under their final names; running the same command again completes the job and
  keeps what was finished. (``rrcunet train`` killed mid-epoch and resumed: see
  tests/training/test_kill_resume.py, which also checks the weights equal an uninterrupted run.)
* Temporary files a kill leaves behind are never taken as inputs or outputs, and the rerun removes them.
* Outputs never replace inputs, and an existing output is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rrcunet.cli.main import main
from tests.reliability.rel_helpers import (
    assert_whole,
    chest_ct,
    snapshot,
    subprocess_env,
    temp_files,
    tiny_model,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PREDICT = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _cases(folder: Path, n: int) -> Path:
    from rrcunet.io import write_volume

    for i in range(n):
        write_volume(chest_ct(i), folder / f"case{i}.nii.gz")
    return folder


def _run_until(cmd: list[str], ready, *, deadline_s: float = 180.0) -> subprocess.Popen:
    """Start ``python -m rrcunet CMD``; SIGKILL it as soon as ``ready()`` is true; return the process."""
    proc = subprocess.Popen([sys.executable, "-m", "rrcunet", *map(str, cmd)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        if proc.poll() is None and ready():
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    return proc


# ---------------------------------------------------------------------------------------------
# SIGKILL, then the same command again
# ---------------------------------------------------------------------------------------------
def _finished(out: Path) -> list[str]:
    """Cases whose finished ``<case>.json`` (written last, atomically) is in ``out``; temporaries are
    dot-files, and a JSON marked ``"status": "started"`` (written before the outputs) is a case in progress."""
    if not out.is_dir():
        return []
    done = []
    for p in out.glob("*.json"):
        if p.name.startswith("."):
            continue
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if doc.get("status") != "started":
            done.append(p.stem)
    return sorted(done)


@pytest.mark.slow
def test_sigkill_during_batch_predict_then_rerun(tmp_path, model):
    n = 8
    src = _cases(tmp_path / "in", n)
    out = tmp_path / "out"
    cmd = ["predict", src, "-o", out, "--model", model, *PREDICT]
    proc = _run_until(cmd, lambda: bool(_finished(out)))
    err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed ({proc.returncode}): {err}"
    # right after the kill: every final file is whole, every JSON lists outputs that exist
    done = _finished(out)
    assert 1 <= len(done) < n
    assert_whole(out)
    for case in done:
        outputs = json.loads((out / f"{case}.json").read_text())["outputs"]
        assert all((out / name).is_file() for name in outputs.values() if isinstance(name, str))
    left_by_kill = set(temp_files(out))
    finished = {c: (out / f"{c}.json").stat().st_mtime_ns for c in done}

    code = main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT])
    assert code == 0
    assert _finished(out) == [f"case{i}" for i in range(n)]
    assert all((out / f"{c}.json").stat().st_mtime_ns == t for c, t in finished.items()), "finished cases redone"
    assert_whole(out)
    assert set(temp_files(out)) <= left_by_kill  # the rerun leaves none of its own (stale ones: see below)


def _msd_source(root: Path, n: int) -> Path:
    from rrcunet.io import Volume, write_volume
    from tests.lungmask.chest import synthetic_chest

    training = []
    for i in range(1, n + 1):
        chest = synthetic_chest(spacing=(8.0, 8.0, 10.0), seed=i)
        tumour = (chest.tumour_wall | chest.tumour_mediastinum).astype(np.uint8)
        write_volume(chest.ct, root / "imagesTr" / f"lung_{i:03d}.nii.gz")
        write_volume(Volume(tumour, chest.ct.geometry, "label"), root / "labelsTr" / f"lung_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/lung_{i:03d}.nii.gz", "label": f"./labelsTr/lung_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "Lung", "labels": {"0": "background", "1": "cancer"},
                                                   "modality": {"0": "CT"}, "training": training}))
    return root


@pytest.mark.slow
def test_sigkill_during_import_then_rerun(tmp_path):
    from rrcunet.data.manifest import DatasetManifest

    n = 10
    src = _msd_source(tmp_path / "Task06_Lung", n)
    src_before = snapshot(src)
    out = tmp_path / "prepared"
    records = out / ".import" / "cases"
    proc = _run_until(["import", "msd", src, "-o", out], lambda: records.is_dir() and any(records.iterdir()))
    err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, f"the import ended before it could be killed: {err[-2000:]}"
    assert not (out / "manifest.json").exists()  # written last: a killed import has none
    assert_whole(out)
    left_by_kill = set(temp_files(out))
    completed = sorted(p.stem for p in records.glob("*.json") if not p.name.startswith("."))  # not temporaries
    kept = {p: p.stat().st_mtime_ns for c in completed for p in out.glob(f"*/{c}.nii.gz")}
    assert len(kept) == 3 * len(completed)

    code = main(["import", "msd", str(src), "-o", str(out)])
    assert code == 0
    manifest = DatasetManifest.load(out)
    assert len(manifest.cases) == n
    for case in manifest.cases:
        for rel in (case.image, case.label, case.lung):
            assert manifest.resolve(out, rel).is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), "completed cases were redone"
    report = json.loads((out / "import_report.json").read_text())
    assert sorted(report["reused"]) == completed and len(report["imported"]) == n - len(completed)
    assert_whole(out)
    assert set(temp_files(out)) <= left_by_kill
    assert snapshot(src) == src_before, "the import changed its source"


# ---------------------------------------------------------------------------------------------
# temporaries a kill leaves behind (planted, so the test does not depend on the kill's timing)
# ---------------------------------------------------------------------------------------------
def _plant(folder: Path, final_name: str) -> Path:
    """A half-written temporary as :func:`rrcunet.io.atomic_path` names it, for ``folder/final_name``."""
    stem, _, suffix = final_name.partition(".")
    p = folder / f".{stem}.rrcunet-999999999-k1ll3d.part.{suffix}"  # a process that is gone
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\x1f\x8b half-written")
    return p


def test_stale_temporaries_are_never_taken_as_predict_cases(tmp_path, model, capsys):
    src = _cases(tmp_path / "in", 1)
    stale_input = _plant(src, "case9.nii.gz")
    code = main(["predict", str(src), "-o", str(tmp_path / "out"), "--model", str(model), *PREDICT])
    assert code == 0 and "1 predicted" in capsys.readouterr().out
    assert stale_input.exists()  # inputs are never deleted, even stale-looking ones


def test_stale_temporaries_in_the_predict_output_are_removed_by_the_rerun(tmp_path, model):
    src = _cases(tmp_path / "in", 1)
    out = tmp_path / "out"
    stale = [_plant(out, "case0_seg.nii.gz"), _plant(out, "case0.json")]
    assert main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT]) == 0
    assert not any(p.exists() for p in stale)


def test_stale_temporaries_are_never_imported(tmp_path):
    from rrcunet.data.manifest import DatasetManifest

    src = _msd_source(tmp_path / "Task06_Lung", 1)
    out = tmp_path / "prepared"
    _plant(out / "images", "lung_009.nii.gz")
    assert main(["import", "msd", str(src), "-o", str(out), "--overwrite"]) == 0
    assert [c.case_id for c in DatasetManifest.load(out).cases] == ["lung_001"]


def test_stale_temporaries_in_the_import_output_are_removed_by_the_rerun(tmp_path):
    src = _msd_source(tmp_path / "Task06_Lung", 1)
    out = tmp_path / "prepared"
    assert main(["import", "msd", str(src), "-o", str(out)]) == 0
    stale = [_plant(out / "images", "lung_001.nii.gz"), _plant(out, "manifest.json")]
    assert main(["import", "msd", str(src), "-o", str(out)]) == 0
    assert not any(p.exists() for p in stale)


def test_stale_temporaries_in_a_run_are_removed_on_resume(tmp_path):
    from tests.training.conftest import tiny_overrides, write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", n=3, n_val=1)
    run = tmp_path / "run"
    overrides = tiny_overrides(data, epochs=1, extra=("model.base_filters=2", "model.levels=2", "model.norm_groups=1"))
    assert main(["train", "-o", str(run), *overrides]) == 0
    stale = [_plant(run / "checkpoints", "last.safetensors"), _plant(run, "best.safetensors"),
             _plant(run, "metrics.csv")]
    assert main(["train", "--resume", str(run), "schedule.epochs=2"]) == 0
    assert not any(p.exists() for p in stale)
    assert_whole(run)


# ---------------------------------------------------------------------------------------------
# outputs never replace inputs; existing outputs only with --overwrite
# ---------------------------------------------------------------------------------------------
def test_predict_into_the_input_folder_leaves_the_inputs_alone(tmp_path, model, capsys):
    src = _cases(tmp_path / "data", 2)
    before = snapshot(src)
    assert main(["predict", str(src), "-o", str(src), "--model", str(model), *PREDICT]) == 0
    after = snapshot(src)
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == ["case0.json", "case0_seg.nii.gz", "case1.json", "case1_seg.nii.gz"]
    capsys.readouterr()
    # run again: the outputs lying next to the inputs are not taken as new cases
    assert main(["predict", str(src), "-o", str(src), "--model", str(model), *PREDICT]) == 0
    assert "0 predicted, 2 already complete (skipped), 0 failed" in capsys.readouterr().out
    assert snapshot(src) == after


@pytest.mark.parametrize("theirs", ["case0_seg.nii.gz", "case0.json"])
def test_predict_never_replaces_a_file_it_did_not_write(tmp_path, model, theirs):
    """A folder holding ``case0.nii.gz`` and the user's own ``case0_seg.nii.gz`` (ground truth) or
    ``case0.json`` (a sidecar), predicted into itself without --overwrite: their file survives."""
    from rrcunet.io import Volume, write_volume

    src = _cases(tmp_path / "data", 1)
    if theirs.endswith(".json"):
        (src / theirs).write_text(json.dumps({"Modality": "CT", "ConvolutionKernel": "B31f"}))
    else:
        ct = chest_ct(0)
        write_volume(Volume(np.ones(ct.shape, np.uint8), ct.geometry, "label"), src / theirs)
    before = (src / theirs).read_bytes()
    main(["predict", str(src), "-o", str(src), "--model", str(model), *PREDICT])
    assert (src / theirs).read_bytes() == before


def test_complete_predictions_are_replaced_only_with_overwrite(tmp_path, model, capsys):
    src = _cases(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT]) == 0
    first = snapshot(out)
    capsys.readouterr()
    assert main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT]) == 0
    assert "1 already complete (skipped)" in capsys.readouterr().out and snapshot(out) == first
    assert main(["predict", str(src), "-o", str(out), "--model", str(model), "--overwrite", *PREDICT]) == 0
    second = snapshot(out)
    assert set(second) == set(first)
    assert all(second[k][0] != first[k][0] for k in first)  # every file rewritten
    assert not temp_files(out)


def test_convert_never_writes_over_its_input_even_with_overwrite(tmp_path, capsys):
    from rrcunet.io import write_volume

    ct = write_volume(chest_ct(0), tmp_path / "ct.nii.gz")
    before = snapshot(tmp_path)
    code = main(["convert", str(ct), "-o", str(tmp_path), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "is the same file as an input" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_convert_refuses_existing_outputs_without_overwrite(tmp_path, capsys):
    from rrcunet.io import write_volume

    ct = write_volume(chest_ct(0), tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ct.nii.gz").write_bytes(b"someone else's file")
    code = main(["convert", str(ct), "-o", str(out)])
    assert code == 2 and "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "ct.nii.gz").read_bytes() == b"someone else's file"
    assert main(["convert", str(ct), "-o", str(out), "--overwrite"]) == 0
    assert_whole(out) == 1 and not temp_files(out)


def test_lungmask_never_writes_over_its_input(tmp_path, capsys):
    from rrcunet.io import write_volume

    ct = write_volume(chest_ct(0), tmp_path / "ct.nii.gz")
    before = snapshot(tmp_path)
    code = main(["lungmask", str(ct), "-o", str(ct), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "is the same file as an input" in err
    assert snapshot(tmp_path) == before
