"""The size / location analysis on hand-made predictions: a prepared dataset of two 12³ cases whose
lesion Dice values are known (worked out in test_exp_lesions.py), through the files and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rrcunet.experiments.analysis import analyse_predictions

SPACING = (5.0, 5.0, 5.0)  # 0.125 mL voxels


def _write(array: np.ndarray, path: Path, kind: str = "label") -> None:
    from rrcunet.io import write_volume
    from rrcunet.io.volume import Geometry, Volume

    write_volume(Volume(array, Geometry(array.shape, SPACING, (0.0, 0.0, 0.0)), kind), path, overwrite=True)


def _dataset(root: Path) -> tuple[Path, Path]:
    """Case ``a``: GT lesions A (cube [1:4]^3, chest wall) and B (cube [8:10]^3, neither); prediction
    18 voxels of A, 4 of B's 8 plus 4 outside it, and one stray voxel → Dice 0.8 and 0.5, 1 false-positive
    component. Case ``b``: no tumour; the prediction has one stray voxel."""
    ds, pred_dir = root / "ds", root / "pred"
    lung = np.zeros((12, 12, 12), np.uint8)
    lung[0:11, 0:11, 0:11] = 1
    gt_a = lung.copy()
    gt_a[1:4, 1:4, 1:4] = 2
    gt_a[8:10, 8:10, 8:10] = 2
    pr_a = lung.copy()
    pr_a[1:4, 1:4, 1:3] = 2
    pr_a[8:10, 8:10, 9:11] = 2
    pr_a[5, 11, 0] = 2
    pr_b = lung.copy()
    pr_b[5, 5, 5] = 2
    ct = np.where(lung > 0, -850, 40).astype(np.int16)
    cases = []
    for cid, gt, facts in (("a", gt_a, [
            {"index": 1, "kind": "round", "n_voxels": 27, "volume_ml": 3.375, "bbox_voxel": [[1, 1, 1], [4, 4, 4]],
             "touches_chest_wall": True, "touches_mediastinum": False},
            {"index": 2, "kind": "round", "n_voxels": 8, "volume_ml": 1.0, "bbox_voxel": [[8, 8, 8], [10, 10, 10]],
             "touches_chest_wall": False, "touches_mediastinum": False}]), ("b", lung.copy(), [])):
        _write(ct, ds / "images" / f"{cid}.nii.gz", "image")
        _write(gt, ds / "labels" / f"{cid}.nii.gz")
        _write((gt > 0).astype(np.uint8), ds / "lungs" / f"{cid}.nii.gz")
        cases.append({"case_id": cid, "image": f"images/{cid}.nii.gz", "label": f"labels/{cid}.nii.gz",
                      "lung": f"lungs/{cid}.nii.gz", "patient": cid, "source": {"tumours": facts}})
    manifest = {"version": 1, "name": "hand", "cases": cases,
                "split": {"seed": 0, "train": [], "val": [], "test": ["a", "b"]}}
    (ds / "manifest.json").write_text(json.dumps(manifest))
    _write(pr_a, pred_dir / "a_seg.nii.gz")
    _write(pr_b, pred_dir / "b_seg.nii.gz")
    return ds, pred_dir


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_analysis_files_hold_the_hand_computed_lesion_dice(tmp_path: Path):
    ds, pred = _dataset(tmp_path)
    res = analyse_predictions(pred, ds, tmp_path / "out")
    lesions = _rows(tmp_path / "out" / "lesions.csv")
    assert [(r["case_id"], float(r["dice"]), r["location"], r["size_bin"]) for r in lesions] == [
        ("a", pytest.approx(0.8), "chest wall", "1–5 mL"), ("a", pytest.approx(0.5), "neither", "1–5 mL")]
    by_loc = {r["location"]: r for r in _rows(tmp_path / "out" / "by_location.csv")}
    assert float(by_loc["chest wall"]["Dice mean"]) == pytest.approx(0.8)
    assert float(by_loc["neither"]["Dice mean"]) == pytest.approx(0.5)
    assert by_loc["mediastinum"]["lesions"] == "0"
    by_size = {r["size"]: r for r in _rows(tmp_path / "out" / "by_size.csv")}
    assert by_size["1–5 mL"]["lesions"] == "2"
    assert float(by_size["1–5 mL"]["Dice pooled"]) == pytest.approx(44 / 61)
    cases = {r["case_id"]: r for r in _rows(tmp_path / "out" / "cases.csv")}
    assert cases["a"]["false_positive_components"] == "1" and cases["b"]["false_positive_components"] == "1"
    assert cases["b"]["lesions"] == "0"
    # Tables 3/4 and Figure 7 come from the evaluation report of the same predictions
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and res.summary == summary
    md = (tmp_path / "out" / "analysis.md").read_text()
    assert "## Tables 3 and 4 (analogues)" in md and "| chest wall | 1 | 1 | 0.800 |" in md
    png = (tmp_path / "out" / "size_location.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*.part*"))


def test_cli_analyse_on_a_prediction_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from rrcunet.cli.main import main

    ds, pred = _dataset(tmp_path)
    out = tmp_path / "cli"
    assert main(["experiment", "analyse", str(pred), "--data", str(ds), "-o", str(out), "--size-bins", "2,10",
                 "--no-progress"]) == 0
    by_size = {r["size"]: r for r in _rows(out / "by_size.csv")}
    assert list(by_size) == ["< 2 mL", "2–10 mL", "≥ 10 mL"]
    assert (by_size["< 2 mL"]["lesions"], by_size["2–10 mL"]["lesions"]) == ("1", "1")
    capsys.readouterr()
    assert main(["experiment", "analyse", str(pred), "--data", str(ds), "-o", str(out)]) == 2
    assert "already holds an analysis" in capsys.readouterr().err
    assert main(["experiment", "analyse", str(pred), "--data", str(ds), "-o", str(tmp_path / "x"),
                 "--size-bins", "5,1"]) == 2
    assert "increasing" in capsys.readouterr().err
