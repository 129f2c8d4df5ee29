"""``rrcunet import`` for NIfTI sources (MSD Task06_Lung, nnU-Net raw) and the shared engine:
label composition, layout, provenance, seeded split, skip-and-report, resume, overwrite refusal, CLI.

Sources are tiny fake trees (32×32×16 synthetic chests) built in ``tmp_path``; the lung extractor is
replaced by a threshold extractor so the expected lung is known exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from rrcunet.cli.main import main
from rrcunet.data.importers import base as import_base
from rrcunet.data.importers import compose_labels, import_dataset, import_dataset_report, map_label_name
from rrcunet.data.manifest import DatasetManifest, make_split
from rrcunet.errors import ConfigError, InputError
from rrcunet.io import Geometry, Volume, read_image, write_volume

SHAPE = (32, 32, 16)


# --------------------------------------------------------------------------------------------------
# synthetic chests and the fake extractor (also used by test_import_nsclc.py)
# --------------------------------------------------------------------------------------------------
def synthetic_chest(index: int = 0, *, origin: tuple[float, float, float] = (-24.0, -24.0, -24.0)):
    """(ct Volume, tumour bool, lung-without-tumour bool) of a tiny chest; the tumour bites into one lung.

    Outside air −1000 HU, body 40 HU, two box lungs −850 HU, a tumour ball (30 HU) centred on the
    medial edge of the right lung, moved by ``index`` so the cases differ.
    """
    geom = Geometry(SHAPE, (1.5, 1.5, 3.0), origin)
    x, y, z = np.indices(SHAPE)
    ct = np.full(SHAPE, -1000, dtype=np.int16)
    body = ((x - 15.5) / 14.5) ** 2 + ((y - 15.5) / 12.5) ** 2 <= 1.0
    ct[body] = 40
    lungs = np.zeros(SHAPE, dtype=bool)
    lungs[5:14, 9:23, 2:14] = True
    lungs[18:27, 9:23, 2:14] = True
    ct[lungs] = -850
    cz = 6 + index % 4
    tumour = (x - 13) ** 2 + (y - 15) ** 2 + ((z - cz) * 2) ** 2 <= 3.0 ** 2
    ct[tumour] = 30
    return Volume(ct, geom, "image"), tumour, lungs & ~tumour


def threshold_extractor(ct: Volume, method: str) -> Volume:
    """Stand-in lung extractor: air below −400 HU not connected to the in-plane border."""
    air = np.asarray(ct.array) < -400
    lab, _ = ndi.label(air)
    border = np.unique(np.concatenate([lab[0].ravel(), lab[-1].ravel(), lab[:, 0].ravel(), lab[:, -1].ravel()]))
    lung = air & ~np.isin(lab, border[border > 0])
    return Volume(lung.astype(np.uint8), ct.geometry, "label", {"lungmask_method": method})


@pytest.fixture
def extractor(monkeypatch):
    """Replace the lung extractor; ``calls`` records the case sources it was run on."""
    calls: list[str] = []

    def fake(ct, method):
        calls.append(method)
        return threshold_extractor(ct, method)

    monkeypatch.setattr(import_base, "extract_lung_region", fake)
    return calls


def make_msd(root: Path, n: int = 5, *, channel_suffix: bool = False, with_json: bool = True) -> Path:
    """A fake MSD Task06_Lung folder with ``n`` cases lung_001…, one imagesTs image and macOS junk."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTs").mkdir()
    training = []
    for i in range(1, n + 1):
        ct, tumour, _ = synthetic_chest(i)
        name = f"lung_{i:03d}"
        img_name = f"{name}_0000.nii.gz" if channel_suffix else f"{name}.nii.gz"
        write_volume(ct, root / "imagesTr" / img_name)
        write_volume(Volume(tumour.astype(np.uint8), ct.geometry, "label"), root / "labelsTr" / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    write_volume(synthetic_chest(0)[0], root / "imagesTs" / "lung_100.nii.gz")
    (root / "imagesTr" / "._lung_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    if with_json:
        data = {"name": "Lung", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"},
                "numTraining": n, "training": training, "test": ["./imagesTs/lung_100.nii.gz"]}
        (root / "dataset.json").write_text(json.dumps(data))
    return root


def read_case(out: Path, case: str):
    return (read_image(out / "images" / f"{case}.nii.gz"),
            np.asarray(read_image(out / "labels" / f"{case}.nii.gz", kind="label").array),
            np.asarray(read_image(out / "lungs" / f"{case}.nii.gz", kind="label").array))


# --------------------------------------------------------------------------------------------------
# label composition
# --------------------------------------------------------------------------------------------------
def test_compose_labels_hand_worked():
    # a 1-voxel-thick row: lung at x 2..5, tumour A at x 6..7 (touches the lung), tumour B at x 10 (away).
    tumour = np.zeros((12, 1, 1), bool)
    lung = np.zeros((12, 1, 1), bool)
    lung[2:6] = True
    tumour[6:8] = True
    tumour[10] = True
    labels, region = compose_labels(tumour, lung)
    assert labels[:, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 0, 0, 2, 0]
    assert region[:, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    # tumour inside the lung: tumour wins the label, the region is unchanged
    lung2 = np.ones((3, 3, 3), bool)
    tum2 = np.zeros((3, 3, 3), bool)
    tum2[1, 1, 1] = True
    labels2, region2 = compose_labels(tum2, lung2)
    assert int((labels2 == 2).sum()) == 1 and int((labels2 == 1).sum()) == 26 and int(region2.sum()) == 27


@pytest.mark.parametrize("name, value", [
    ("GTV-1", 2), ("Tumor", 2), ("lung_nodule", 2), ("cancer", 2), ("lesions", 2),
    ("Lungs", 1), ("lung-left", 1), ("parenchyma", 1), ("background", 0),
    ("heart", None), ("lung_and_tumour", None), ("lung+GTV", None),
])
def test_label_name_rule(name, value):
    assert map_label_name(name) == value


# --------------------------------------------------------------------------------------------------
# MSD
# --------------------------------------------------------------------------------------------------
def test_msd_layout_remap_provenance_and_split(tmp_path, extractor):
    src = make_msd(tmp_path / "Task06_Lung")
    out = tmp_path / "prepared"
    report = import_dataset_report("msd", src, out, seed=7, test_list=["lung_005"])
    m = DatasetManifest.load(out)
    assert [c.case_id for c in m.cases] == [f"lung_{i:03d}" for i in range(1, 6)]
    assert extractor == ["classical"] * 5
    for i in range(1, 6):
        case = f"lung_{i:03d}"
        ct, tumour, lung_gt = synthetic_chest(i)
        image, labels, lungs = read_case(out, case)
        assert np.array_equal(image.array, ct.array) and image.geometry.same_grid(ct.geometry)
        # MSD label 1 (tumour) → 2; the lung (here: both boxes, tumour bite included) → 1
        assert np.array_equal(labels == 2, tumour)
        assert np.array_equal(labels == 1, lung_gt)
        assert np.array_equal(lungs == 1, lung_gt | tumour)
        entry = m.case(case)
        assert entry.image == f"images/{case}.nii.gz" and entry.patient == case
        assert entry.source["dataset"] == "msd"
        assert entry.source["lung_source"] == "classical"
        assert entry.source["label"] == str((src / "labelsTr" / f"{case}.nii.gz").resolve())
        assert entry.source["label_values"] == {"0": 0, "1": 2}
    # seeded patient-level split, the test case held out first
    assert m.split.test == ("lung_005",)
    assert m.split == make_split(list(m.cases), val_fraction=0.2, seed=7, test=("lung_005",))
    assert len(m.split.val) == 1 and len(m.split.train) == 3
    assert any("imagesTs" in item for item, _ in report.ignored)
    assert not report.skipped
    assert not (src / "manifest.json").exists()  # nothing written into SRC


def test_msd_nnunet_converted_copy_and_no_dataset_json(tmp_path, extractor):
    src = make_msd(tmp_path / "Task006_Lung", n=2, channel_suffix=True)
    m = import_dataset("msd", src, tmp_path / "a")
    assert [c.case_id for c in m.cases] == ["lung_001", "lung_002"]
    assert m.case("lung_001").source["image"].endswith("lung_001_0000.nii.gz")
    src2 = make_msd(tmp_path / "bare", n=2, with_json=False)
    m2 = import_dataset("msd", src2, tmp_path / "b")
    assert [c.case_id for c in m2.cases] == ["lung_001", "lung_002"]


@pytest.mark.parametrize("bad, match", [
    ("../outside/lung_009.nii.gz", "escapes the dataset folder"),
    ("./imagesTr/../../outside/lung_009.nii.gz", "escapes the dataset folder"),
    ("/etc/lung_009.nii.gz", "absolute path"),
])
def test_msd_dataset_json_path_escaping_src_is_refused(tmp_path, extractor, bad, match):
    src = make_msd(tmp_path / "Task06_Lung", n=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    ct, tumour, _ = synthetic_chest(9)
    write_volume(ct, outside / "lung_009.nii.gz")
    data = json.loads((src / "dataset.json").read_text())
    data["training"].append({"image": bad, "label": "./labelsTr/lung_001.nii.gz"})
    (src / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=match):
        import_dataset("msd", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_msd_refuses_another_task(tmp_path):
    src = make_msd(tmp_path / "Task03_Liver", n=1)
    data = json.loads((src / "dataset.json").read_text())
    data["labels"] = {"0": "background", "1": "liver", "2": "cancer"}
    (src / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="Task06_Lung.*import it as `nnunet`"):
        import_dataset("msd", src, tmp_path / "out")


def test_output_inside_src_and_wrong_options_are_refused(tmp_path):
    src = make_msd(tmp_path / "Task06_Lung", n=1)
    with pytest.raises(InputError, match="inside the source folder"):
        import_dataset("msd", src, src / "prepared")
    with pytest.raises(ConfigError, match="--roi applies to the nsclc"):
        import_dataset("msd", src, tmp_path / "o", rois=["GTV-1"])
    with pytest.raises(ConfigError, match="--label-map applies to the nnunet"):
        import_dataset("msd", src, tmp_path / "o", label_map={"cancer": 2})
    with pytest.raises(ConfigError, match="val-fraction"):
        import_dataset("msd", src, tmp_path / "o", val_fraction=1.0)
    with pytest.raises(InputError, match="match no case or patient.*lung_404"):
        import_dataset("msd", src, tmp_path / "o", test_list=["lung_404"])


# --------------------------------------------------------------------------------------------------
# bad cases, resume, overwrite
# --------------------------------------------------------------------------------------------------
def test_bad_cases_are_skipped_and_reported(tmp_path, extractor, capsys):
    src = make_msd(tmp_path / "Task06_Lung", n=5)
    ct2, _, _ = synthetic_chest(2)
    bad_values = np.zeros(SHAPE, np.uint8)
    bad_values[3, 3, 3] = 3
    write_volume(Volume(bad_values, ct2.geometry, "label"), src / "labelsTr" / "lung_002.nii.gz", overwrite=True)
    moved = Geometry(SHAPE, (1.5, 1.5, 3.0), (0.0, 0.0, 0.0))
    write_volume(Volume(np.zeros(SHAPE, np.uint8), moved, "label"), src / "labelsTr" / "lung_003.nii.gz",
                 overwrite=True)
    (src / "imagesTr" / "lung_004.nii.gz").write_bytes(b"not a nifti file")
    report = import_dataset_report("msd", src, tmp_path / "out")
    reasons = {s.case_id: s.reason for s in report.skipped}
    assert sorted(reasons) == ["lung_002", "lung_003", "lung_004"]
    assert "label values 3" in reasons["lung_002"]
    assert "different voxel grids" in reasons["lung_003"] and "origin" in reasons["lung_003"]
    assert "lung_004.nii.gz" in reasons["lung_004"]
    assert report.imported == ("lung_001", "lung_005")
    m = DatasetManifest.load(tmp_path / "out")
    assert [c.case_id for c in m.cases] == ["lung_001", "lung_005"]
    saved = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert [s["case_id"] for s in saved["skipped"]] == ["lung_002", "lung_003", "lung_004"]
    # the CLI: same import resumed, exit status 3 and the skipped cases listed
    code = main(["import", "msd", str(src), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert "3 case(s) SKIPPED" in err and "lung_003" in err


def test_resume_keeps_complete_cases(tmp_path, extractor, monkeypatch):
    src = make_msd(tmp_path / "Task06_Lung", n=4)
    out = tmp_path / "out"

    # a crash (here: an interrupt) during the third case leaves no manifest behind
    def crash_on_third(ct, method):
        extractor.append(method)
        if len(extractor) == 3:
            raise KeyboardInterrupt
        return threshold_extractor(ct, method)

    monkeypatch.setattr(import_base, "extract_lung_region", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        import_dataset("msd", src, out)
    assert not (out / "manifest.json").exists()
    assert not any(p.name.startswith(".") and ".part" in p.name for p in (out / "images").iterdir())
    mtimes = {p: p.stat().st_mtime_ns for d in ("images", "labels", "lungs") for p in (out / d).glob("lung_00[12]*")}
    assert len(mtimes) == 6

    monkeypatch.setattr(import_base, "extract_lung_region", threshold_extractor)
    report = import_dataset_report("msd", src, out)
    assert report.reused == ("lung_001", "lung_002") and report.imported == ("lung_003", "lung_004")
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # a second full run reuses every case; a deleted output file is rebuilt, only for its case
    (out / "lungs" / "lung_004.nii.gz").unlink()
    report = import_dataset_report("msd", src, out)
    assert report.reused == ("lung_001", "lung_002", "lung_003") and report.imported == ("lung_004",)
    assert len(DatasetManifest.load(out).cases) == 4


def test_existing_output_is_not_overwritten_without_flag(tmp_path, extractor):
    src = make_msd(tmp_path / "Task06_Lung", n=2)
    out = tmp_path / "out"
    import_dataset("msd", src, out, seed=0)
    before = (out / "manifest.json").read_text()
    with pytest.raises(InputError, match="other options.*seed: 0 → 1.*--overwrite"):
        import_dataset("msd", src, out, seed=1)
    assert (out / "manifest.json").read_text() == before
    report = import_dataset_report("msd", src, out, seed=1, overwrite=True)
    assert report.imported == ("lung_001", "lung_002") and not report.reused
    assert DatasetManifest.load(out).split.seed == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty.*notes.txt.*--overwrite"):
        import_dataset("msd", src, foreign)
    import_dataset("msd", src, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------------
# nnU-Net
# --------------------------------------------------------------------------------------------------
def make_nnunet_v2(root: Path, labels: dict[str, int], n: int = 3) -> Path:
    """An nnU-Net v2 raw dataset whose label values follow ``labels`` for lung / tumour / extra names."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(1, n + 1):
        ct, tumour, lung = synthetic_chest(i)
        lab = np.zeros(SHAPE, np.uint8)
        lab[lung] = labels.get("lung", labels.get("Lungs", 0))
        lab[tumour] = labels.get("tumour", labels.get("GTV", 0))
        if "heart" in labels:
            lab[15:17, 25:27, 6:8] = labels["heart"]
        write_volume(ct, root / "imagesTr" / f"case{i:02d}_0000.nii.gz")
        write_volume(Volume(lab, ct.geometry, "label"), root / "labelsTr" / f"case{i:02d}.nii.gz")
    data = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **labels}, "numTraining": n,
            "file_ending": ".nii.gz", "name": "Dataset042_FakeLung"}
    (root / "dataset.json").write_text(json.dumps(data))
    return root


def test_nnunet_v2_labels_mapped_by_name_and_lung_ground_truth(tmp_path, extractor):
    # values deliberately swapped against ours: tumour is 1 and lung is 2 in the source
    src = make_nnunet_v2(tmp_path / "Dataset042_FakeLung", {"GTV": 1, "Lungs": 2})
    m = import_dataset("nnunet", src, tmp_path / "out")
    assert extractor == []  # the lung came from the source labels
    for i in range(1, 4):
        _, tumour, lung = synthetic_chest(i)
        _, labels, lungs = read_case(tmp_path / "out", f"case{i:02d}")
        assert np.array_equal(labels == 2, tumour) and np.array_equal(labels == 1, lung)
        assert np.array_equal(lungs == 1, lung | tumour)
        src_info = m.case(f"case{i:02d}").source
        assert src_info["lung_source"] == "ground truth"
        assert src_info["label_values"] == {"0": 0, "1": 2, "2": 1}
        assert src_info["label_names"] == {"0": "background", "1": "GTV", "2": "Lungs"}


def test_nnunet_unmapped_labels_are_refused_until_mapped(tmp_path, extractor):
    src = make_nnunet_v2(tmp_path / "Dataset043_Heart", {"tumour": 1, "heart": 2}, n=2)
    with pytest.raises(InputError, match="cannot map label\\(s\\) 'heart'=2.*labels found: 'background'=0, "
                                         "'tumour'=1, 'heart'=2.*--label-map"):
        import_dataset("nnunet", src, tmp_path / "out")
    with pytest.raises(ConfigError, match="does not declare"):
        import_dataset("nnunet", src, tmp_path / "out", label_map={"liver": 0})
    m = import_dataset("nnunet", src, tmp_path / "out", label_map=["heart=0"])
    _, labels, _ = read_case(tmp_path / "out", "case01")
    assert set(np.unique(labels)) == {0, 1, 2}
    assert m.case("case01").source["lung_source"] == "classical"  # no lung label → extractor
    assert extractor == ["classical", "classical"]


def test_nnunet_ambiguous_label_is_refused(tmp_path):
    src = make_nnunet_v2(tmp_path / "Dataset044", {"tumour": 1}, n=1)
    data = json.loads((src / "dataset.json").read_text())
    data["labels"] = {"background": 0, "lung_and_tumour": 1}
    (src / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="cannot map label\\(s\\) 'lung_and_tumour'=1"):
        import_dataset("nnunet", src, tmp_path / "out")


def test_nnunet_v1_training_list(tmp_path, extractor):
    src = make_nnunet_v2(tmp_path / "Task042_Lung", {"tumour": 1}, n=2)
    data = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "tumour"},
            "training": [{"image": f"./imagesTr/case{i:02d}.nii.gz", "label": f"./labelsTr/case{i:02d}.nii.gz"}
                         for i in (1, 2)], "test": []}
    (src / "dataset.json").write_text(json.dumps(data))
    m = import_dataset("nnunet", src, tmp_path / "out")
    assert [c.case_id for c in m.cases] == ["case01", "case02"]
    assert m.case("case02").source["image"].endswith("case02_0000.nii.gz")


def test_cli_import_nnunet(tmp_path, extractor, capsys):
    src = make_nnunet_v2(tmp_path / "Dataset045", {"tumour": 1, "heart": 2}, n=2)
    test_list = tmp_path / "test.txt"
    test_list.write_text("# held-out cases\ncase02\n")
    code = main(["import", "nnunet", str(src), "-o", str(tmp_path / "out"), "--label-map", "heart=0",
                 "--test-list", str(test_list), "--seed", "3"])
    assert code == 0
    assert "2 case(s)" in capsys.readouterr().out
    m = DatasetManifest.load(tmp_path / "out")
    assert m.split.test == ("case02",) and m.split.seed == 3
    code = main(["import", "nnunet", str(src), "-o", str(tmp_path / "out2")])  # heart unmapped: user error
    assert code == 2
    assert "--label-map" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out2" / "manifest.json")


# --------------------------------------------------------------------------------------------------
# the real lung extractor
# --------------------------------------------------------------------------------------------------
def test_msd_case_with_the_real_classical_extractor(tmp_path):
    from tests.lungmask.chest import synthetic_chest as analytic_chest

    chest = analytic_chest(spacing=(3.0, 3.0, 6.0))
    tumour = chest.tumour_wall | chest.tumour_mediastinum
    src = tmp_path / "Task06_Lung"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    write_volume(chest.ct, src / "imagesTr" / "lung_001.nii.gz")
    write_volume(Volume(tumour.astype(np.uint8), chest.ct.geometry, "label"), src / "labelsTr" / "lung_001.nii.gz")
    m = import_dataset("msd", src, tmp_path / "out")
    assert m.case("lung_001").source["lung_source"] == "classical"
    _, labels, lungs = read_case(tmp_path / "out", "lung_001")
    assert np.array_equal(labels == 2, tumour)
    truth = chest.lung_region
    dice = 2 * int((lungs.astype(bool) & truth).sum()) / (int(lungs.sum()) + int(truth.sum()))
    assert dice > 0.9  # the extractor's lung, with both tumours inside the region
    assert np.all(lungs[tumour] == 1)


def test_unknown_lung_method_is_refused_before_reading(tmp_path):
    src = make_msd(tmp_path / "Task06_Lung", n=1)
    with pytest.raises(ConfigError, match="unknown lung-mask method 'magic'"):
        import_dataset("msd", src, tmp_path / "out", lung_method="magic")
    assert not (tmp_path / "out").exists()
