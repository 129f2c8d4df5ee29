"""The evaluate pipeline (rrcunet.evaluation.evaluate) on hand-made predictions whose scores are
worked out by hand: pairing layouts, tables, histogram, figures, HTML, and refused inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from rrcunet.data.manifest import CaseEntry, DatasetManifest, Split
from rrcunet.errors import InputError
from rrcunet.evaluation.evaluate import evaluate_folder, pair_cases
from rrcunet.io import Geometry, Volume, write_volume

GEOM = Geometry((20, 20, 10), (1.0, 1.0, 2.0), origin=(-10.0, 5.0, 0.0))


def _gt() -> np.ndarray:
    lab = np.zeros(GEOM.shape, np.uint8)
    lab[2:18, 2:18, 1:9] = 1
    lab[5:9, 5:9, 3:6] = 2            # 48 tumour voxels
    return lab


def _ct() -> Volume:
    hu = np.where(_gt() == 1, -850, 40).astype(np.int16)
    hu[_gt() == 2] = 30
    return Volume(hu, GEOM, "image")


@pytest.fixture
def folders(tmp_path):
    """pred/, gt/, images/ with a perfect case and a half case (tumour: 32 of 48 voxels, no false positive)."""
    gt = _gt()
    half = gt.copy()
    half[5:9, 5:9, 5] = 1              # 16 tumour voxels predicted as lung
    for case, pred in (("perfect", gt), ("half", half)):
        write_volume(Volume(pred, GEOM, "label"), tmp_path / "pred" / f"{case}_seg.nii.gz")
        write_volume(Volume(gt, GEOM, "label"), tmp_path / "gt" / f"{case}.nii.gz")
        write_volume(_ct(), tmp_path / "images" / f"{case}.nii.gz")
    write_volume(Volume(gt, GEOM, "label"), tmp_path / "pred" / "orphan_seg.nii.gz")   # no ground truth
    return tmp_path


def test_hand_made_scores_tables_and_report(folders):
    out = folders / "report"
    rep = evaluate_folder(folders / "pred", folders / "gt", out, images_dir=folders / "images", progress=False)
    by_case = {m.case_id: m for m in rep.cases}
    assert set(by_case) == {"perfect", "half"} and rep.unmatched_predictions == ["orphan"]
    assert by_case["perfect"].tumour_dice == 1.0 and by_case["perfect"].tumour_hd95_mm == 0.0
    assert by_case["half"].tumour_dice == pytest.approx(2 * 32 / (48 + 32))          # 0.8
    assert by_case["half"].tumour_iou == pytest.approx(32 / 48)
    # Mean of cases (1 + 0.8) / 2; voxel-pooled TP 80, FP 0, FN 16: 160 / 176.
    assert rep.summary.mean_of_cases.tumour_dice == pytest.approx(0.9)
    assert rep.summary.voxel_pooled.tumour_dice == pytest.approx(160 / 176)

    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["case_id"] for r in rows] == ["half", "perfect"]  # sorted by prediction file name
    assert float(rows[0]["tumour_dice"]) == pytest.approx(0.8)
    summary = {r["metric"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert float(summary["Dice tumour"]["mean of cases"]) == pytest.approx(0.9)
    assert float(summary["Dice tumour"]["voxel-pooled"]) == pytest.approx(160 / 176)
    assert summary["HD95 tumour (mm)"]["voxel-pooled"] == "nan"
    assert {"Dice (macro over 3 labels)", "IoU (micro over 3 labels)", "F1 (micro over 3 labels)", "IoU tumour",
            "Surface Dice tumour"} <= set(summary)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["n_cases"] == 2 and doc["mean_of_cases"]["tumour_dice"] == pytest.approx(0.9)
    assert doc["dice_histogram"]["> 0.8"] == 1 and doc["dice_histogram"]["0.75–0.8"] == 1   # 0.8 is not > 0.8
    assert "| Dice tumour | 0.9000 | 0.9091 |" in (out / "summary.md").read_text()
    assert (out / "dice_histogram.png").read_bytes()[:4] == b"\x89PNG"
    for case in ("perfect", "half"):
        assert (out / "figures" / f"{case}_slices.png").is_file() and (out / "figures" / f"{case}_3d.png").is_file()
    html = (out / "index.html").read_text()
    assert "half_slices.png" in html and "dice_histogram.png" in html
    with pytest.raises(InputError, match="already holds a report"):
        evaluate_folder(folders / "pred", folders / "gt", out, progress=False)


def test_prepared_dataset_layout(folders):
    root = folders / "dataset"
    for case in ("perfect", "half"):
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (folders / "gt" / f"{case}.nii.gz").rename(root / "labels" / f"{case}.nii.gz")
        (root / "images").mkdir(exist_ok=True)
        (folders / "images" / f"{case}.nii.gz").rename(root / "images" / f"{case}.nii.gz")
    cases = tuple(CaseEntry(c, f"images/{c}.nii.gz", f"labels/{c}.nii.gz") for c in ("perfect", "half"))
    DatasetManifest(name="t", cases=cases, split=Split(seed=0, train=("perfect", "half"), val=())).save(root)
    pairs, unmatched, missing = pair_cases(folders / "pred", root)
    assert {p.case_id: (p.ground_truth.name, p.image.name) for p in pairs} == {
        "perfect": ("perfect.nii.gz", "perfect.nii.gz"), "half": ("half.nii.gz", "half.nii.gz")}
    assert unmatched == ["orphan"] and missing == 0


def test_refused_inputs(folders, tmp_path):
    shifted = Geometry(GEOM.shape, GEOM.spacing, origin=(0.0, 0.0, 0.0))
    write_volume(Volume(_gt(), shifted, "label"), folders / "gt" / "half.nii.gz", overwrite=True)
    with pytest.raises(InputError, match=r"case half: ground truth .*half\.nii\.gz and prediction .*half_seg\.nii\.gz are on different voxel grids \(.*origin"):
        evaluate_folder(folders / "pred", folders / "gt", tmp_path / "r1", figures=False, progress=False)
    (tmp_path / "nogt").mkdir()
    with pytest.raises(InputError, match="has ground truth"):
        evaluate_folder(folders / "pred", tmp_path / "nogt", tmp_path / "r2", progress=False)
    (tmp_path / "nopred").mkdir()
    with pytest.raises(InputError, match="no prediction found"):
        evaluate_folder(tmp_path / "nopred", folders / "gt", tmp_path / "r3", progress=False)


def _tumour_only_folders(tmp_path):
    """A GTV-style reference (0/1, 1 = tumour, as `rrcunet convert --rtstruct` writes it) and a 0/1/2 prediction
    that finds 32 of its 48 tumour voxels."""
    gt = (_gt() == 2).astype(np.uint8)
    pred = _gt()
    pred[5:9, 5:9, 5] = 1
    write_volume(Volume(gt, GEOM, "label"), tmp_path / "gt" / "p1.nii.gz")
    write_volume(Volume(pred, GEOM, "label"), tmp_path / "pred" / "p1_seg.nii.gz")
    return tmp_path


def test_a_tumour_only_reference_is_scored_as_tumour_and_said_so(tmp_path, caplog):
    f = _tumour_only_folders(tmp_path)
    rep = evaluate_folder(f / "pred", f / "gt", f / "report", figures=False, progress=False)
    assert rep.cases[0].tumour_dice == pytest.approx(2 * 32 / (48 + 32))
    assert "read as tumour-only masks" in caplog.text
    summary = json.loads((f / "report" / "summary.json").read_text())
    assert summary["reference_labels"] == "tumour"
    assert not any(r["table"].startswith("Table 3") for r in summary["summary"])  # no lung in the reference
    assert "dice_lung" not in (f / "report" / "per_case.csv").read_text().splitlines()[0]
    # the old reading, on request: 1 is lung, so no tumour in the reference at all
    forced = evaluate_folder(f / "pred", f / "gt", f / "forced", figures=False, progress=False,
                             reference_labels="lung+tumour")
    assert forced.cases[0].tumour_dice == 0.0


def test_three_class_references_are_read_as_before_and_missing_tumours_are_named(folders, tmp_path, caplog):
    write_volume(Volume(np.where(_gt() == 2, 1, _gt()).astype(np.uint8), GEOM, "label"), folders / "gt" / "half.nii.gz",
                 overwrite=True)
    rep = evaluate_folder(folders / "pred", folders / "gt", tmp_path / "r", figures=False, progress=False)
    assert {m.case_id: m.tumour_dice for m in rep.cases}["perfect"] == 1.0
    assert "1 of 2 references hold no tumour label (2): half" in caplog.text


def test_the_pairing_error_lists_both_sides(tmp_path):
    write_volume(Volume(_gt(), GEOM, "label"), tmp_path / "pred" / "image_seg.nii.gz")
    write_volume(Volume(_gt(), GEOM, "label"), tmp_path / "gt" / "LUNG1-001.nii.gz")
    with pytest.raises(InputError, match=r"prediction case ids image; ground-truth case ids LUNG1-001"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt", tmp_path / "r", progress=False)
