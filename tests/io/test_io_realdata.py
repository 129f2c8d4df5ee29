"""Readers on real scans from ../shared/realdata (skipped, naming the folder, when it is absent).

Reference values come from the data set README (voxel counts of the RTSTRUCT contours) and from
reference files shipped with the data (IBSI NIfTI conversion, dcmqi NRRD label maps) — none of them
from running this code.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import realdata_path

from rrcunet.errors import InputError
from rrcunet.io import list_rois, read_image, read_rtstruct, read_seg, read_seg_segments

pytestmark = [pytest.mark.realdata, pytest.mark.filterwarnings("ignore::UserWarning")]


def test_ibsi_phantom_matches_reference_nifti_voxel_for_voxel():
    root = realdata_path("ibsi-ct-radiomics-phantom")
    ct = read_image(root / "dicom" / "image")
    ref_ct = read_image(root / "nifti" / "image" / "phantom.nii.gz")
    assert ct.geometry.same_grid(ref_ct.geometry)
    assert np.array_equal(ct.array.astype(np.float32), ref_ct.array)
    assert list_rois(root / "dicom" / "mask" / "DCM_RS_00060.dcm") == ["GTV-1"]
    mask = read_rtstruct(root / "dicom" / "mask" / "DCM_RS_00060.dcm", ct)["GTV-1"]
    ref_mask = read_image(root / "nifti" / "mask" / "mask.nii.gz", kind="label")
    assert mask.geometry.same_grid(ref_mask.geometry)
    assert int(ref_mask.array.sum()) == 125256  # the README figure
    assert np.array_equal(mask.array, ref_mask.array)


def test_lung1_001_rtstruct_voxel_counts_match_readme():
    root = realdata_path("nsclc-radiomics-lung1-001")
    ct = read_image(root / "image")
    assert ct.shape == (512, 512, 134)
    assert np.allclose(ct.spacing, (0.977, 0.977, 3.0), atol=1e-3)
    assert int(ct.array.min()) == -1024 and int(ct.array.max()) == 3034  # README: HU −1024..3034
    rs = root / "mask_rtstruct" / "1-1.dcm"
    assert list_rois(rs) == ["GTV-1", "Spinal-Cord", "Lung-Left", "Lung-Right"]
    masks = read_rtstruct(rs, ct, rois=["gtv-1", "LUNG-*"])
    readme = {"GTV-1": 54_600, "Lung-Left": 795_700, "Lung-Right": 1_036_800}
    assert list(masks) == list(readme)
    for name, expected in readme.items():
        assert abs(int(masks[name].array.sum()) - expected) / expected < 0.01, name
    # README: only ≈6,000 GTV voxels lie inside the lung contours
    overlap = int((masks["GTV-1"].array & (masks["Lung-Left"].array | masks["Lung-Right"].array)).sum())
    assert 4_000 < overlap < 8_000


def test_patient_folder_with_ct_and_rtstruct_reads_the_ct():
    root = realdata_path("nsclc-radiomics-lung1-001")
    assert read_image(root).shape == (512, 512, 134)


@pytest.mark.parametrize(
    ("seg_file", "references"),
    [
        ("liver.dcm", {1: ("liver_seg.nrrd", 1)}),
        ("partial_overlaps.dcm", {1: ("partial_overlaps-1.nrrd", 1), 2: ("partial_overlaps-2.nrrd", 2),
                                  3: ("partial_overlaps-3.nrrd", 3), 4: ("partial_overlaps-1.nrrd", 4),
                                  5: ("partial_overlaps-1.nrrd", 5)}),
        ("sparse-labelmap-noppv.dcm", {1: ("sparse_labelmap_noppv_seg.nrrd", 1)}),
    ],
)
def test_dcmqi_seg_matches_nrrd_references(seg_file, references):
    root = realdata_path("dcmqi-ct-seg")
    masks = {v.meta["segment_number"]: v for v in read_seg_segments(root / seg_file).values()}
    assert sorted(masks) == sorted(references)
    for number, (nrrd, value) in references.items():
        ref = read_image(root / nrrd, kind="label")
        assert masks[number].geometry.same_grid(ref.geometry), nrrd
        assert np.array_equal(masks[number].array, (ref.array == value).astype(np.uint8)), (seg_file, number)


def test_dcmqi_seg_on_its_ct_and_readme_counts():
    root = realdata_path("dcmqi-ct-seg")
    ct = read_image(root / "ct-3slice")
    assert ct.shape == (512, 512, 3)
    liver = read_seg(root / "liver.dcm", reference=ct)
    assert liver.geometry.same_grid(ct.geometry) and int(liver.array.sum()) == 107_098
    with pytest.raises(InputError, match="segments 1 and 2 overlap"):
        read_seg(root / "partial_overlaps.dcm")
    # the sparse label maps were drawn on another scan: refused against this CT
    with pytest.raises(InputError, match="expected the same frame of reference"):
        read_seg(root / "sparse-labelmap-ppv5.dcm", reference=ct)


def test_jpeg2000_series_decodes_to_sane_hu():
    ct = read_image(realdata_path("totalsegmentator-j2k-ct", "example_ct_dicom"))
    assert ct.shape == (512, 512, 20) and np.allclose(ct.spacing, (0.9766, 0.9766, 2.0), atol=1e-3)
    assert int(ct.array.min()) == -1024  # air outside the body after the −1024 intercept
    assert 1000 < int(ct.array.max()) < 4000  # bone
    body = ct.array[200:312, 200:312, 10]
    assert -200 < float(np.median(body)) < 200  # soft tissue in the middle of the abdomen


def test_lidc_single_slices_give_a_clear_error():
    with pytest.raises(InputError, match=r"lidc-slices: series .* has 2 slice\(s\); expected a 3D CT"):
        read_image(realdata_path("lidc-slices"))
    with pytest.raises(InputError, match=r"has 2 slice\(s\)"):
        read_image(realdata_path("lidc-slices", "0.dcm"))
