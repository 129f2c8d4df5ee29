"""RTSTRUCT: rasterisation golden values, ROI selection, reference checks and the writer round trip."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, list_rois, read_image, read_rtstruct, write_ct_series, write_rtstruct
from rrcunet.io.rtstruct import fill_even_odd

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture
def ct(tmp_path) -> Volume:
    g = Geometry((20, 16, 8), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
    write_ct_series(Volume(np.full(g.shape, -800, np.int16), g), tmp_path / "ct", patient_id="P1")
    return read_image(tmp_path / "ct")


def _rect(x0, x1, y0, y1, z):
    return [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]


def _make_rtstruct(path, ct: Volume, rois: dict[str, list[list[float]]], *, for_uid=None, series_uid=None):
    """A minimal RTSTRUCT (written by hand so the test does not depend on our writer)."""
    info = ct.meta["dicom"]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for_uid = for_uid or info.frame_of_reference_uid
    series = Dataset()
    series.SeriesInstanceUID = series_uid or info.series_uid
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    fr = Dataset()
    fr.FrameOfReferenceUID = for_uid
    fr.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([fr])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for n, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, for_uid
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = Sequence()
        for c in contours:
            item = Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(c) // 3
            item.ContourData = c
            rc.ContourSequence.append(item)
        ds.ROIContourSequence.append(rc)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_square_with_hole_golden_count(tmp_path, ct):
    # slice k = 3 is at z = 6 mm. Outer square: centres 2.5 < i < 9.5 → i = 3..9 (7), 3.5 < j < 7.5 →
    # j = 4..7 (4): 28 voxels. Inner square (the hole, even-odd rule): i = 5, 6 and j = 5, 6: 4 voxels.
    rs = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV-1": [_rect(2.5, 9.5, 3.5, 7.5, 6.0),
                                                             _rect(4.5, 6.5, 4.5, 6.5, 6.0)]})
    mask = read_rtstruct(rs, ct)["GTV-1"]
    assert mask.kind == "label" and mask.array.dtype == np.uint8 and mask.geometry == ct.geometry
    assert int(mask.array.sum()) == 24
    assert mask.array[3:10, 4:8, 3].sum() == 24 and mask.array[5:7, 5:7, 3].sum() == 0
    assert mask.array[:, :, [0, 1, 2, 4, 5, 6, 7]].sum() == 0


def test_two_disjoint_contours_on_one_slice_are_both_filled(tmp_path, ct):
    rs = _make_rtstruct(tmp_path / "rs.dcm", ct, {"Lung": [_rect(0.5, 2.5, 0.5, 2.5, 2.0),
                                                            _rect(10.5, 12.5, 10.5, 12.5, 2.0)]})
    assert int(read_rtstruct(rs, ct)["Lung"].array[:, :, 1].sum()) == 8


def test_contours_off_the_ct_slices_warn(tmp_path, ct, caplog):
    rs = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV": [_rect(2.5, 9.5, 3.5, 7.5, 7.0),      # between k=3 and 4
                                                           _rect(2.5, 9.5, 3.5, 7.5, 100.0),    # above the stack
                                                           _rect(2.5, 9.5, 3.5, 7.5, 4.0)]})    # on k = 2
    with caplog.at_level(logging.WARNING):
        mask = read_rtstruct(rs, ct)["GTV"]
    assert int(mask.array.sum()) == 28
    assert "2 contour(s) of ROI 'GTV' lie on no CT slice (z = 7.00, 100.00 mm)" in caplog.text


def test_roi_selection_by_name_and_pattern(tmp_path, ct):
    sq = [_rect(2.5, 9.5, 3.5, 7.5, 6.0)]
    rs = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV-1": sq, "Lung-Left": sq, "Lung-Right": sq, "Cord": sq})
    assert list_rois(rs) == ["GTV-1", "Lung-Left", "Lung-Right", "Cord"]
    assert list(read_rtstruct(rs, ct, rois=["gtv*"])) == ["GTV-1"]
    assert list(read_rtstruct(rs, ct, rois=["LUNG*", "cord"])) == ["Lung-Left", "Lung-Right", "Cord"]
    with pytest.raises(InputError, match=r"no ROI matches 'heart'; ROIs found: 'GTV-1', 'Lung-Left', 'Lung-Right', "
                                          r"'Cord'"):
        read_rtstruct(rs, ct, rois=["GTV*", "heart"])


def test_rtstruct_of_another_frame_of_reference_or_series_refused(tmp_path, ct):
    sq = [_rect(2.5, 9.5, 3.5, 7.5, 6.0)]
    other_for = "1.2.3.4.5"
    rs = _make_rtstruct(tmp_path / "a.dcm", ct, {"GTV": sq}, for_uid=other_for)
    with pytest.raises(InputError, match=rf"references FrameOfReferenceUID {other_for}.*has FrameOfReferenceUID "
                                         rf"{ct.meta['dicom'].frame_of_reference_uid}"):
        read_rtstruct(rs, ct)
    rs2 = _make_rtstruct(tmp_path / "b.dcm", ct, {"GTV": sq}, series_uid="1.2.3.9")
    with pytest.raises(InputError, match=rf"references SeriesInstanceUID 1.2.3.9.*is series "
                                         rf"{ct.meta['dicom'].series_uid}"):
        read_rtstruct(rs2, ct)
    assert int(read_rtstruct(rs2, ct, check_references=False)["GTV"].array.sum()) == 28


def test_not_an_rtstruct_refused(tmp_path, ct):
    with pytest.raises(InputError, match="is a CT Image Storage object .*expected an RT Structure Set"):
        read_rtstruct(ct.meta["dicom"].files[0], ct)
    with pytest.raises(InputError, match="no such file"):
        list_rois(tmp_path / "missing.dcm")


def test_fill_even_odd_matches_skimage_polygon_xor():
    # cross-check of our scan conversion against skimage.draw.polygon (centre-inside rule, XOR);
    # random real-valued vertices, so no centre lies exactly on an edge (ties are tested below)
    from skimage.draw import polygon

    rng = np.random.default_rng(0)
    for _ in range(40):
        polys = []
        expected = np.zeros((40, 30), bool)
        for _ in range(rng.integers(1, 4)):
            n = rng.integers(3, 12)
            centre = rng.uniform(5, 25, 2)
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(2, 12, n)
            pts = np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])
            polys.append(pts)
            rr, cc = polygon(pts[:, 0], pts[:, 1], shape=(40, 30))
            expected[rr, cc] ^= True
        assert np.array_equal(fill_even_odd(polys, (40, 30)), expected)


def test_fill_even_odd_tie_rule_on_lattice_aligned_rectangle():
    # corners on voxel centres: i in [2, 6], j in [3, 5]. Half-open rule → i = 2..5, j = 3..4, i.e. 4 × 2
    # = 8 pixels, the rectangle's area (skimage would include the boundary: 5 × 3 = 15).
    rect = np.array([[2.0, 3.0], [6.0, 3.0], [6.0, 5.0], [2.0, 5.0]])
    out = fill_even_odd([rect], (10, 10))
    assert int(out.sum()) == 8 and out[2:6, 3:5].all()
    # the same rectangle traversed the other way round, and a neighbour sharing the edge i = 6
    assert np.array_equal(fill_even_odd([rect[::-1]], (10, 10)), out)
    right = rect + [4.0, 0.0]
    assert not (fill_even_odd([right], (10, 10)) & out).any()


def test_write_rtstruct_round_trip_oblique(tmp_path):
    rot = tuple(Rotation.from_euler("xyz", [5.0, -10.0, 20.0], degrees=True).as_matrix().ravel())
    g = Geometry((24, 20, 6), (0.8, 1.1, 2.5), (-12.0, 30.0, -50.0), rot)
    write_ct_series(Volume(np.full(g.shape, -700, np.int16), g), tmp_path / "ct", patient_id="P1")
    ct = read_image(tmp_path / "ct")
    rng = np.random.default_rng(3)
    labels = np.zeros(g.shape, np.uint8)
    labels[4:18, 3:15, 1:5] = 1
    labels[8:12, 6:10, 2:4] = 2  # tumour inside the lung: the lung ROI gets a hole there
    labels[rng.random(g.shape) < 0.05] = 2  # scattered single voxels
    out = write_rtstruct(Volume(labels, g, "label"), ct.meta["dicom"], tmp_path / "rs.dcm",
                         roi_names={1: "Lung", 2: "Tumour"})
    assert list_rois(out) == ["Lung", "Tumour"]
    masks = read_rtstruct(out, ct)
    assert np.array_equal(masks["Lung"].array, (labels == 1).astype(np.uint8))
    assert np.array_equal(masks["Tumour"].array, (labels == 2).astype(np.uint8))


def test_write_rtstruct_refuses_label_off_the_ct_grid(tmp_path, ct):
    wrong = Volume(np.zeros((20, 16, 7), np.uint8), Geometry((20, 16, 7), (1.0, 1.0, 2.0)), "label")
    with pytest.raises(InputError, match="is not on the source CT grid"):
        write_rtstruct(wrong, ct.meta["dicom"], tmp_path / "rs.dcm")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_contour_data_is_one_error_naming_the_roi(tmp_path, ct, value):
    contour = _rect(2, 8, 2, 8, 4.0)
    contour[3] = value
    path = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV": [contour]})
    with pytest.raises(InputError, match=r"ROI 'GTV' has a contour whose ContourData holds NaN or Inf"):
        read_rtstruct(path, ct)


def test_empty_contour_data_is_one_error(tmp_path, ct):
    path = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV": [[]]})
    with pytest.raises(InputError, match=r"0 ContourData values; expected at least 3"):
        read_rtstruct(path, ct)


@pytest.mark.parametrize("keyword", ["ROINumber", "ReferencedROINumber"])
def test_missing_roi_number_is_one_error(tmp_path, ct, keyword):
    path = _make_rtstruct(tmp_path / "rs.dcm", ct, {"GTV": [_rect(2, 8, 2, 8, 4.0)]})
    ds = pydicom.dcmread(path)
    seq = ds.StructureSetROISequence if keyword == "ROINumber" else ds.ROIContourSequence
    del seq[0][keyword]
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=rf"has {keyword} None; expected an integer"):
        read_rtstruct(path, ct)
    if keyword == "ROINumber":
        with pytest.raises(InputError, match="ROINumber"):
            list_rois(path)


def test_a_10000_character_roi_name_makes_a_usable_file_name():
    from rrcunet.io.convert import MAX_STEM, safe_filename

    stem = safe_filename("G" * 10_000)
    assert len(stem) == MAX_STEM
    assert safe_filename("G" * 10_000, {stem.lower()}) == stem + "_2"
