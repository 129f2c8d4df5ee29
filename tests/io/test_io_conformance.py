"""Our DICOM outputs read by the tools hospitals and researchers use (issue 20, part 2):

* ``dciodvfy`` (dicom3tools, Debian package ``dicom3tools``) reports no error for our CT series,
  RTSTRUCT and DICOM-SEG;
* ``segimage2itkimage`` (dcmqi, PyPI ``dcmqi``: what 3D Slicer's SEG reader uses) turns our SEG back
  into masks equal to ours voxel for voxel, on the CT's grid, with our segment labels and colours;
* ``rt-utils`` (PyPI, rasterising with OpenCV's ``fillPoly``, as many research scripts do) turns our
  RTSTRUCT back into masks equal to ours voxel for voxel, with our ROI names and colours.

On a phantom written with ``--dicom`` and on the real LUNG1-001 series (its GTV-1 and lungs written
by our writers). Each test skips, naming the tool, where the tool is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from rrcunet.io import read_image, read_rtstruct, write_rtstruct, write_seg
from rrcunet.io.rtstruct import ROI_COLOURS
from rrcunet.synthetic.dataset import write_phantom_dataset
from tests.conftest import realdata_path

DCIODVFY = shutil.which("dciodvfy")
SEG2ITK = shutil.which("segimage2itkimage")
need_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (apt-get install dicom3tools)")
need_dcmqi = pytest.mark.skipif(SEG2ITK is None, reason="dcmqi not installed (pip install dcmqi, in the [test] extra)")


def dciodvfy(path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dciodvfy on one file."""
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_phantom")
    manifest = write_phantom_dataset(root, 1, seed=3, dicom=True)
    case = manifest.cases[0]
    return root, case, read_image(root / case.label, kind="label")


@pytest.fixture(scope="module")
def lung1(tmp_path_factory):
    """LUNG1-001's GTV-1 (2) and lungs (1), written by our SEG and RTSTRUCT writers on its own series."""
    series = realdata_path("nsclc-radiomics-lung1-001", "image")
    ct = read_image(series)
    rois = read_rtstruct(realdata_path("nsclc-radiomics-lung1-001", "mask_rtstruct", "1-1.dcm"), ct,
                         rois=["GTV-1", "Lung-Left", "Lung-Right"])
    labels = np.zeros(ct.shape, np.uint8)
    labels[(np.asarray(rois["Lung-Left"].array) > 0) | (np.asarray(rois["Lung-Right"].array) > 0)] = 1
    labels[np.asarray(rois["GTV-1"].array) > 0] = 2
    label = ct.with_array(labels, kind="label")
    out = tmp_path_factory.mktemp("lung1_dicom")
    seg = write_seg(label, ct.meta["dicom"], out / "seg.dcm", segment_labels={1: "Lung", 2: "Tumour"})
    rt = write_rtstruct(label, ct.meta["dicom"], out / "rtstruct.dcm")
    return series, label, seg, rt


@need_dciodvfy
def test_dciodvfy_finds_no_error_in_our_phantom_outputs(phantom):
    root, case, _ = phantom
    files = {"CT slice": sorted((root / case.source["dicom"]["ct"]).iterdir())[0],
             "RTSTRUCT": root / case.source["dicom"]["rtstruct"], "SEG": root / case.source["dicom"]["seg"]}
    for what, path in files.items():
        errors, _ = dciodvfy(path)
        assert not errors, (what, errors)


@need_dciodvfy
def test_dciodvfy_finds_no_error_in_our_outputs_on_lung1(lung1):
    _, _, seg, rt = lung1
    for what, path in (("SEG", seg), ("RTSTRUCT", rt)):
        errors, _ = dciodvfy(path)
        assert not errors, (what, errors)


