"""DICOM series: write_ct_series → read round trips, the series-choice rule and hostile folders."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, list_dicom_series, read_dicom_series, read_image, write_ct_series

OBLIQUE = tuple(Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix().ravel())


def _ct(shape=(20, 16, 8), direction=OBLIQUE, seed=0, spacing=(0.7, 0.9, 2.5)) -> Volume:
    rng = np.random.default_rng(seed)
    g = Geometry(shape, spacing, (-10.5, 20.25, -100.0), direction)
    return Volume(rng.integers(-1024, 2000, size=shape).astype(np.int16), g)


def _edit(folder, **tags):
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)


def test_round_trip_oblique_anisotropic(tmp_path):
    ct = _ct()
    files = write_ct_series(ct, tmp_path / "s", patient_id="P1")
    assert len(files) == 8 and all(f.exists() for f in files)
    back = read_image(tmp_path / "s")
    assert np.array_equal(back.array, ct.array)
    assert back.geometry.same_grid(ct.geometry, atol=1e-6)
    info = back.meta["dicom"]
    assert info.patient_id == "P1" and info.modality == "CT" and len(info.sop_instance_uids) == 8
    assert [f.split("/")[-1] for f in info.files] == [f.name for f in files]  # slice order = k order


def test_written_tags_match_geometry(tmp_path):
    ct = _ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    files = write_ct_series(ct, tmp_path / "s", patient_id="P1")
    ds = pydicom.dcmread(files[2])
    # hand-derived: IPP of slice 2 = origin + 2 * 2.5 mm along z; PixelSpacing = (row, column) spacing
    assert np.allclose([float(v) for v in ds.ImagePositionPatient], [-10.5, 20.25, -95.0])
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.7]
    assert (ds.Rows, ds.Columns) == (16, 20) and ds.Modality == "CT" and float(ds.RescaleIntercept) == -1024
    assert int(ds.pixel_array[3, 5]) - 1024 == int(ct.array[5, 3, 2])


def test_left_handed_volume_written_in_reverse_slice_order(tmp_path):
    ct = _ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    write_ct_series(ct, tmp_path / "s", patient_id="P1")
    back = read_image(tmp_path / "s")
    # same physical image: the voxel at index (i, j, k) of the original is at (i, j, n-1-k)
    assert np.array_equal(back.array, ct.array[:, :, ::-1])
    assert np.allclose(back.geometry.index_to_physical([0, 0, 0]), ct.geometry.index_to_physical([0, 0, 7]))


def test_rescale_slope_gives_float(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    _edit(tmp_path / "s", RescaleSlope=0.5)
    back = read_image(tmp_path / "s")
    ref = _ct()
    assert back.array.dtype == np.float32
    assert np.allclose(back.array, (ref.array.astype(np.float64) + 1024) * 0.5 - 1024)


def test_rescale_slope_1e30_is_refused_as_no_ct_values(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    _edit(tmp_path / "s", RescaleSlope="1e30")
    with pytest.raises(InputError, match=r"found intensities in .*e\+3\d.*Check the scan's RescaleSlope"):
        read_image(tmp_path / "s")
    assert read_image(tmp_path / "s", check_intensity=False).array.max() > 1e30  # the user's explicit choice


def test_an_mr_slice_inside_a_ct_series_is_refused(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    odd = sorted((tmp_path / "s").iterdir())[3]
    ds = pydicom.dcmread(odd)
    ds.Modality = "MR"
    ds.save_as(odd)
    with pytest.raises(InputError, match=rf"{odd.name}: modality MR inside a CT series"):
        read_image(tmp_path / "s")


def test_folder_with_two_series_chooses_ct_with_most_slices(tmp_path, caplog):
    write_ct_series(_ct(shape=(20, 16, 8)), tmp_path / "d" / "a", patient_id="P1", series_description="long")
    write_ct_series(_ct(shape=(20, 16, 5), seed=1), tmp_path / "d" / "b", patient_id="P1", series_description="short")
    with caplog.at_level(logging.INFO, logger="rrcunet.io.dicom_series"):
        vol = read_image(tmp_path / "d")
    assert vol.shape == (20, 16, 8) and vol.meta["dicom"].series_description == "long"
    assert "skipped series CT 'short'" in caplog.text
    uid_short = next(s.series_uid for s in list_dicom_series(tmp_path / "d") if s.description == "short")
    assert read_image(tmp_path / "d", series_uid=uid_short).shape == (20, 16, 5)
    with pytest.raises(InputError, match="series_uid 1.2.3 is not in this folder"):
        read_image(tmp_path / "d", series_uid="1.2.3")


def test_non_ct_series_is_skipped_in_favour_of_ct(tmp_path):
    write_ct_series(_ct(shape=(20, 16, 8)), tmp_path / "d" / "mr", patient_id="P1")
    _edit(tmp_path / "d" / "mr", Modality="MR")
    write_ct_series(_ct(shape=(20, 16, 4)), tmp_path / "d" / "ct", patient_id="P1")
    assert read_image(tmp_path / "d").meta["dicom"].modality == "CT"


def test_two_ct_series_with_equal_slice_counts_is_ambiguous(tmp_path):
    write_ct_series(_ct(), tmp_path / "d" / "a", patient_id="P1")
    write_ct_series(_ct(seed=2), tmp_path / "d" / "b", patient_id="P1")
    with pytest.raises(InputError, match="holds 2 CT series with 8 slices each.*Pass series_uid="):
        read_image(tmp_path / "d")


def test_non_ct_modality_refused_unless_allowed(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    _edit(tmp_path / "s", Modality="MR")
    with pytest.raises(InputError, match="holds no CT series.*allow_non_ct=True"):
        read_image(tmp_path / "s")
    assert read_image(tmp_path / "s", allow_non_ct=True).meta["dicom"].modality == "MR"


def test_missing_slice_reported_with_gap_position(tmp_path):
    files = write_ct_series(_ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "s", patient_id="P1")
    files[3].unlink()  # slice at z = -100 + 3 * 2.5 = -92.5 mm
    with pytest.raises(InputError, match=r"gap 5.000 mm between -95.000 and -90.000 mm \(≈1 missing slice"):
        read_image(tmp_path / "s")
    vol = read_image(tmp_path / "s", allow_nonuniform=True)
    ref = _ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)).array.astype(np.float32)
    assert vol.shape == (20, 16, 8) and vol.meta["dicom"].resampled
    assert np.allclose(vol.array[:, :, 3], (ref[:, :, 2] + ref[:, :, 4]) / 2)  # linear in the gap
    assert np.array_equal(vol.array[:, :, 5], ref[:, :, 5])


def test_single_slice_and_two_slices_refused(tmp_path):
    files = write_ct_series(_ct(shape=(20, 16, 2)), tmp_path / "s", patient_id="P1")
    with pytest.raises(InputError, match="has 2 slice\\(s\\); expected a 3D CT with at least 3 slices"):
        read_image(tmp_path / "s")
    files[1].unlink()
    with pytest.raises(InputError, match="has 1 slice\\(s\\)"):
        read_image(tmp_path / "s")


def test_duplicate_file_ignored_but_conflicting_slice_refused(tmp_path):
    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    shutil.copy(files[2], tmp_path / "s" / "copy_of_3.dcm")
    assert read_image(tmp_path / "s").shape == (20, 16, 8)
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "s" / "copy_of_3.dcm")
    with pytest.raises(InputError, match="two different slices at the same position"):
        read_image(tmp_path / "s")


def test_empty_missing_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the folder is empty"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(InputError, match="no such folder"):
        read_dicom_series(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="none of its 1 file\\(s\\) is a DICOM file"):
        read_image(tmp_path / "junk")


def test_mixed_slice_sizes_and_tilt_refused(tmp_path):
    files = write_ct_series(_ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "s", patient_id="P1")
    ds = pydicom.dcmread(files[-1])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1] + 3.0, ipp[2]]  # 3 mm sideways: a sheared / tilted stack
    ds.save_as(files[-1])
    with pytest.raises(InputError, match="gantry tilt"):
        read_image(tmp_path / "s")
    ds.ImagePositionPatient = ipp
    ds.Rows = 8
    ds.PixelData = ds.PixelData[: 8 * 20 * 2]
    ds.save_as(files[-1])
    with pytest.raises(InputError, match="slice size 20×8 differs from 20×16"):
        read_image(tmp_path / "s")


def test_corrupt_pixel_data_named(tmp_path):
    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    ds = pydicom.dcmread(files[4])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(files[4])
    with pytest.raises(InputError, match=r"CT_0005.dcm: cannot decode the pixel data"):
        read_image(tmp_path / "s")


def test_one_file_of_a_series_reads_the_series(tmp_path):
    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    assert read_image(files[0]).shape == (20, 16, 8)


def test_too_many_voxels_refused_before_decoding(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    with pytest.raises(InputError, match="exceeds the limit of 100 voxels"):
        read_image(tmp_path / "s", max_voxels=100)


def test_existing_output_folder_refused(tmp_path):
    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    with pytest.raises(InputError, match="already exists and is not empty"):
        write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    write_ct_series(_ct(shape=(20, 16, 4)), tmp_path / "s", patient_id="P1", overwrite=True)
    assert len(list((tmp_path / "s").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folders left


def test_file_truncated_in_its_header_counts_as_a_missing_slice(tmp_path):
    files = write_ct_series(_ct(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "s", patient_id="P1")
    files[4].write_bytes(files[4].read_bytes()[:200])  # preamble + a few bytes: unreadable
    with pytest.raises(InputError, match=r"≈1 missing slice\(s\) after CT_0004.dcm"):
        read_image(tmp_path / "s")


def test_a_deflated_file_that_inflates_past_the_bound_is_skipped_or_refused(tmp_path, monkeypatch, caplog):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    import rrcunet.io.dicom_series as dicom_series

    write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    bomb = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0])
    bomb.SOPInstanceUID = pydicom.uid.generate_uid()
    bomb.SeriesInstanceUID = pydicom.uid.generate_uid()
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb.add_new(0x00091010, "OB", b"\0" * (3 * 2**20))  # 3 MiB of zeros: a few kB deflated
    path = tmp_path / "s" / "zz_bomb.dcm"
    bomb.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(dicom_series, "MAX_INFLATED_BYTES", 2**20)
    with caplog.at_level(logging.WARNING, logger="rrcunet.io.dicom_series"):
        vol = read_image(tmp_path / "s")
    assert vol.shape == _ct().shape
    assert "inflates to more than 1 MiB" in caplog.text
    with pytest.raises(InputError, match="inflates to more than 1 MiB"):
        read_image(path)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"])
def test_the_pixels_are_decoded_without_parsing_the_header_again(tmp_path, monkeypatch, syntax):
    """The reader decodes each slice's pixels with pydicom.pixels.pixel_array (issue 23); explicit and
    implicit VR read the same array as a full dcmread, and a deflated series (read the full way)
    too."""
    import rrcunet.io.dicom_series as dicom_series

    ct = _ct()
    write_ct_series(ct, tmp_path / "s", patient_id="P1")
    for f in sorted((tmp_path / "s").iterdir()):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(f, implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=True, enforce_file_format=True)
    fast = read_image(tmp_path / "s")
    monkeypatch.setattr(dicom_series, "_decode_pixels", lambda path, header: dicom_series.dcmread_checked(path).pixel_array)
    full = read_image(tmp_path / "s")
    np.testing.assert_array_equal(fast.array, ct.array)
    np.testing.assert_array_equal(full.array, ct.array)


def test_headers_of_unchanged_files_are_read_once(tmp_path, monkeypatch):
    """Finding the series and reading it parse each settled header once (issue 23); a file rewritten
    since, or one modified moments ago, is parsed again, so an edit is never missed."""
    import os
    import time

    import rrcunet.io.dicom_series as dicom_series

    ct = _ct()
    files = write_ct_series(ct, tmp_path / "s", patient_id="P1")
    an_hour_ago = time.time() - 3600
    for f in files:
        os.utime(f, (an_hour_ago, an_hour_ago))
    parsed = []
    real = dicom_series.dcmread_checked
    monkeypatch.setattr(dicom_series, "dcmread_checked", lambda path, **kw: parsed.append(path) or real(path, **kw))
    monkeypatch.setattr(dicom_series, "_header_cache", type(dicom_series._header_cache)())
    list_dicom_series(tmp_path / "s")
    assert len(parsed) == len(files)
    back = read_image(tmp_path / "s")
    assert len(parsed) == len(files)  # the read parsed no header again
    np.testing.assert_array_equal(back.array, ct.array)

    # rewritten now, at the same size: parsed again, and the edit is seen
    ds = pydicom.dcmread(files[0])
    ds.Modality = "MR"
    ds.save_as(files[0])
    with pytest.raises(InputError, match="MR"):
        read_image(tmp_path / "s")
    assert parsed.count(files[0]) == 2
    # a fresh file is never kept: every read parses it
    with pytest.raises(InputError, match="MR"):
        read_image(tmp_path / "s")
    assert parsed.count(files[0]) == 3
    # at most HEADER_CACHE_FILES are kept
    monkeypatch.setattr(dicom_series, "HEADER_CACHE_FILES", 3)
    dicom_series._header_cache.clear()
    list_dicom_series(tmp_path / "s")
    assert len(dicom_series._header_cache) == 3


def test_uids_are_filled_in_on_copies_not_on_the_kept_headers(tmp_path):
    """load_series_datasets hands out the reader's kept headers (issue 23); the UIDs a SEG or
    RTSTRUCT needs are filled in on copies, so the kept headers stay as the files are."""
    from rrcunet.io.dicom_series import _with_uids

    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for ds in headers:
        del ds.FrameOfReferenceUID
    filled = _with_uids(headers)
    assert all(ds.FrameOfReferenceUID for ds in filled)
    assert all("FrameOfReferenceUID" not in ds for ds in headers)
    complete = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert all(a is b for a, b in zip(_with_uids(complete), complete))  # nothing to fill: no copies


# --------------------------------------------------------------------------------------------
# uncompressed slices read from the end of the file (dicom_series._native_pixels)


def _native_and_pydicom(path):
    from pydicom.pixels import pixel_array

    from rrcunet.io.dicom_series import _native_pixels

    header = pydicom.dcmread(path, stop_before_pixels=True)
    return _native_pixels(path, header), pixel_array(path)


def test_native_pixels_are_pydicoms_for_every_real_slice():
    from tests.conftest import realdata_path

    root = realdata_path()
    taken = 0
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM (NIfTI, README, ...)
            continue
        if "Rows" not in ds or str(ds.get("SOPClassUID", "")).startswith("1.2.840.10008.5.1.4.1.1.66"):
            continue  # not an image (SEG, RTSTRUCT)
        native, reference = _native_and_pydicom(f)
        if native is not None:
            taken += 1
            assert native.dtype == reference.dtype and np.array_equal(native, reference), f
    assert taken >= 134  # LUNG1-001's slices at least take the direct read


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
@pytest.mark.parametrize("signed", [0, 1])
def test_native_pixels_match_pydicom_with_unused_high_bits(tmp_path, syntax, signed):
    """BitsStored 12 with garbage in the four unused bits: pydicom shifts them out (sign-extending
    signed values); so does the direct read. Explicit and implicit VR little endian."""
    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    ds = pydicom.dcmread(files[0])
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 1 << 16, size=(ds.Rows, ds.Columns), dtype=np.uint16)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, signed
    ds.PixelData = raw.astype("<u2").tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    out = tmp_path / "slice.dcm"
    ds.save_as(out, implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=True, enforce_file_format=True)
    native, reference = _native_and_pydicom(out)
    assert native is not None
    assert native.dtype == reference.dtype and np.array_equal(native, reference)


def test_native_pixels_decline_a_file_with_elements_after_the_pixel_data(tmp_path):
    from pydicom.tag import Tag

    files = write_ct_series(_ct(), tmp_path / "s", patient_id="P1")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.add_new(Tag(0xFFFC, 0xFFFC), "OB", b"\0" * 8)  # Data Set Trailing Padding
        ds.save_as(f)
    native, reference = _native_and_pydicom(files[0])
    assert native is None  # the last bytes are not the pixel data: pydicom reads it
    assert np.array_equal(read_image(tmp_path / "s").array, _ct().array)
