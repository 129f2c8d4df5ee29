"""Writing phantom datasets: files read back with the right voxels and geometry, manifest and
patient-level split, the ``rrcunet phantoms`` command, and the DICOM CT/RTSTRUCT/SEG export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError
from rrcunet.io import read_image
from rrcunet.synthetic import PhantomConfig, generate_phantom
from rrcunet.synthetic.dataset import case_seed, write_phantom_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    manifest = write_phantom_dataset(out, 3, seed=5, size="small")
    return out, manifest


def test_files_read_back_with_geometry(dataset):
    out, manifest = dataset
    case = manifest.cases[1]
    ref = generate_phantom(case_seed(5, 1), config=PhantomConfig.preset("small"))
    for rel, vol, kind in ((case.image, ref.image, "image"), (case.label, ref.label, "label"),
                           (case.lung, ref.lungs, "label")):
        back = read_image(out / rel, kind=kind)
        assert back.geometry.same_grid(vol.geometry), (back.geometry.describe(), vol.geometry.describe())
        np.testing.assert_array_equal(back.array, vol.array)
    assert read_image(out / case.image).array.dtype == np.int16


def test_manifest_split_and_facts(dataset):
    out, manifest = dataset
    back = DatasetManifest.load(out)
    assert [c.case_id for c in back.cases] == ["phantom_0000", "phantom_0001", "phantom_0002"]
    assert back.split == manifest.split
    assert set(back.split.train) | set(back.split.val) == {c.case_id for c in back.cases}
    patients = {c.case_id: c.patient_id for c in back.cases}
    assert len(set(patients.values())) == 3  # one patient per case
    assert not ({patients[c] for c in back.split.train} & {patients[c] for c in back.split.val})
    for i, c in enumerate(back.cases):
        src = c.source
        assert src["seed"] == case_seed(5, i) and src["preset"] == "small"
        assert len(src["acquisition"]["spacing_mm"]) == 3
        for t in src["tumours"]:
            assert {"kind", "location", "diameter_mm", "volume_ml", "centre_mm"} <= set(t)
    json.dumps([c.source for c in back.cases])  # JSON-clean


def test_same_seed_same_dataset(dataset, tmp_path):
    out, manifest = dataset
    again = write_phantom_dataset(tmp_path, 1, seed=5, size="small")
    a = read_image(out / manifest.cases[0].image).array
    b = read_image(tmp_path / again.cases[0].image).array
    assert a.tobytes() == b.tobytes()


def test_refuses_to_overwrite(dataset):
    out, _ = dataset
    with pytest.raises(InputError, match="already holds a phantom dataset.*--overwrite"):
        write_phantom_dataset(out, 1, seed=5)
    with pytest.raises(ConfigError, match="number of phantoms must be an integer >= 1"):
        write_phantom_dataset(out / "x", 0)
    with pytest.raises(ConfigError, match="unknown phantom size 'medium'"):
        write_phantom_dataset(out / "x", 1, size="medium")


def test_cli_writes_layout_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["phantoms", "-n", "1", "-o", str(out), "--seed", "3"]) == 0
    for sub in ("images", "labels", "lungs"):
        assert (out / sub / "phantom_0000.nii.gz").is_file()
    assert (out / "manifest.json").is_file()
    capsys.readouterr()
    assert main(["phantoms", "-n", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a phantom dataset" in err and "--overwrite" in err
    assert main(["phantoms", "-n", "2", "-o", str(out), "--overwrite"]) == 0
    assert len(DatasetManifest.load(out).cases) == 2


def test_cli_set_changes_the_preset_and_records_it(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["phantoms", "-n", "2", "-o", str(out), "--val-fraction", "0",
                 "--set", "kind_weights=[0,0,0,0,1]", "--set", "nodule_diameter_mm=[6,8]"]) == 0
    manifest = DatasetManifest.load(out)
    assert list(manifest.split.train) == ["phantom_0000", "phantom_0001"] and not manifest.split.val
    for case in manifest.cases:
        assert case.source["config"]["kind_weights"] == [0, 0, 0, 0, 1]
        assert {t["kind"] for t in case.source["tumours"]} <= {"ground_glass"}
    assert sum(len(case.source["tumours"]) for case in manifest.cases) >= 1
    # a dataset of the unchanged preset records no config
    default = write_phantom_dataset(tmp_path / "default", 1, seed=0, size="small")
    assert "config" not in default.cases[0].source
    # explicit tumours, as objects
    assert main(["phantoms", "-n", "1", "-o", str(tmp_path / "one"),
                 "--set", 'tumours=[{"kind": "part_solid", "diameter_mm": 20}]']) == 0
    (t,) = DatasetManifest.load(tmp_path / "one").cases[0].source["tumours"]
    assert t["kind"] == "part_solid"
    capsys.readouterr()
    for bad, message in ((["--set", "kind_weights=[1,2]"], "kind_weights needs 5"),
                         (["--set", "colour=3"], "fields are"),
                         (["--set", "matrix"], "expected FIELD=VALUE"),
                         (["--set", 'tumours=[{"shape": "round"}]'], "each tumour is an object")):
        assert main(["phantoms", "-n", "1", "-o", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "manifest.json").exists()


@pytest.mark.slow
def test_dicom_export_round_trip(tmp_path):
    from rrcunet.io import read_rtstruct, read_seg

    manifest = write_phantom_dataset(tmp_path, 1, seed=2, size="small", dicom=True)
    case = manifest.cases[0]
    nii = read_image(tmp_path / case.image)
    label = read_image(tmp_path / case.label, kind="label")
    paths = case.source["dicom"]
    ct = read_image(tmp_path / paths["ct"])
    assert ct.geometry.same_grid(nii.geometry), (ct.geometry.describe(), nii.geometry.describe())
    assert np.abs(ct.array.astype(np.int32) - nii.array.astype(np.int32)).max() <= 1
    seg = read_seg(tmp_path / paths["seg"], reference=ct, label_values={"Lung": 1, "Tumour": 2})
    np.testing.assert_array_equal(seg.array, label.array)
    rois = read_rtstruct(tmp_path / paths["rtstruct"], ct)
    lung = rois["Lung"].array > 0
    # Contours at the 0.5 level give back the voxel masks up to boundary voxels.
    assert abs(int(lung.sum()) - int((label.array == 1).sum())) <= 0.01 * (label.array == 1).sum()
