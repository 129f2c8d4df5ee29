"""In a batch ``rrcunet predict``, a bad case is reported (one line naming the input and the reason)
and skipped; every other case finishes with whole outputs; the exit status is 3.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rrcunet.cli.main import main
from tests.reliability.rel_helpers import (
    assert_whole,
    chest_ct,
    ct_array,
    nifti_bytes,
    run_rrcunet,
    snapshot,
    temp_files,
    tiny_model,
    write_nifti,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # highdicom's advisory warnings

PREDICT = ["--device", "cpu", "--no-progress"]

#: bad case id -> what its failure line must say
BAD_CASES = {
    "cut": "truncated",
    "flat": "found a 2D image",
    "air": "same value \\(-1000 HU\\).*constant image",
    "nan": "NaN or infinite voxels",
    "mr": "has modality MR; expected CT",
}
GOOD_CASES = ("good1", "good2", "P-DICOM")  # a DICOM case is named by its PatientID


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def make_batch(root: Path) -> Path:
    """``root/in``: 3 good cases (two NIfTI, one DICOM series) and the 5 bad ones of :data:`BAD_CASES`."""
    from rrcunet.io import Volume, write_ct_series, write_volume

    src = root / "in"
    write_volume(chest_ct(0), src / "good1.nii.gz")
    write_volume(chest_ct(1), src / "good2.nii.gz")
    write_ct_series(chest_ct(2), src / "dicom", patient_id="P-DICOM")
    raw = (src / "good1.nii.gz").read_bytes()
    (src / "cut.nii.gz").write_bytes(raw[: len(raw) // 3])
    write_nifti(src / "flat.nii.gz", nifti_bytes(ct_array()[:, :, 0]))
    air = chest_ct(0)
    write_volume(Volume(np.full(air.shape, -1000, np.int16), air.geometry), src / "air.nii.gz")
    a = chest_ct(0).array.astype(np.float32)
    a[5, 5, 5] = np.nan
    write_volume(chest_ct(0).with_array(a), src / "nan.nii.gz")
    write_ct_series(chest_ct(3), src / "mr", patient_id="P-MR")
    import pydicom

    for f in (src / "mr").iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    return src


def check_batch_outputs(out: Path, good: tuple[str, ...], bad: tuple[str, ...]) -> None:
    """Complete, whole outputs for every good case; nothing at all for a bad one; no temporaries."""
    from rrcunet.io import read_image

    names = {p.name for p in out.iterdir()}
    for case in good:
        assert {f"{case}_seg.nii.gz", f"{case}.json"} <= names, (case, sorted(names))
        doc = json.loads((out / f"{case}.json").read_text())
        assert all((out / n).is_file() for n in doc["outputs"].values() if isinstance(n, str))
        labels = read_image(out / f"{case}_seg.nii.gz", kind="label")
        assert set(np.unique(labels.array)) <= {0, 1, 2}
    assert "P-DICOM_seg.dcm" in names or "P-DICOM" not in good
    for case in bad:
        assert not [n for n in names if n == f"{case}.json" or n.startswith(f"{case}_")], (case, sorted(names))
    assert not temp_files(out)
    assert assert_whole(out) == len(names)


def test_bad_cases_are_reported_and_skipped_the_others_finish(tmp_path, model, capsys):
    src = make_batch(tmp_path)
    inputs_before = snapshot(src)
    out = tmp_path / "out"
    code = main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT])
    captured = capsys.readouterr()
    assert code == 3
    assert "Traceback" not in captured.err
    failures = [ln for ln in captured.err.splitlines() if ln.startswith("rrcunet predict: ")]
    assert len(failures) == len(BAD_CASES), captured.err
    for case, reason in BAD_CASES.items():
        (line,) = [ln for ln in failures if re.search(rf"/{case}(\.nii\.gz)?: ", ln)]
        assert re.search(reason, line), line
    assert f"{len(GOOD_CASES)} predicted, 0 already complete (skipped), {len(BAD_CASES)} failed" in captured.out
    check_batch_outputs(out, GOOD_CASES, tuple(BAD_CASES))
    assert snapshot(src) == inputs_before, "predict changed its inputs"

    # each failure is recorded for `rrcunet cohort`, with its reason
    records = {p.name[: -len(".failed.json")]: json.loads(p.read_text()) for p in out.glob("*.failed.json")}
    assert len(records) == len(BAD_CASES), sorted(records)
    assert all(r["status"] == "failed" and r["error"] for r in records.values())

    # the same command again: the good cases are complete and skipped, the bad ones retried and reported
    # (their failure records are written again)
    def outputs() -> dict:
        return {k: v for k, v in snapshot(out).items() if not k.endswith(".failed.json")}

    out_before = outputs()
    code = main(["predict", str(src), "-o", str(out), "--model", str(model), *PREDICT])
    captured = capsys.readouterr()
    assert code == 3
    assert f"0 predicted, {len(GOOD_CASES)} already complete (skipped), {len(BAD_CASES)} failed" in captured.out
    assert outputs() == out_before


@pytest.mark.slow
def test_batch_in_a_real_process_prints_no_traceback(tmp_path, model):
    """``python -m rrcunet predict`` on one good and three bad cases: exit 3, one line per bad case."""
    from rrcunet.io import write_volume

    src = tmp_path / "in"
    write_volume(chest_ct(0), src / "good1.nii.gz")
    raw = (src / "good1.nii.gz").read_bytes()
    (src / "cut.nii.gz").write_bytes(raw[: len(raw) // 3])
    write_nifti(src / "flat.nii.gz", nifti_bytes(ct_array()[:, :, 0]))
    write_nifti(src / "negdim.nii", nifti_bytes(ct_array())[:40] + b"\x03\x00\xf0\xff" + nifti_bytes(ct_array())[44:])
    out = tmp_path / "out"
    proc = run_rrcunet(["predict", src, "-o", out, "--model", model, *PREDICT])
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    for case in ("cut", "flat", "negdim"):
        assert re.search(rf"rrcunet predict: \S*/{case}\.nii(\.gz)?: ", proc.stderr), (case, proc.stderr)
    assert "1 predicted, 0 already complete (skipped), 3 failed" in proc.stdout
    check_batch_outputs(out, ("good1",), ("cut", "flat", "negdim"))


@pytest.mark.parametrize("hu", [
    -1000,
    -600,
])
def test_a_constant_image_is_reported_not_segmented(tmp_path, model, capsys, hu):
    """A volume of one value carries no anatomy: the case must fail with a message, not produce a mask.
    (Constant values in [0, 255] or >= 0 are refused by the reader: see the convert corpus.)"""
    from rrcunet.io import Volume, write_volume

    ct = chest_ct(0)
    write_volume(Volume(np.full(ct.shape, hu, np.int16), ct.geometry), tmp_path / "in" / "flat.nii.gz")
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(model), *PREDICT])
    err = capsys.readouterr().err
    assert code == 3, err
    assert re.search(r"flat.nii.gz: .*(empty|single value|constant)", err), err
    assert [p.name for p in out.iterdir()] == ["flat.failed.json"]  # only the failure's record
