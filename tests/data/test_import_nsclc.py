"""``rrcunet import nsclc``: TCIA DICOM trees (CT series + RTSTRUCT or SEG in sibling series folders).

Fake trees are written with the project's own DICOM writers (``write_ct_series``, ``write_rtstruct``,
``write_seg``) on the 32×32×16 synthetic chest of test_import.py; the real NSCLC-Radiomics patient
LUNG1-001 is read in place when ../shared/realdata is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrcunet.data.importers import import_dataset, import_dataset_report
from rrcunet.data.importers.tcia import select_lung_rois, select_tumour_rois
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import InputError
from rrcunet.io import Volume, read_image, write_ct_series, write_rtstruct, write_seg
from tests.conftest import realdata_path
from tests.data.test_import import extractor, read_case, synthetic_chest  # noqa: F401  (fixture re-used)


def write_patient(root: Path, pid: str, index: int, rois: dict[int, str], masks: dict[int, np.ndarray], *,
                  seg: bool = False) -> Volume:
    """A TCIA-style patient: ``<pid>/<study>/<n>-CT/*.dcm`` and ``<pid>/<study>/<n>-RTSTRUCT/1-1.dcm`` (or SEG)."""
    ct, _, _ = synthetic_chest(index)
    study = root / pid / "01-01-2000-StudyID-NA-12345"
    write_ct_series(ct, study / "0.000000-NA-82046", patient_id=pid)
    ct_read = read_image(study / "0.000000-NA-82046")
    label = np.zeros(ct.shape, np.uint8)
    for value, mask in masks.items():
        label[mask] = value
    vol = Volume(label, ct.geometry, "label")
    if seg:
        write_seg(vol, ct_read.meta["dicom"], study / "300.000000-Segmentation-9999" / "1-1.dcm", segment_labels=rois)
    else:
        write_rtstruct(vol, ct_read.meta["dicom"], study / "1.000000-NA-78236" / "1-1.dcm", roi_names=rois)
    return ct_read


def test_select_rois_rules():
    assert select_tumour_rois(["Spinal-Cord", "gtv-1", "GTV-2"], None, "x") == ["gtv-1"]
    assert select_tumour_rois(["GTV-1vis-3", "Heart"], None, "x") == ["GTV-1vis-3"]
    with pytest.raises(InputError, match="2 match 'GTV-1\\*'.*'GTV-1vis-1', 'GTV-1vis-2'.*--roi"):
        select_tumour_rois(["GTV-1vis-1", "GTV-1vis-2"], None, "x")
    assert select_tumour_rois(["GTV-1", "GTV-2", "CTV"], ["gtv-*"], "x") == ["GTV-1", "GTV-2"]
    assert select_lung_rois(["Lung-Left", "Lung-Right", "Lungs-PTV", "GTV-1"], None, ["GTV-1"], "x") == \
        ["Lung-Left", "Lung-Right"]
    assert select_lung_rois(["Lungs-GTV", "GTV-1"], None, ["GTV-1"], "x") == ["Lungs-GTV"]
    assert select_lung_rois(["Lung_L", "GTV-1"], None, ["GTV-1"], "x") == []  # one side only → extractor
    assert select_lung_rois(["LungL", "LungR"], None, [], "x") == ["LungL", "LungR"]


def test_fake_tcia_tree_rtstruct_and_seg(tmp_path, extractor):
    src = tmp_path / "NSCLC-Radiomics"
    _, tumour1, lung1 = synthetic_chest(1)
    patient_left = lung1.copy()  # LPS: +x points to the patient's left
    patient_left[:16] = False
    patient_right = lung1 & ~patient_left
    spinal = np.zeros_like(lung1)
    spinal[15:17, 24:26, :] = True
    # patient 1: RTSTRUCT with the tumour and both lungs (lung contours exclude the GTV, as in RT practice)
    ct1 = write_patient(src, "LUNG1-901", 1, {1: "GTV-1", 2: "Lung-Left", 3: "Lung-Right", 4: "Spinal-Cord"},
                        {1: tumour1, 2: patient_left, 3: patient_right, 4: spinal})
    # patient 2: a SEG with the tumour only → lung from the extractor
    _, tumour2, lung2 = synthetic_chest(2)
    ct2 = write_patient(src, "LUNG1-902", 2, {1: "GTV-1"}, {1: tumour2}, seg=True)
    (src / "LICENSE.txt").write_text("not DICOM")

    report = import_dataset_report("nsclc", src, tmp_path / "out")
    assert not report.skipped
    m = DatasetManifest.load(tmp_path / "out")
    assert [c.case_id for c in m.cases] == ["LUNG1-901", "LUNG1-902"]
    assert extractor == ["classical"]

    _, labels1, lungs1 = read_case(tmp_path / "out", "LUNG1-901")
    assert np.array_equal(labels1 == 2, tumour1)
    assert np.array_equal(labels1 == 1, lung1)
    assert np.array_equal(lungs1 == 1, lung1 | tumour1)  # the GTV is put back into the lung region
    s1 = m.case("LUNG1-901").source
    assert s1["annotation_kind"] == "RTSTRUCT" and s1["lung_source"] == "ground truth"
    assert s1["tumour_rois"] == ["GTV-1"] and s1["lung_rois"] == ["Lung-Left", "Lung-Right"]
    info = ct1.meta["dicom"]
    assert s1["dicom"]["series_uid"] == info.series_uid
    assert s1["dicom"]["frame_of_reference_uid"] == info.frame_of_reference_uid
    assert s1["dicom"]["patient_id"] == "LUNG1-901"
    assert m.case("LUNG1-901").patient == "LUNG1-901"

    _, labels2, lungs2 = read_case(tmp_path / "out", "LUNG1-902")
    assert np.array_equal(labels2 == 2, tumour2)
    assert np.array_equal(lungs2 == 1, lung2 | tumour2)
    s2 = m.case("LUNG1-902").source
    assert s2["annotation_kind"] == "SEG" and s2["lung_source"] == "classical" and s2["lung_rois"] == []
    assert s2["dicom"]["series_uid"] == ct2.meta["dicom"].series_uid
    assert sorted(m.split.train + m.split.val) == ["LUNG1-901", "LUNG1-902"] and len(m.split.val) == 1


def test_observer_gtvs_need_a_choice_and_uncontoured_patient_is_reported(tmp_path, extractor):
    src = tmp_path / "Interobserver1"
    _, tumour, lung = synthetic_chest(3)
    other = np.zeros_like(tumour)
    other[20:23, 12:15, 6:9] = True  # a second observer's (disjoint) GTV
    write_patient(src, "interobs05", 3, {1: "GTV-1vis-1", 2: "GTV-1vis-2"}, {1: tumour, 2: other})
    ct, _, _ = synthetic_chest(4)
    write_ct_series(ct, src / "interobs06" / "study" / "ct", patient_id="interobs06")  # no contours at all
    _, tumour7, _ = synthetic_chest(7)
    write_patient(src, "interobs07", 7, {1: "GTV-1"}, {1: tumour7})

    report = import_dataset_report("nsclc", src, tmp_path / "default")
    assert report.imported == ("interobs07",)
    reasons = {s.case_id: s.reason for s in report.skipped}
    assert sorted(reasons) == ["interobs05", "interobs06"]
    assert "'GTV-1vis-1', 'GTV-1vis-2'" in reasons["interobs05"] and "--roi" in reasons["interobs05"]
    assert "no RTSTRUCT or SEG file references" in reasons["interobs06"]

    report = import_dataset_report("nsclc", src, tmp_path / "picked", rois=["GTV-1vis-2"])
    assert report.imported == ("interobs05",)
    assert "no ROI matches --roi GTV-1vis-2" in {s.case_id: s.reason for s in report.skipped}["interobs07"]
    _, labels, _ = read_case(tmp_path / "picked", "interobs05")
    assert np.array_equal(labels == 2, other)
    assert report.manifest.case("interobs05").source["tumour_rois"] == ["GTV-1vis-2"]
    with pytest.raises(InputError, match="none of the 3 case\\(s\\).*interobs05: .*no ROI matches --roi GTV-3"):
        import_dataset("nsclc", src, tmp_path / "picked-none", rois=["GTV-3*"])


@pytest.mark.slow
@pytest.mark.realdata
def test_real_lung1_001(tmp_path):
    src = realdata_path("nsclc-radiomics-lung1-001")
    report = import_dataset_report("nsclc", src, tmp_path / "lung1")
    assert not report.skipped
    m = report.manifest
    assert [c.case_id for c in m.cases] == ["LUNG1-001"]
    entry = m.case("LUNG1-001")
    assert entry.source["lung_source"] == "ground truth"
    assert entry.source["lung_rois"] == ["Lung-Left", "Lung-Right"]
    assert entry.source["tumour_rois"] == ["GTV-1"]
    assert entry.source["dicom"]["patient_id"] == "LUNG1-001"
    image, labels, lungs = read_case(tmp_path / "lung1", "LUNG1-001")
    assert image.shape == (512, 512, 134)
    n_tumour = int((labels == 2).sum())
    assert abs(n_tumour - 54_600) <= 0.01 * 54_600  # README: GTV-1 ≈ 54,600 voxels
    # the lung region is the two RT lung contours (≈ 795,700 + 1,036,800 voxels) plus the GTV they exclude
    # (≈ 54,600, of which ≈ 6,000 lie inside them): ≈ 1,880,000
    n_region = int(lungs.sum())
    assert abs(n_region - (795_700 + 1_036_800 + 54_600 - 6_000)) <= 0.01 * 1_880_000
    assert np.array_equal(lungs == 1, labels > 0)
