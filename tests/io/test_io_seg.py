"""DICOM SEG: write_seg → read_seg round trips, coded concepts and hostile SEGs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence
from scipy.spatial.transform import Rotation

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, list_segments, read_image, read_seg, read_seg_segments, write_ct_series, write_seg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # highdicom's advisory warnings


@pytest.fixture
def ct_and_labels(tmp_path):
    rot = tuple(Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix().ravel())
    g = Geometry((24, 20, 6), (0.7, 0.9, 2.5), (-10.5, 20.25, -100.0), rot)
    write_ct_series(Volume(np.full(g.shape, -700, np.int16), g), tmp_path / "ct", patient_id="P1")
    ct = read_image(tmp_path / "ct")
    labels = np.zeros(g.shape, np.uint8)
    labels[3:20, 2:16, 1:5] = 1
    labels[8:12, 6:10, 2:4] = 2
    return ct, Volume(labels, g, "label")


def test_write_read_round_trip_oblique(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    out = write_seg(lab, ct.meta["dicom"], tmp_path / "seg.dcm")
    assert list_segments(out) == ["Lung", "Tumour"]
    back = read_seg(out)
    assert np.array_equal(back.array, lab.array) and back.geometry.same_grid(lab.geometry, atol=1e-5)
    assert back.meta["segments"] == {"Lung": 1, "Tumour": 2}
    masks = read_seg_segments(out, reference=ct, segments=["tum*"])
    assert list(masks) == ["Tumour"] and np.array_equal(masks["Tumour"].array, (lab.array == 2).astype(np.uint8))
    swapped = read_seg(out, label_values={"tumour": 1, "LUNG": 5})
    assert set(np.unique(swapped.array)) == {0, 1, 5}


def test_segment_codes_and_references(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    ds = pydicom.dcmread(write_seg(lab, ct.meta["dicom"], tmp_path / "seg.dcm"))
    lung, tumour = ds.SegmentSequence
    assert lung.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"       # SCT Lung
    assert lung.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"   # Anatomical Structure
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"    # Neoplasm
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # Morph. abnormal structure
    info = ct.meta["dicom"]
    assert ds.FrameOfReferenceUID == info.frame_of_reference_uid and ds.StudyInstanceUID == info.study_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_uid


def test_write_from_folder_and_unnamed_label_refused(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    write_seg(lab, tmp_path / "ct", tmp_path / "a.dcm", segment_labels={1: "Lung", 2: "GTV"})
    assert list_segments(tmp_path / "a.dcm") == ["Lung", "GTV"]
    shuffled = sorted((tmp_path / "ct").iterdir(), reverse=True)  # file paths in any order
    write_seg(lab, shuffled, tmp_path / "c.dcm")
    assert np.array_equal(read_seg(tmp_path / "c.dcm").array, lab.array)
    with pytest.raises(InputError, match=r"label values \[2\] have no segment label"):
        write_seg(lab, ct.meta["dicom"], tmp_path / "b.dcm", segment_labels={1: "Lung"})
    with pytest.raises(InputError, match="already exists"):
        write_seg(lab, ct.meta["dicom"], tmp_path / "a.dcm")


def test_label_off_the_ct_grid_refused(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    shifted = Volume(lab.array, Geometry(lab.shape, lab.spacing, (0.0, 0.0, 0.0), lab.direction), "label")
    with pytest.raises(InputError, match="is not on the source CT grid"):
        write_seg(shifted, ct.meta["dicom"], tmp_path / "seg.dcm")


def test_seg_with_zero_segments_refused(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    ds = pydicom.dcmread(write_seg(lab, ct.meta["dicom"], tmp_path / "seg.dcm"))
    ds.SegmentSequence = Sequence()
    ds.save_as(tmp_path / "empty.dcm")
    with pytest.raises(InputError, match="holds zero segments"):
        read_seg(tmp_path / "empty.dcm")


def test_overlapping_segments_refused_in_a_label_map(tmp_path, ct_and_labels):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from rrcunet.io import load_series_datasets

    ct, lab = ct_and_labels
    sources = load_series_datasets(ct.meta["dicom"])
    both = np.zeros((6, 20, 24, 2), bool)  # (frames, rows, columns, segments)
    both[2, 5:10, 5:10, 0] = True
    both[2, 8:12, 8:12, 1] = True  # overlaps segment 1 on 2 × 2 = 4 voxels
    descs = [hd.seg.SegmentDescription(segment_number=n, segment_label=name,
                                       segmented_property_category=codes.SCT.Tissue,
                                       segmented_property_type=codes.SCT.Tissue,
                                       algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
             for n, name in ((1, "A"), (2, "B"))]
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=both, segmentation_type="BINARY",
                              segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=1,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
                              manufacturer_model_name="test", software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "overlap.dcm")
    with pytest.raises(InputError, match="segments 1 and 2 overlap on 4 voxels"):
        read_seg(tmp_path / "overlap.dcm")
    masks = read_seg_segments(tmp_path / "overlap.dcm", reference=ct)
    assert int(masks["A"].array.sum()) == 25 and int(masks["B"].array.sum()) == 16
    assert int(read_seg(tmp_path / "overlap.dcm", label_values={1: 1, 2: 1}).array.sum()) == 25 + 16 - 4
    with pytest.raises(InputError, match="is a CT Image Storage object"):
        read_seg(ct.meta["dicom"].files[0])


def test_seg_of_another_frame_of_reference_refused(tmp_path, ct_and_labels):
    ct, lab = ct_and_labels
    out = write_seg(lab, ct.meta["dicom"], tmp_path / "seg.dcm")
    other = Volume(ct.array, ct.geometry, "image", {"dicom": type(ct.meta["dicom"])(
        **{**ct.meta["dicom"].__dict__, "frame_of_reference_uid": "1.2.3"})})
    with pytest.raises(InputError, match=r"has FrameOfReferenceUID .* but the reference CT .* has 1.2.3"):
        read_seg(out, reference=other)


@pytest.mark.parametrize("shape", [(5, 7, 3), (130, 70, 9), (64, 64, 1), (1, 1, 1), (65, 129, 4, 2)])
def test_the_tiled_zyx_copy_equals_the_transpose(shape):
    # the SEG writer's (x, y, z) -> (slices, rows, cols) copy, across tile edges and with a trailing axis
    from rrcunet.io.dicom_series import zyx_copy

    a = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    out = zyx_copy(a)
    assert out.flags.c_contiguous and np.array_equal(out, np.ascontiguousarray(a.swapaxes(0, 2)))


def test_label_values_that_are_not_segment_numbers_and_other_dtypes(tmp_path, ct_and_labels):
    """Values 1..n are the segment numbers as they are (no lookup); other values go through the
    lookup; either way the SEG holds the same segments, and negative values are refused."""
    ct, lab = ct_and_labels
    arr = np.asarray(lab.array)
    direct = read_seg(write_seg(lab.with_array(arr.astype(np.int64)), ct.meta["dicom"], tmp_path / "d.dcm"))
    assert np.array_equal(direct.array, arr)
    remapped = np.select([arr == 1, arr == 2], [3, 7], 0).astype(np.int16)
    out = write_seg(lab.with_array(remapped), ct.meta["dicom"], tmp_path / "r.dcm",
                    segment_labels={3: "Lung", 7: "Tumour"})
    assert list_segments(out) == ["Lung", "Tumour"] and np.array_equal(read_seg(out).array, arr)
    negative = arr.astype(np.int16)
    negative[0, 0, 0] = -1
    with pytest.raises(InputError, match="negative values"):
        write_seg(lab.with_array(negative), ct.meta["dicom"], tmp_path / "n.dcm")
