"""read_image / write_volume: round trips through NIfTI, NRRD, MHA and the refusal of hostile files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, read_image, write_volume

OBLIQUE = tuple(Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix().ravel())


def _geometry(direction=OBLIQUE) -> Geometry:
    # anisotropic spacing and an oblique direction: the geometry must survive the round trip
    return Geometry((32, 24, 16), (0.7, 0.9, 2.5), (-10.5, 20.25, -100.0), direction)


def _ct(seed: int = 0, dtype=np.int16, direction=OBLIQUE) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1024, 2000, size=(32, 24, 16)).astype(dtype), _geometry(direction))


def _label(seed: int = 1) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(0, 3, size=(32, 24, 16)).astype(np.uint8), _geometry(), "label")


def _write_mha(path, spacing: str = "1 1 1", dims: str = "4 4 4", values=None, element="MET_SHORT") -> None:
    values = np.full(64, -500, np.int16) if values is None else values
    header = (f"ObjectType = Image\nNDims = {len(dims.split())}\nDimSize = {dims}\nElementSpacing = {spacing}\n"
              f"ElementType = {element}\nElementDataFile = LOCAL\n").encode()
    path.write_bytes(header + values.tobytes())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix):
    ct, lab = _ct(), _label()
    write_volume(ct, tmp_path / f"ct{suffix}")
    write_volume(lab, tmp_path / f"lab{suffix}")
    ct2 = read_image(tmp_path / f"ct{suffix}")
    lab2 = read_image(tmp_path / f"lab{suffix}", kind="label")
    assert np.array_equal(ct2.array, ct.array) and ct2.array.dtype == np.int16
    assert np.array_equal(lab2.array, lab.array) and lab2.array.dtype == np.uint8
    # NIfTI stores the orientation as float32 quaternions, hence 1e-6 and not exact
    assert ct2.geometry.same_grid(ct.geometry, atol=1e-6)
    assert lab2.geometry.same_grid(lab.geometry, atol=1e-6)
    assert lab2.kind == "label" and ct2.meta["source"].endswith(suffix)


def test_float_image_round_trip(tmp_path):
    ct = _ct(dtype=np.float32)
    ct = ct.with_array(ct.array + 0.25)
    write_volume(ct, tmp_path / "f.nii.gz")
    back = read_image(tmp_path / "f.nii.gz")
    assert back.array.dtype == np.float32 and np.array_equal(back.array, ct.array)


def test_label_volume_with_large_values_is_written_as_int16(tmp_path):
    lab = Volume(np.full((4, 4, 4), 300, np.int32), Geometry((4, 4, 4), (1, 1, 1)), "label")
    write_volume(lab, tmp_path / "l.nrrd")
    back = read_image(tmp_path / "l.nrrd", kind="label")
    assert back.array.dtype == np.int16 and int(back.array[0, 0, 0]) == 300


def test_write_refuses_existing_file_and_unknown_suffix(tmp_path):
    ct = _ct()
    write_volume(ct, tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(ct, tmp_path / "ct.nii.gz", overwrite=True)
    with pytest.raises(InputError, match="cannot write suffix '.png'"):
        write_volume(ct, tmp_path / "ct.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]  # no temp files left behind


def test_label_with_fractional_values_refused(tmp_path):
    vol = Volume(np.full((4, 4, 4), 0.5, np.float32), Geometry((4, 4, 4), (1, 1, 1)))
    write_volume(vol, tmp_path / "p.nii.gz")
    with pytest.raises(InputError, match="non-integer label values"):
        read_image(tmp_path / "p.nii.gz", kind="label")


# ---------------------------------------------------------------------------------------------------
# hostile files
# ---------------------------------------------------------------------------------------------------
def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "x.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match="unrecognised format"):
        read_image(tmp_path / "x.png")
    (tmp_path / "garbage.nii.gz").write_bytes(b"hello world")
    with pytest.raises(InputError, match="cannot read the image header"):
        read_image(tmp_path / "garbage.nii.gz")


def test_truncated_gz_nifti_refused(tmp_path):
    write_volume(_ct(), tmp_path / "ok.nii.gz")
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(tmp_path / "cut.nii.gz")


def test_truncated_and_header_only_nifti_refused(tmp_path):
    write_volume(_ct(), tmp_path / "ok.nii")
    raw = (tmp_path / "ok.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) - 100])
    (tmp_path / "header_only.nii").write_bytes(raw[:352])
    with pytest.raises(InputError, match="truncated or header-only"):
        read_image(tmp_path / "cut.nii")
    with pytest.raises(InputError, match="holds 352 bytes"):
        read_image(tmp_path / "header_only.nii")
    # the same header-only file, gzip-compressed
    (tmp_path / "header_only.nii.gz").write_bytes(gzip.compress(raw[:352]))
    with pytest.raises(InputError, match="truncated or header-only"):
        read_image(tmp_path / "header_only.nii.gz")


def test_truncated_nrrd_refused(tmp_path):
    write_volume(_ct(), tmp_path / "ok.nrrd", compress=False)
    raw = (tmp_path / "ok.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(tmp_path / "cut.nrrd")


def test_2d_and_4d_images_refused(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((16, 16), -500, np.int16), np.eye(4)), tmp_path / "2d.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 4, 3), -500, np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="found a 2D image of size 16×16; expected a 3D volume"):
        read_image(tmp_path / "2d.nii.gz")
    with pytest.raises(InputError, match="found a 4D image of size 8×8×4×3"):
        read_image(tmp_path / "4d.nii.gz")


def test_single_slice_volume_refused(tmp_path):
    _write_mha(tmp_path / "one.mha", dims="8 8 1", values=np.full(64, -500, np.int16))
    with pytest.raises(InputError, match="single slice"):
        read_image(tmp_path / "one.mha")


@pytest.mark.parametrize("spacing", ["0 1 1", "1 1 -2", "1 1 100", "0.001 1 1"])
def test_absurd_spacing_refused(tmp_path, spacing):
    _write_mha(tmp_path / "s.mha", spacing=spacing)
    with pytest.raises(InputError, match="expected 3 finite values between 0.01 and 50.0 mm"):
        read_image(tmp_path / "s.mha")


def test_absurd_spacing_accepted_with_wider_range(tmp_path):
    _write_mha(tmp_path / "s.mha", spacing="1 1 100")
    assert read_image(tmp_path / "s.mha", spacing_range=(0.01, 200.0)).spacing == (1.0, 1.0, 100.0)


def test_too_many_voxels_refused_before_allocating(tmp_path):
    import nibabel as nib

    # the header declares 4000³ int16 voxels (128 GB) but the file holds a few bytes: only a check of
    # the header before allocating can refuse it without exhausting memory
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    (tmp_path / "huge.nii").write_bytes(header.binaryblock + b"\0" * 104)
    with pytest.raises(InputError, match="64,000,000,000 voxels exceeds the limit"):
        read_image(tmp_path / "huge.nii")
    write_volume(_ct(), tmp_path / "small.nii.gz")
    with pytest.raises(InputError, match="12,288 voxels exceeds the limit of 1,000 voxels"):
        read_image(tmp_path / "small.nii.gz", max_voxels=1000)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
def test_nan_and_inf_refused(tmp_path, suffix):
    # ITK's NIfTI reader silently turns NaN into 0: the check must read the file itself
    a = np.full((8, 8, 4), -100.0, np.float32)
    a[1, 1, 1], a[2, 2, 2] = np.nan, np.inf
    write_volume(Volume(a, Geometry((8, 8, 4), (1, 1, 1))), tmp_path / f"n{suffix}")
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / f"n{suffix}")


@pytest.mark.parametrize(
    ("values", "message"),
    [((0.0, 1.0), r"within \[0, 1\]"), ((0.0, 255.0), r"within \[0, 255\]"), ((0.0, 3000.0), "no negative")],
)
def test_non_hu_intensities_refused_unless_check_skipped(tmp_path, values, message):
    a = np.linspace(*values, num=8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    write_volume(Volume(a, Geometry((8, 8, 4), (1, 1, 1))), tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match=message):
        read_image(tmp_path / "x.nii.gz")
    assert read_image(tmp_path / "x.nii.gz", check_intensity=False).array.max() == values[1]


def test_non_orthonormal_direction_refused(tmp_path):
    _write_mha(tmp_path / "ok.mha")
    text = (tmp_path / "ok.mha").read_bytes().replace(
        b"ElementDataFile", b"TransformMatrix = 2 0 0 0 1 0 0 0 1\nElementDataFile")
    (tmp_path / "sheared.mha").write_bytes(text)
    with pytest.raises(InputError, match=r"not a rotation|cannot read the image header"):
        read_image(tmp_path / "sheared.mha")


def test_invalid_kind_refused(tmp_path):
    with pytest.raises(InputError, match="kind must be one of"):
        read_image(tmp_path, kind="mask")
