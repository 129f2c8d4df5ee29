"""A corpus of hostile inputs, each refused at the command line with exit status 2, one error line
naming the file and what was wrong, no traceback, and nothing written (no output, no temporary file).

The library-level refusals are tested in tests/io (see docs/reliability.md for the map); here the
same files go through ``rrcunet convert`` (and ``evaluate`` for two label maps on different grids),
in-process with :func:`rrcunet.cli.main.main`, and a few through a real ``python -m rrcunet``
subprocess, whose stderr must not hold a traceback.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rrcunet.cli.main import main
from tests.reliability.rel_helpers import (
    chest_ct,
    ct_array,
    edit_header,
    nifti_bytes,
    run_python,
    run_rrcunet,
    small_ct,
    snapshot,
    temp_files,
    write_nifti,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # highdicom's advisory warnings

Builder = Callable[[Path], tuple[list[str], str]]
CORPUS: dict[str, Builder] = {}


def hostile(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CORPUS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# NIfTI files (header bytes written by hand where no writer would produce them)
# ---------------------------------------------------------------------------------------------
def _good_nii_gz(tmp: Path) -> Path:
    from rrcunet.io import write_volume

    return write_volume(chest_ct(), tmp / "good.nii.gz")


@hostile("truncated .nii.gz")
def _truncated_gz(tmp):
    raw = _good_nii_gz(tmp).read_bytes()
    (tmp / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    return [str(tmp / "cut.nii.gz")], "truncated"


@hostile("header-only .nii")
def _header_only(tmp):
    raw = nifti_bytes(ct_array())
    return [str(write_nifti(tmp / "hdr.nii", raw[:352]))], "holds 352 bytes .*header-only"


@hostile("header-only .nii.gz")
def _header_only_gz(tmp):
    raw = nifti_bytes(ct_array())
    return [str(write_nifti(tmp / "hdr.nii.gz", raw[:352]))], "truncated or header-only"


@hostile("not a NIfTI at all (.nii.gz suffix)")
def _garbage(tmp):
    (tmp / "garbage.nii.gz").write_bytes(gzip.compress(b"hello, I am not an image" * 10))
    return [str(tmp / "garbage.nii.gz")], "cannot read the image header"


@hostile("unknown format")
def _unknown_suffix(tmp):
    (tmp / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    return [str(tmp / "scan.png")], "unrecognised format"


@hostile("2D image")
def _image_2d(tmp):
    return [str(write_nifti(tmp / "2d.nii.gz", nifti_bytes(ct_array()[:, :, 0])))], "found a 2D image of size 16×12"


@hostile("4D image")
def _image_4d(tmp):
    a = np.stack([ct_array()] * 3, axis=-1)
    return [str(write_nifti(tmp / "4d.nii.gz", nifti_bytes(a)))], "found a 4D image of size 16×12×8×3"


@hostile("single slice")
def _single_slice(tmp):
    return [str(write_nifti(tmp / "one.nii.gz", nifti_bytes(ct_array()[:, :, :1])))], "single slice"


@hostile("RGB voxels")
def _rgb(tmp):
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return [str(write_nifti(tmp / "rgb.nii", nifti_bytes(rgb)))], "3 values per voxel"


@hostile("NaN voxels")
def _nan(tmp):
    a = ct_array().astype(np.float32)
    a[3, 3, 3] = np.nan
    return [str(write_nifti(tmp / "nan.nii.gz", nifti_bytes(a)))], "1 NaN or infinite voxels"


@hostile("Inf voxels")
def _inf(tmp):
    a = ct_array().astype(np.float32)
    a[1, 2, 3] = np.inf
    a[2, 2, 3] = -np.inf
    return [str(write_nifti(tmp / "inf.nii", nifti_bytes(a)))], "2 NaN or infinite voxels"


@hostile("constant image (all 0)")
def _constant(tmp):
    a = np.zeros((16, 12, 8), np.int16)
    return [str(write_nifti(tmp / "zeros.nii.gz", nifti_bytes(a)))], r"intensities in \[0, 0\].*Hounsfield"


@hostile("8-bit screenshot values")
def _uint8(tmp):
    a = (np.arange(16 * 12 * 8) % 256).astype(np.uint8).reshape(16, 12, 8)
    return [str(write_nifti(tmp / "u8.nii.gz", nifti_bytes(a)))], r"within \[0, 255\]"


@hostile("spacing 10 m (pixdim 10000)")
def _spacing_huge(tmp):
    raw = edit_header(nifti_bytes(ct_array()), pixdim=(1.0, 1.0, 10000.0))
    return [str(write_nifti(tmp / "far.nii.gz", raw))], "expected 3 finite values between 0.01 and 50.0 mm"


@hostile("spacing 1 µm")
def _spacing_tiny(tmp):
    raw = edit_header(nifti_bytes(ct_array()), pixdim=(0.001, 1.0, 1.0))
    return [str(write_nifti(tmp / "tiny.nii", raw))], "expected 3 finite values between 0.01 and 50.0 mm"


@hostile("zero spacing (pixdim 0)")
def _spacing_zero(tmp):
    raw = edit_header(nifti_bytes(ct_array()), pixdim=(1.0, 0.0, 1.0))
    return [str(write_nifti(tmp / "zero.nii", raw))], r"declares voxel spacing \(pixdim\) \(1.0, 0.0, 1.0\)"


@hostile("NaN spacing")
def _spacing_nan(tmp):
    raw = edit_header(nifti_bytes(ct_array()), pixdim=(1.0, 1.0, float("nan")))
    return [str(write_nifti(tmp / "nanspc.nii.gz", raw))], r"declares voxel spacing \(pixdim\) .*nan"


@hostile("negative spacing")
def _spacing_negative(tmp):
    raw = edit_header(nifti_bytes(ct_array()), pixdim=(1.0, -2.0, 1.0))
    return [str(write_nifti(tmp / "neg.nii", raw))], r"voxel spacing .*-2.0.*expected 3 finite values"


@hostile("negative dimension")
def _negative_dim(tmp):
    raw = edit_header(nifti_bytes(ct_array()), dims=(3, -16, 12, 8, 1, 1, 1, 1))
    return [str(write_nifti(tmp / "negdim.nii", raw))], "cannot read the image header"


@hostile("zero dimension")
def _zero_dim(tmp):
    raw = edit_header(nifti_bytes(ct_array()), dims=(3, 16, 0, 8, 1, 1, 1, 1))
    return [str(write_nifti(tmp / "zerodim.nii.gz", raw))], "size 16×1×8 .*at least 2 voxels along every axis"


@hostile("dim[0] out of range")
def _bad_ndim(tmp):
    raw = edit_header(nifti_bytes(ct_array()), dims=(9, 16, 12, 8, 1, 1, 1, 1))
    return [str(write_nifti(tmp / "ndim.nii", raw))], "cannot read the image header"


@hostile("unknown datatype code")
def _bad_datatype(tmp):
    raw = edit_header(nifti_bytes(ct_array()), datatype=999)
    return [str(write_nifti(tmp / "dtype.nii", raw))], "cannot read the image header"


@hostile("vox_offset beyond the file")
def _bad_offset(tmp):
    raw = edit_header(nifti_bytes(ct_array()), vox_offset=1e12)
    return [str(write_nifti(tmp / "offset.nii", raw))], "truncated or header-only"


@hostile("declared 32767×32767×1000 voxels in a 500-byte file")
def _huge_shape(tmp):
    raw = edit_header(nifti_bytes(ct_array()), dims=(3, 32767, 32767, 1000, 1, 1, 1, 1))[:500]
    return [str(write_nifti(tmp / "huge.nii.gz", raw))], "1,073,676,289,000 voxels exceeds the limit"


@hostile("sheared (non-rotation) orientation")
def _sheared(tmp):
    import nibabel as nib

    affine = np.array([[1.0, 0.8, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(ct_array(), affine)
    img.header.set_qform(None, code=0)
    img.header.set_sform(affine, code=1)
    return [str(write_nifti(tmp / "shear.nii", img.to_bytes()))], "orthonormal direction cosines"


# ---------------------------------------------------------------------------------------------
# DICOM folders and objects
# ---------------------------------------------------------------------------------------------
def _series(folder: Path, seed: int = 0, **kw):
    from rrcunet.io import write_ct_series

    return write_ct_series(small_ct(seed=seed), folder, patient_id="P1", **kw)


def _edit_dicom(folder: Path, **tags) -> None:
    import pydicom

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)


@hostile("DICOM folder with two CT series")
def _two_series(tmp):
    _series(tmp / "d" / "a", seed=0)
    _series(tmp / "d" / "b", seed=1)
    return [str(tmp / "d")], "holds 2 CT series with 6 slices each.*series_uid"


@hostile("DICOM series with a missing slice")
def _missing_slice(tmp):
    files = _series(tmp / "s")
    files[2].unlink()
    return [str(tmp / "s")], r"gap 5.000 mm .*≈1 missing slice"


@hostile("DICOM series with a slice cut short")
def _cut_slice(tmp):
    files = _series(tmp / "s")
    raw = files[3].read_bytes()
    files[3].write_bytes(raw[: len(raw) - 100])
    return [str(tmp / "s")], "CT_0004.dcm: cannot decode the pixel data"


@hostile("DICOM series of 2 slices")
def _two_slices(tmp):
    files = _series(tmp / "s")
    for f in files[2:]:
        f.unlink()
    return [str(tmp / "s")], "has 2 slice"


@hostile("non-CT modality (MR)")
def _mr(tmp):
    _series(tmp / "s")
    _edit_dicom(tmp / "s", Modality="MR")
    return [str(tmp / "s")], "holds no CT series.*allow_non_ct"


@hostile("empty folder")
def _empty(tmp):
    (tmp / "empty").mkdir()
    return [str(tmp / "empty")], "the folder is empty"


@hostile("folder without DICOM files")
def _no_dicom(tmp):
    (tmp / "notes").mkdir()
    (tmp / "notes" / "readme.txt").write_text("not DICOM")
    return [str(tmp / "notes")], "none of its 1 file\\(s\\) is a DICOM file"


def _labels_on(ct):
    from rrcunet.io import Volume

    lab = np.zeros(ct.shape, np.uint8)
    lab[4:10, 3:8, 1:4] = 1
    return Volume(lab, ct.geometry, "label")


@hostile("RTSTRUCT of another frame of reference")
def _rtstruct_other_for(tmp):
    from rrcunet.io import read_image, write_rtstruct

    _series(tmp / "A")
    _series(tmp / "B", seed=1)
    a = read_image(tmp / "A")
    write_rtstruct(_labels_on(a), a.meta["dicom"], tmp / "rs.dcm", roi_names={1: "GTV"})
    return [str(tmp / "B"), "--rtstruct", str(tmp / "rs.dcm")], "RTSTRUCT references FrameOfReferenceUID"


@hostile("RTSTRUCT of another series (same frame of reference)")
def _rtstruct_other_series(tmp):
    from rrcunet.io import read_image, write_rtstruct

    _series(tmp / "A")
    a = read_image(tmp / "A")
    _series(tmp / "B", seed=1, frame_of_reference_uid=a.meta["dicom"].frame_of_reference_uid)
    write_rtstruct(_labels_on(a), a.meta["dicom"], tmp / "rs.dcm", roi_names={1: "GTV"})
    return [str(tmp / "B"), "--rtstruct", str(tmp / "rs.dcm")], "references SeriesInstanceUID .*check_references"


@hostile("RTSTRUCT given as the image")
def _rtstruct_as_image(tmp):
    from rrcunet.io import read_image, write_rtstruct

    _series(tmp / "A")
    a = read_image(tmp / "A")
    write_rtstruct(_labels_on(a), a.meta["dicom"], tmp / "rs.dcm", roi_names={1: "GTV"})
    return [str(tmp / "rs.dcm")], "is an RTSTRUCT .* no voxel grid of its own"


@hostile("SEG with zero segments")
def _seg_zero(tmp):
    import pydicom
    from pydicom.sequence import Sequence

    from rrcunet.io import read_image, write_seg

    _series(tmp / "A")
    a = read_image(tmp / "A")
    ds = pydicom.dcmread(write_seg(_labels_on(a), a.meta["dicom"], tmp / "seg.dcm", segment_labels={1: "GTV"}))
    ds.SegmentSequence = Sequence()
    ds.save_as(tmp / "seg0.dcm")
    return [str(tmp / "A"), "--seg", str(tmp / "seg0.dcm")], "holds zero segments"


@hostile("SEG of another CT")
def _seg_other(tmp):
    from rrcunet.io import read_image, write_seg

    _series(tmp / "A")
    _series(tmp / "B", seed=1)
    a = read_image(tmp / "A")
    write_seg(_labels_on(a), a.meta["dicom"], tmp / "seg.dcm", segment_labels={1: "GTV"})
    return [str(tmp / "B"), "--seg", str(tmp / "seg.dcm")], "the SEG has FrameOfReferenceUID .* but the reference CT"


def _corrupt_sop_class_vr(path: Path) -> Path:
    """Replace the VR ``UI`` of SOPClassUID (0008,0016) by the unknown ``U\\x00`` (what the fuzzer found)."""
    raw = path.read_bytes()
    tag = b"\x08\x00\x16\x00UI"
    assert raw.count(tag) == 1
    bad = path.with_name("corrupt_" + path.name)
    bad.write_bytes(raw.replace(tag, b"\x08\x00\x16\x00U\x00"))
    return bad


@hostile("RTSTRUCT with a corrupt element (unknown VR)")
def _rtstruct_corrupt(tmp):
    from rrcunet.io import read_image, write_rtstruct

    _series(tmp / "A")
    a = read_image(tmp / "A")
    rs = _corrupt_sop_class_vr(write_rtstruct(_labels_on(a), a.meta["dicom"], tmp / "rs.dcm", roi_names={1: "GTV"}))
    return [str(tmp / "A"), "--rtstruct", str(rs)], "corrupt_rs.dcm: .*(not a readable|Unknown Value Representation)"


@hostile("SEG with a corrupt element (unknown VR)")
def _seg_corrupt(tmp):
    from rrcunet.io import read_image, write_seg

    _series(tmp / "A")
    a = read_image(tmp / "A")
    seg = _corrupt_sop_class_vr(write_seg(_labels_on(a), a.meta["dicom"], tmp / "seg.dcm", segment_labels={1: "GTV"}))
    return [str(tmp / "A"), "--seg", str(seg)], "corrupt_seg.dcm: .*(not a readable|Unknown Value Representation)"


#: corpus kinds not handled yet: kind -> reason (an xfail(strict=True) mark on that kind only)
KNOWN_FAILURES: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# the corpus through `rrcunet convert`
# ---------------------------------------------------------------------------------------------
def _assert_refused_cleanly(tmp: Path, before: dict, code: int, err: str, command: str, match: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [ln for ln in err.strip().splitlines() if ln.startswith(f"rrcunet {command}: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert re.search(match, errors[0]), errors[0]
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())
    assert snapshot(tmp) == before, "the refused command changed files"
    assert not temp_files(tmp)


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=pytest.mark.xfail(strict=True, raises=NotImplementedError, reason=KNOWN_FAILURES[k]))
    if k in KNOWN_FAILURES else k
    for k in CORPUS
])
def test_convert_refuses_hostile_input_cleanly(tmp_path, capsys, kind):
    args, match = CORPUS[kind](tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(["convert", *args, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _assert_refused_cleanly(tmp_path, before, code, err, "convert", match)
    # the message names the input file or folder it is about
    assert any(Path(a).name in err for a in args if not a.startswith("--")), err


def test_evaluate_refuses_label_maps_on_different_grids(tmp_path, capsys):
    """An image/mask (here prediction/ground-truth) geometry disagreement: exit 2, both grids named, no report."""
    from rrcunet.io import Geometry, Volume, write_volume

    a = np.zeros((16, 12, 8), np.uint8)
    a[2:12, 2:10, 1:7] = 1
    a[4:8, 4:8, 2:5] = 2
    write_volume(Volume(a, Geometry(a.shape, (1, 1, 2)), "label"), tmp_path / "gt" / "c1.nii.gz")
    write_volume(Volume(a, Geometry(a.shape, (1, 1, 2), (5.0, 0.0, 0.0)), "label"),
                 tmp_path / "pred" / "c1_seg.nii.gz")
    before = snapshot(tmp_path)
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "out"),
                 "--no-figures", "--no-progress"])
    err = capsys.readouterr().err
    _assert_refused_cleanly(tmp_path, before, code, err, "evaluate",
                            r"c1.nii.gz and prediction .*c1_seg.nii.gz are on different voxel grids .*origin")


# ---------------------------------------------------------------------------------------------
# real processes: stderr holds the one error line and never a traceback
# ---------------------------------------------------------------------------------------------
_SUBPROCESS_KINDS = ["truncated .nii.gz", "negative dimension", "zero spacing (pixdim 0)", "non-CT modality (MR)",
                     "SEG with zero segments", "RTSTRUCT of another series (same frame of reference)"]
_SEPARATOR = "=== next command ==="
_CLI_SCRIPT = f"""
import json, sys
from rrcunet.cli.main import main
codes = []
for argv in json.loads(sys.argv[1]):
    codes.append(main(argv))
    sys.stderr.write("\\n{_SEPARATOR}\\n"); sys.stderr.flush()
