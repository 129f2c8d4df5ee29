"""Cohorts (issue 21): prediction split into parts balanced by slices, and `rrcunet cohort`'s table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.errors import ConfigError, InputError
from rrcunet.inference import InferenceConfig, Predictor
from rrcunet.inference.batch import (
    CaseInput,
    discover_cases,
    part_from_environment,
    select_part,
    split_parts,
)
from rrcunet.inference.cohort import gather_cohort, write_cohort
from rrcunet.io import Geometry, Volume, write_ct_series, write_volume

CPU = InferenceConfig(device="cpu", bf16=False)


def _cases(slices: list[int]) -> list[CaseInput]:
    return [CaseInput(f"c{i:02d}", Path(f"/x/c{i:02d}"), True, None, n) for i, n in enumerate(slices)]


def test_parts_are_disjoint_complete_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    slices = [int(n) for n in rng.integers(40, 700, size=37)]
    cases = _cases(slices)
    parts = split_parts(cases, 4)
    ids = [c.case_id for part in parts for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
    totals = [sum(c.n_slices for c in part) for part in parts]
    assert max(totals) - min(totals) <= max(slices)  # greedy largest-first bound
    assert max(totals) <= 1.1 * sum(slices) / 4
    # by slices, not by count: one huge case gets a part of its own
    big = _cases([1000, 100, 100, 100, 100])
    assert [c.case_id for c in select_part(big, 2, 0)] == ["c00"]
    # which case goes where does not depend on the order of discovery; each part keeps that order
    reordered = split_parts(list(reversed(cases)), 4)
    assert [sorted(c.case_id for c in p) for p in reordered] == [sorted(c.case_id for c in p) for p in parts]
    assert all([c.case_id for c in p] == sorted(c.case_id for c in p) for p in parts)


@pytest.mark.parametrize(("num_parts", "part_id", "match"), [(0, 0, "--num-parts"), (2, 2, "--part-id"),
                                                            (2, -1, "--part-id")])
def test_bad_parts_are_one_error(num_parts, part_id, match):
    with pytest.raises(InputError, match=match):
        select_part(_cases([10, 20]), num_parts, part_id)


def test_the_part_comes_from_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert part_from_environment(None, None) == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert part_from_environment(None, None) == (4, 3)
    assert part_from_environment(2, 0) == (2, 0)  # the options win
    with pytest.raises(InputError, match="go together"):
        part_from_environment(2, None)


def test_dicom_cases_know_their_slices_and_images_are_read_from_the_header(tmp_path):
    arr = np.full((8, 8, 5), -1000, np.int16)
    vol = Volume(arr, Geometry((8, 8, 5), (1.0, 1.0, 2.0)), "image")
    write_ct_series(vol, tmp_path / "P1" / "ct", patient_id="P1")
    write_volume(Volume(np.zeros((8, 8, 9), np.int16), Geometry((8, 8, 9), (1.0, 1.0, 2.0)), "image"),
                 tmp_path / "img.nii.gz")
    from rrcunet.inference.batch import case_slices

    cases = {c.case_id: c for c in discover_cases([tmp_path])}
    assert cases["P1"].n_slices == 5 and case_slices(cases["P1"]) == 5
    assert cases["img"].n_slices is None and case_slices(cases["img"]) == 9


@pytest.fixture(scope="module")
def cohort_inputs(tmp_path_factory, chest_case):
    ct = chest_case[0]
    root = tmp_path_factory.mktemp("cohort")
    for i in range(4):
        write_volume(ct.with_array(np.roll(ct.array, i, axis=0).copy()), root / f"s{i}.nii.gz")
    (root / "broken.nii.gz").write_bytes(b"not a nifti")
    return root


def test_two_parts_share_one_folder_and_the_table_lists_every_case(tiny_model, cohort_inputs, tmp_path):
    out = tmp_path / "out"
    predictor = Predictor.from_file(tiny_model, config=CPU)
    reports = [predictor.predict_paths([cohort_inputs], out, progress=False, num_parts=2, part_id=k) for k in (0, 1)]
    ids = [[o.case_id for o in r.outcomes] for r in reports]
    assert sorted(ids[0] + ids[1]) == ["broken", "s0", "s1", "s2", "s3"] and not set(ids[0]) & set(ids[1])
    assert not list(out.glob(".rrcunet-*.lock"))
    failed = [o for r in reports for o in r.failed]
    assert [o.case_id for o in failed] == ["broken"] and (out / "broken.failed.json").is_file()

    cohort = gather_cohort(out, [cohort_inputs])
    by_case = {r["case"]: r for r in cohort.rows}
    assert [by_case[c]["status"] for c in ("s0", "s1", "s2", "s3", "broken")] == ["done"] * 4 + ["failed"]
    assert by_case["broken"]["error"] and by_case["s0"]["total_s"] > 0 and by_case["s0"]["lung_region_ml"] > 0
    assert cohort.expected == 5 and "4 of 5 case(s) done, 1 failed" in cohort.headline()
    csv_path, html_path = write_cohort(cohort)
    rows = list(csv.DictReader(csv_path.open()))
    assert {r["case"]: r["status"] for r in rows}["broken"] == "failed"
    assert "broken" in html_path.read_text() and "<table>" in html_path.read_text()

    # a case being written (or a crashed part's) shows as "started"; the failure record goes once it succeeds
    (out / "s3.json").write_text('{"schema": "rrcunet-prediction", "schema_version": 1, "case": "s3", '
                                 '"status": "started"}')
    assert {r["case"]: r["status"] for r in gather_cohort(out).rows}["s3"] == "started"
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "broken.nii.gz").write_bytes((cohort_inputs / "s0.nii.gz").read_bytes())
    assert predictor.predict_paths([fixed], out, progress=False).done
    assert not (out / "broken.failed.json").exists()
    assert {r["case"]: r["status"] for r in gather_cohort(out).rows}["broken"] == "done"


def test_cohort_command(tiny_model, cohort_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(cohort_inputs / "s0.nii.gz"), "-o", str(out), "--model", str(tiny_model),
                 "--device", "cpu", "--fp32", "--num-parts", "1", "--part-id", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["cohort", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 case(s) done, 0 failed" in text and (out / "cohort.csv").is_file()
    assert main(["cohort", str(tmp_path / "missing")]) != 0


@pytest.fixture(scope="module")
def forty(tmp_path_factory, chest_case):
    """40 small cases (the test chest, shifted) and their sequential prediction."""
    ct = chest_case[0]
    root = tmp_path_factory.mktemp("forty")
    for i in range(40):
        write_volume(ct.with_array(np.roll(ct.array, (i % 7) - 3, axis=i % 2).copy()), root / f"c{i:02d}.nii.gz")
    return root


def _segs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_seg.nii.gz"))}


@pytest.fixture(scope="module")
def sequential(tiny_model, forty, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    Predictor.from_file(tiny_model, config=CPU).predict_paths([forty], out, progress=False, workers=0)
    return _segs(out)


def test_forty_cases_as_two_parts_equal_one_sequential_run_byte_for_byte(tiny_model, forty, sequential, tmp_path):
    """Two parts, the first overlapped (a worker thread prepares, a thread writes), the second not."""
    predictor = Predictor.from_file(tiny_model, config=CPU)
    reports = [predictor.predict_paths([forty], tmp_path, progress=False, num_parts=2, part_id=k, workers=1 - k)
               for k in (0, 1)]
    assert all(not r.failed for r in reports) and sum(len(r.done) for r in reports) == 40
    assert len(sequential) == 40 and _segs(tmp_path) == sequential


def test_worker_processes_give_the_same_masks_as_threads(tiny_model, forty, sequential, tmp_path):
    predictor = Predictor.from_file(tiny_model, config=CPU)
    report = predictor.predict_paths([forty], tmp_path, progress=False, num_parts=8, part_id=3, workers=1,
                                     worker_kind="process")
    assert len(report.done) == 5 and not report.failed
    got = _segs(tmp_path)
    assert got == {name: sequential[name] for name in got}
    with pytest.raises(ConfigError, match="worker kind"):
        predictor.predict_paths([forty], tmp_path / "x", progress=False, num_parts=8, part_id=4, workers=1,
                                worker_kind="fork", overwrite=True)


def _cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "rrcunet", *args]


def test_a_part_killed_with_sigkill_resumes_and_nothing_is_corrupt(tiny_model, forty, sequential, tmp_path):
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    args = ("predict", str(forty), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "--fp32",
            "--num-parts", "2", "--part-id", "0", "--workers", "1", "--no-progress")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*_seg.nii.gz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("*_seg.nii.gz"))) < 20, "the part finished before it could be killed"
    again = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert subprocess.run(_cli(*args[:-7], "--num-parts", "2", "--part-id", "1", "--no-progress"), env=env,
                          capture_output=True, timeout=300).returncode == 0
    assert _segs(out) == sequential
    assert not [p.name for p in out.iterdir() if ".part" in p.name or p.name.startswith(".rrcunet-")]


def test_torchrun_runs_two_prediction_processes_on_one_cohort(tiny_model, forty, sequential, tmp_path):
    import os
    import subprocess
    import sys

    some = tmp_path / "in"
    some.mkdir()
    for name in ("c00.nii.gz", "c01.nii.gz", "c02.nii.gz"):
        (some / name).write_bytes((forty / name).read_bytes())
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "-m", "rrcunet", "predict", str(some), "-o", str(out), "--model", str(tiny_model),
                          "--device", "cpu", "--fp32", "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("predicted,") == 2  # one summary line per process
    got = _segs(out)
    assert got == {k: sequential[k] for k in got} and len(got) == 3
