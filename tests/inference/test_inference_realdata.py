"""Real NSCLC patient (LUNG1-001, ../shared/realdata): ``rrcunet predict`` on its DICOM series gives a
mask on the original 512×512×134 grid and a DICOM SEG that references the series. The model is a
tiny untrained one: only geometry and references are checked, never the Dice."""

from __future__ import annotations

import json

import pydicom
import pytest

from rrcunet.cli.main import main
from rrcunet.io import read_image
from tests.conftest import realdata_path

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_lung1_001_prediction_geometry_and_seg(tiny_model, tmp_path):
    import highdicom as hd

    series = realdata_path("nsclc-radiomics-lung1-001", "image")
    out = tmp_path / "out"
    assert main(["predict", str(series), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
                 "--no-progress"]) == 0
    ct = read_image(series)
    case = "LUNG1-001"  # the PatientID
    seg = read_image(out / f"{case}_seg.nii.gz", kind="label")
    assert seg.shape == ct.shape == (512, 512, 134)
    assert seg.geometry.same_grid(ct.geometry, atol=1e-5)
    ds = pydicom.dcmread(out / f"{case}_seg.dcm")
    hd.seg.Segmentation.from_dataset(ds)
    info = ct.meta["dicom"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_uid
    assert ds.FrameOfReferenceUID == info.frame_of_reference_uid and ds.PatientID == info.patient_id
    assert {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(
        info.sop_instance_uids)
    assert int(ds.NumberOfFrames) == 2 * 134          # two segments, every slice (empty frames kept)
    doc = json.loads((out / f"{case}.json").read_text())
    assert doc["input"]["geometry"]["shape"] == [512, 512, 134]
    assert 2000 < doc["lung"]["region_volume_ml"] < 9000   # two adult lungs (classical extractor)


def test_the_tcia_patient_folder_as_shipped_is_one_case_named_by_its_patient_id(caplog):
    from rrcunet.inference import discover_cases

    patient = realdata_path("nsclc-radiomics-lung1-001")
    with caplog.at_level("INFO"):
        cases = discover_cases([patient])
    assert [(c.case_id, c.path.name, c.is_dicom) for c in cases] == [("LUNG1-001", "image", True)]
    assert "skipped RTSTRUCT" in caplog.text  # the contour folder is noted, not a failed case
