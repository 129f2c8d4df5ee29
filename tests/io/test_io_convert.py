"""convert() and the ``rrcunet convert`` command on a synthetic DICOM case."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, convert, read_image, safe_filename, write_ct_series, write_rtstruct, write_seg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def case(tmp_path):
    g = Geometry((24, 20, 6), (0.8, 0.8, 2.0), (-10.0, -8.0, 40.0))
    ct = np.full(g.shape, -800, np.int16)
    write_ct_series(Volume(ct, g), tmp_path / "dicom" / "ct", patient_id="P1")
    ct_vol = read_image(tmp_path / "dicom" / "ct")
    labels = np.zeros(g.shape, np.uint8)
    labels[2:20, 2:16, 1:5] = 1
    labels[8:12, 6:10, 2:4] = 2
    lab = Volume(labels, g, "label")
    write_rtstruct(lab, ct_vol.meta["dicom"], tmp_path / "dicom" / "rs.dcm", roi_names={1: "Lung/left", 2: "GTV 1"})
    write_seg(lab, ct_vol.meta["dicom"], tmp_path / "seg.dcm")
    return tmp_path, lab


def test_convert_rtstruct_writes_ct_and_masks_on_the_ct_grid(case):
    tmp_path, lab = case
    out = convert(tmp_path / "dicom", tmp_path / "out", rtstruct=tmp_path / "dicom" / "rs.dcm")
    assert {k: p.name for k, p in out.items()} == {"ct": "ct.nii.gz", "Lung/left": "Lung_left.nii.gz",
                                                   "GTV 1": "GTV_1.nii.gz"}
    ct = read_image(out["ct"])
    gtv = read_image(out["GTV 1"], kind="label")
    assert gtv.geometry.same_grid(ct.geometry) and np.array_equal(gtv.array, (lab.array == 2).astype(np.uint8))


def test_convert_seg_with_roi_pattern(case):
    tmp_path, lab = case
    out = convert(tmp_path / "dicom" / "ct", tmp_path / "out", seg=tmp_path / "seg.dcm", rois=["tum*"])
    assert sorted(out) == ["Tumour", "ct"]
    assert np.array_equal(read_image(out["Tumour"], kind="label").array, (lab.array == 2).astype(np.uint8))


def test_convert_writes_nothing_when_an_output_exists_or_a_roi_is_missing(case):
    tmp_path, _ = case
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "GTV_1.nii.gz").write_bytes(b"old")
    with pytest.raises(InputError, match="GTV_1.nii.gz already exists"):
        convert(tmp_path / "dicom", tmp_path / "out", rtstruct=tmp_path / "dicom" / "rs.dcm")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["GTV_1.nii.gz"]  # ct.nii.gz not written
    with pytest.raises(InputError, match="no ROI matches 'heart'"):
        convert(tmp_path / "dicom", tmp_path / "out2", rtstruct=tmp_path / "dicom" / "rs.dcm", rois=["heart"])
    assert not (tmp_path / "out2").exists()


def test_cli_convert(case, capsys):
    tmp_path, _ = case
    rc = main(["convert", str(tmp_path / "dicom"), "-o", str(tmp_path / "cli"), "--rtstruct",
               str(tmp_path / "dicom" / "rs.dcm"), "--roi", "gtv*"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["GTV_1.nii.gz", "ct.nii.gz"]
    rc = main(["convert", str(tmp_path / "dicom"), "-o", str(tmp_path / "cli"), "--rtstruct",
               str(tmp_path / "dicom" / "rs.dcm"), "--roi", "gtv*"])
    err = capsys.readouterr().err
    assert rc == 2 and "rrcunet convert: error:" in err and "already exists" in err and "Traceback" not in err


def test_safe_filename():
    taken = {"ct"}
    assert safe_filename("GTV-1", taken) == "GTV-1"
    assert safe_filename("gtv-1", taken) == "gtv-1_2"  # case-insensitive clash (macOS/Windows file systems)
    assert safe_filename("CT", taken) == "roi_CT"
    assert safe_filename("../../etc/passwd", taken) == "etc_passwd"
    assert safe_filename("  ", taken) == "roi"
