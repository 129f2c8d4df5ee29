"""``rrcunet evaluate`` end to end: a perfect prediction scores 1, the report folder is complete."""

from __future__ import annotations

import json

import numpy as np

from rrcunet.cli.main import main
from rrcunet.io import Geometry, Volume, write_volume


def test_perfect_prediction_report(tmp_path, capsys):
    geom = Geometry((16, 16, 8), (1.5, 1.5, 3.0))
    lab = np.zeros(geom.shape, np.uint8)
    lab[2:14, 2:14, 1:7] = 1
    lab[5:8, 6:9, 2:5] = 2
    write_volume(Volume(lab, geom, "label"), tmp_path / "pred" / "c1_seg.nii.gz")
    write_volume(Volume(lab, geom, "label"), tmp_path / "gt" / "c1_seg.nii.gz")   # the <case>_seg name is accepted too
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "rep"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| Table 4 (tumour) | Dice tumour | 1.0000 | 1.0000 |" in out
    assert "index.html" in out
    rep = tmp_path / "rep"
    assert {p.name for p in rep.iterdir()} == {"per_case.csv", "summary.csv", "summary.json", "summary.md",
                                              "dice_histogram.png", "figures", "index.html"}
    doc = json.loads((rep / "summary.json").read_text())
    assert doc["mean_of_cases"]["tumour_dice"] == 1.0 and doc["mean_of_cases"]["tumour_hd95_mm"] == 0.0
    assert doc["voxel_pooled"]["dice_macro"] == 1.0
    assert (rep / "figures" / "c1_3d.png").is_file()        # no CT was found: the 3D figure only
    # A second run refuses to replace the report without --overwrite (one line, exit 2).
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(rep), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