print(json.dumps(codes))
"""


@pytest.mark.slow
def test_refusals_in_a_real_process_print_no_traceback(tmp_path):
    """Corpus files through ``rrcunet convert`` in a fresh interpreter with the real stderr (one
    interpreter for all of them, to keep the suite fast; ``python -m rrcunet`` itself is run by
    test_rel_untrusted.py and test_rel_batch_predict.py).

    C libraries may add their own lines on stderr (niftilib's ``** ERROR: ... bad dim[1]``, ITK
    warnings, nibabel's "setting 0 dims to 1"): we require no traceback and our error as the last line.
    """
    argvs, matches, folders, before = [], [], [], []
    for kind in _SUBPROCESS_KINDS:
        case = tmp_path / re.sub(r"\W+", "_", kind)
        case.mkdir()
        args, match = CORPUS[kind](case)
        argvs.append(["convert", *args, "-o", str(case / "out")])
        matches.append(match)
        folders.append(case)
        before.append(snapshot(case))
    proc = run_python(_CLI_SCRIPT, json.dumps(argvs), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2] * len(argvs), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    chunks = proc.stderr.split(_SEPARATOR)[: len(argvs)]
    for kind, chunk, match, case, snap in zip(_SUBPROCESS_KINDS, chunks, matches, folders, before):
        last = chunk.strip().splitlines()[-1]
        assert last.startswith("rrcunet convert: error: ") and re.search(match, last), (kind, chunk)
        assert snapshot(case) == snap and not temp_files(case), kind


_MEMORY_SCRIPT = r"""
import json, resource, sys, time
from rrcunet.errors import InputError
from rrcunet.io import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    read_image(sys.argv[1])
    outcome = "read"
except InputError as exc:
    outcome = "InputError: " + str(exc)
seconds = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "grown_kb": after - before, "seconds": seconds}))
"""


@pytest.mark.parametrize("header", ["nifti1", "nifti2"])
def test_huge_declared_grid_is_refused_before_allocating(tmp_path, header):
    """A 500-byte file whose header claims 100000×100000×1000 int16 voxels (20 TB): refused from the
    header; the reading process's peak memory does not grow by more than 50 MB."""
    import nibabel as nib

    shape = (32767, 32767, 1000) if header == "nifti1" else (100000, 100000, 1000)
    hdr = nib.Nifti1Header() if header == "nifti1" else nib.Nifti2Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_zooms((1.0, 1.0, 1.0))
    path = write_nifti(tmp_path / "huge.nii", hdr.binaryblock + b"\0" * (500 - len(hdr.binaryblock) % 500))
    proc = run_python(_MEMORY_SCRIPT, str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith("InputError"), result
    if header == "nifti1":
        assert "1,073,676,289,000 voxels exceeds the limit" in result["outcome"]
    assert result["grown_kb"] < 50 * 1024, result


def test_float64_grid_within_the_voxel_bound_but_above_the_data_bound_is_refused(tmp_path):
    """512×512×2048 float64 (4.3 GB of data) in a small file: refused from the header, no allocation."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((512, 512, 2048))
    hdr.set_data_dtype(np.float64)
    hdr.set_zooms((0.7, 0.7, 0.5))
    path = write_nifti(tmp_path / "big.nii", hdr.binaryblock + b"\0" * 4)
    proc = run_python(_MEMORY_SCRIPT, str(path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith("InputError"), result
    assert "512×512×2048 voxels of 64-bit float (4.3 GB of data); the bound is 2.1 GB" in result["outcome"]
    assert result["grown_kb"] < 50 * 1024, result
