"""``rrcunet compare`` on phantom follow-up pairs whose ground truth stands in for the predictions
(so nothing here depends on a trained model), plus its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import InputError
from rrcunet.io import read_image, write_volume
from rrcunet.response import RegistrationError, compare_scans
from rrcunet.response.compare import check_same_patient, lesion_map, load_time_point
from rrcunet.synthetic.dataset import write_phantom_dataset
from rrcunet.response.truth import add_follow_up_truth


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("followup")
    write_phantom_dataset(root, 5, seed=11, follow_up=True, val_fraction=0.0)
    return root, add_follow_up_truth(root)


def truth_prediction(root: Path, case_id: str, out: Path) -> Path:
    """A prediction folder whose segmentation is the case's ground truth (schema of ``rrcunet predict``)."""
    out.mkdir(parents=True, exist_ok=True)
    labels = read_image(root / "labels" / f"{case_id}.nii.gz", kind="label")
    write_volume(labels, out / f"{case_id}_seg.nii.gz")
    doc = {"schema": "rrcunet-prediction", "schema_version": 1, "case": case_id,
           "input": {"path": str(root / "images" / f"{case_id}.nii.gz")},
           "outputs": {"segmentation": f"{case_id}_seg.nii.gz"}, "tumour": {}, "quality": {"flags": []}}
    (out / f"{case_id}.json").write_text(json.dumps(doc))
    return out


def test_follow_up_truth_in_manifest(pairs):
    root, manifest = pairs
    follow = [c for c in manifest.cases if c.case_id.endswith("_followup")]
    assert len(follow) == 5 and all(c.patient == c.source["follow_up_of"] for c in follow)
    scenarios = [c.source["scenario"] for c in follow]
    assert scenarios == ["shrinking", "growing", "stable", "new lesion", "slight growth"]
    new = follow[3].source["truth"]
    assert new["recist"]["category"] == "PD" and any(les["status"] == "new" for les in new["lesions"])
    for case in follow:
        for les in case.source["truth"]["lesions"]:
            assert les["volume_baseline_ml"] >= 0 and les["volume_followup_ml"] >= 0
    assert DatasetManifest.load(root).cases[1].source["truth"] == follow[0].source["truth"]


@pytest.mark.parametrize("index", [0, 1, 3])
def test_compare_recovers_the_truth_from_true_masks(pairs, tmp_path, index):
    root, manifest = pairs
    base_id = f"phantom_{index:04d}"
    truth = next(c for c in manifest.cases if c.case_id == f"{base_id}_followup").source["truth"]
    b = truth_prediction(root, base_id, tmp_path / "b")
    f = truth_prediction(root, f"{base_id}_followup", tmp_path / "f")
    doc = compare_scans(b, f, tmp_path / "out")
    assert doc["registration"]["lung_dice_after"] > 0.8
    assert doc["recist"]["category"] == truth["recist"]["category"]
    assert doc["volumetric"]["category"] == truth["volumetric"]["category"]
    assert sorted(les["status"] for les in doc["lesions"]) == sorted(les["status"] for les in truth["lesions"])
    got = sorted((les["volume_baseline_ml"], les["volume_followup_ml"]) for les in doc["lesions"])
    want = sorted((les["volume_baseline_ml"], les["volume_followup_ml"]) for les in truth["lesions"])
    assert got == pytest.approx(want, rel=1e-6)  # volumes measured on each scan's own grid
    out = tmp_path / "out"
    assert json.loads((out / "response.json").read_text())["schema"] == "rrcunet-response"
    assert (out / "response.html").is_file() and (out / "figures" / "lesion_1.png").is_file()
    moved = read_image(out / "followup_on_baseline_seg.nii.gz", kind="label")
    assert moved.geometry.same_grid(read_image(root / "labels" / f"{base_id}.nii.gz", kind="label").geometry)


def test_registration_failure_is_an_error(pairs, tmp_path):
    root, _ = pairs
    b = truth_prediction(root, "phantom_0000", tmp_path / "b")
    f = truth_prediction(root, "phantom_0000_followup", tmp_path / "f")
    with pytest.raises(RegistrationError, match="Dice"):
        compare_scans(b, f, tmp_path / "out", min_lung_dice=0.999)
    # a follow-up with almost no lung (the scan of another body region) is refused before registering
    labels = read_image(f / "phantom_0000_followup_seg.nii.gz", kind="label")
    arr = np.asarray(labels.array).copy()
    arr[:, :, 3:] = 0
    write_volume(labels.with_array(arr), f / "phantom_0000_followup_seg.nii.gz", overwrite=True)
    with pytest.raises(RegistrationError, match="is it a chest CT"):
        compare_scans(b, f, tmp_path / "out2")
    assert not (tmp_path / "out2" / "response.json").exists()


def test_different_patients_refused_unless_forced(pairs, tmp_path):
    root, _ = pairs
    base = load_time_point(truth_prediction(root, "phantom_0001", tmp_path / "b"), "baseline", tmp_path)
    follow = load_time_point(truth_prediction(root, "phantom_0001_followup", tmp_path / "f"), "followup", tmp_path)
    assert "not checked" in check_same_patient(base, follow)
    base.patient_id, follow.patient_id = "LUNG1-001", "LUNG1-002"
    with pytest.raises(InputError, match="--force"):
        check_same_patient(base, follow)
    assert "differ" in check_same_patient(base, follow, force=True)


def test_prediction_folder_with_two_cases_is_refused(pairs, tmp_path):
    root, _ = pairs
    folder = truth_prediction(root, "phantom_0002", tmp_path / "two")
    truth_prediction(root, "phantom_0003", folder)
    with pytest.raises(InputError, match="2 cases"):
        load_time_point(folder, "baseline", tmp_path)


def test_lesion_map_numbers_lesions_largest_first():
    from rrcunet.io import Geometry, Volume

    arr = np.zeros((20, 20, 10), np.uint8)
    arr[1:3, 1:3, 1:3] = 2      # 8 voxels
    arr[10:15, 10:15, 5:8] = 2  # 75 voxels
    lesions, lmap = lesion_map(Volume(arr, Geometry(arr.shape, (1.0, 1.0, 2.0)), "label"))
    assert [les.n_voxels for les in lesions] == [75, 8]
    assert np.count_nonzero(lmap == 1) == 75 and np.count_nonzero(lmap == 2) == 8


def test_compare_command_prints_the_response(pairs, tmp_path, capsys):
    from rrcunet.cli.main import main

    root, manifest = pairs
    truth = next(c for c in manifest.cases if c.case_id == "phantom_0001_followup").source["truth"]
    b = truth_prediction(root, "phantom_0001", tmp_path / "b")
    f = truth_prediction(root, "phantom_0001_followup", tmp_path / "f")
    assert main(["compare", str(b), str(f), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"RECIST 1.1: {truth['recist']['category']}" in out and "response.json" in out
    assert main(["compare", str(b), str(tmp_path / "missing"), "-o", str(tmp_path / "out2")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