def _dcmqi_masks(seg_path, out_dir) -> tuple[dict[int, object], dict]:
    out_dir.mkdir()
    proc = subprocess.run([SEG2ITK, "--inputDICOM", str(seg_path), "--outputDirectory", str(out_dir),
                           "--outputType", "nifti", "--prefix", "seg"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    meta = json.loads((out_dir / "seg-meta.json").read_text())
    masks = {}
    for group in meta["segmentAttributes"]:
        for seg in group:
            masks[int(seg["labelID"])] = seg
    return masks, meta


def _check_round_trip(seg_path, label, tmp_path):
    attrs, _ = _dcmqi_masks(seg_path, tmp_path / "dcmqi")
    expected_names = {1: "Lung", 2: "Tumour"}
    assert sorted(attrs) == [1, 2]
    for number, seg in attrs.items():
        back = read_image(tmp_path / "dcmqi" / f"seg-{number}.nii.gz", kind="label")
        assert back.geometry.same_grid(label.geometry, atol=1e-4), (back.geometry.describe(), label.geometry.describe())
        np.testing.assert_array_equal(np.asarray(back.array) > 0, np.asarray(label.array) == number)
        assert seg["SegmentLabel"] == expected_names[number]
        rgb = np.array(seg["recommendedDisplayRGBValue"])
        assert np.abs(rgb - np.array(ROI_COLOURS[number - 1])).max() <= 2  # our colour, through CIELab


@need_dcmqi
def test_dcmqi_reads_our_phantom_seg_back_voxel_for_voxel(phantom, tmp_path):
    root, case, label = phantom
    _check_round_trip(root / case.source["dicom"]["seg"], label, tmp_path)


@need_dcmqi
def test_dcmqi_reads_our_lung1_seg_back_voxel_for_voxel(lung1, tmp_path):
    _, label, seg, _ = lung1
    _check_round_trip(seg, label, tmp_path)


# --- rt-utils (PyPI ``rt-utils``, OpenCV's fillPoly underneath) reads our RTSTRUCT back -------------------

def _rt_utils():
    """rt-utils, or a skip naming the cause (it imports OpenCV, which needs libGL: ``apt-get install libgl1``)."""
    try:
        from rt_utils import RTStructBuilder
    except ImportError as exc:  # absent, or OpenCV without its shared libraries
        pytest.skip(f"rt-utils cannot be imported ({exc}); pip install rt-utils (in the [test] extra) and "
                    "apt-get install libgl1")
    return RTStructBuilder


def _rt_utils_round_trip(series_dir, rt_path, label) -> dict[str, float]:
    """Dice per ROI between rt-utils' masks of our RTSTRUCT and our label map; checks names and colours.

    rt-utils returns ``mask[row, column, s]`` with its slices sorted along the normal; each of its
    slices is put on our grid through its ImagePositionPatient, not by assuming the two orders agree.
    """
    builder = _rt_utils()
    rt = builder.create_from(dicom_series_path=str(series_dir), rt_struct_path=str(rt_path))
    names = {1: "Lung", 2: "Tumour"}
    assert sorted(rt.get_roi_names()) == sorted(names.values())
    by_number = {int(r.ROINumber): str(r.ROIName) for r in rt.ds.StructureSetROISequence}
    colours = {by_number[int(item.ReferencedROINumber)]: [int(v) for v in item.ROIDisplayColor]
               for item in rt.ds.ROIContourSequence}
    geom = label.geometry
    ks = [int(round(float(geom.physical_to_index(np.array([float(v) for v in s.ImagePositionPatient]))[2])))
          for s in rt.series_data]
    assert sorted(ks) == list(range(geom.shape[2])), "rt-utils' slices are not our slices"
    dice = {}
    for value, name in names.items():
        assert colours[name] == list(ROI_COLOURS[value - 1]), (name, colours[name])
        theirs = np.zeros(geom.shape, bool)
        mask = rt.get_roi_mask_by_name(name)
        for s, k in enumerate(ks):
            theirs[:, :, k] = mask[:, :, s].T  # [row, column] → our [x (column), y (row)]
        ours = np.asarray(label.array) == value
        dice[name] = 2.0 * float((theirs & ours).sum()) / float(theirs.sum() + ours.sum())
    return dice


def test_rt_utils_reads_our_phantom_rtstruct_back(phantom):
    root, case, label = phantom
    dice = _rt_utils_round_trip(root / case.source["dicom"]["ct"], root / case.source["dicom"]["rtstruct"], label)
    assert min(dice.values()) == 1.0, dice  # voxel for voxel, beyond the Dice >= 0.99


def test_rt_utils_reads_our_lung1_rtstruct_back(lung1):
    series, label, _, rt = lung1
    dice = _rt_utils_round_trip(series, rt, label)
    assert min(dice.values()) == 1.0, dice  # voxel for voxel, beyond the Dice >= 0.99


def test_rt_utils_overfills_contours_at_the_halfway_level(phantom, tmp_path, monkeypatch):
    """Why CONTOUR_LEVEL is 0.55: at 0.5 rt-utils rounds vertices onto outside voxels (our reader does not)."""
    import rrcunet.io.rtstruct as rtstruct

    root, case, label = phantom
    series = root / case.source["dicom"]["ct"]
    monkeypatch.setattr(rtstruct, "CONTOUR_LEVEL", 0.5)
    halfway = write_rtstruct(label, series, tmp_path / "halfway.dcm")
    back = read_rtstruct(halfway, read_image(series), rois=["Tumour"])["Tumour"]
    np.testing.assert_array_equal(np.asarray(back.array) > 0, np.asarray(label.array) == 2)
    dice = _rt_utils_round_trip(series, halfway, label)
    assert dice["Tumour"] < 0.99, dice
