"""``rrcunet predict`` end to end: NIfTI and DICOM inputs keep their grid, DICOM gets a SEG (and
an RTSTRUCT) referencing the source series, resume / --overwrite, bad cases and exit codes."""

from __future__ import annotations

import json
import os

import numpy as np
import pydicom
import pytest

from rrcunet.cli.main import main
from rrcunet.inference import bundled as bundled_mod
from rrcunet.io import read_image, read_rtstruct, read_seg, write_ct_series, write_volume
from tests.inference.helpers import oblique


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu", "--no-progress"])


def test_nifti_oblique_input_keeps_its_grid(cli_model, cli_chest, tmp_path, capsys):
    ct = oblique(cli_chest[0])
    write_volume(ct, tmp_path / "in" / "chest.nii.gz")
    assert _predict(tmp_path / "in", "-o", tmp_path / "out", "--model", cli_model) == 0
    assert "1 predicted" in capsys.readouterr().out
    src = read_image(tmp_path / "in" / "chest.nii.gz")
    seg = read_image(tmp_path / "out" / "chest_seg.nii.gz", kind="label")
    assert seg.geometry == src.geometry
    assert json.loads((tmp_path / "out" / "chest.json").read_text())["outputs"] == {"segmentation": "chest_seg.nii.gz"}


def test_dicom_input_gives_a_seg_and_rtstruct_referencing_the_series(cli_model, cli_chest, tmp_path):
    import highdicom as hd

    files = write_ct_series(cli_chest[0], tmp_path / "P1" / "ct", patient_id="P1")
    assert _predict(tmp_path / "P1" / "ct", "-o", tmp_path / "out", "--model", cli_model, "--rtstruct") == 0
    ct = read_image(tmp_path / "P1" / "ct")
    out = tmp_path / "out"
    seg_nii = read_image(out / "P1_seg.nii.gz", kind="label")
    assert seg_nii.geometry.same_grid(ct.geometry, atol=1e-6) and seg_nii.shape == ct.shape

    ds = pydicom.dcmread(out / "P1_seg.dcm")
    seg = hd.seg.Segmentation.from_dataset(ds)
    info = ct.meta["dicom"]
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == info.study_uid
    assert ds.FrameOfReferenceUID == info.frame_of_reference_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_uid
    referenced = {item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(info.sop_instance_uids) == {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert [d.segment_label for d in seg.SegmentSequence] == ["Lung", "Tumour"]
    # The SEG and the RTSTRUCT read back onto the CT give the NIfTI label map.
    np.testing.assert_array_equal(read_seg(out / "P1_seg.dcm", reference=ct).array, seg_nii.array)
    rois = read_rtstruct(out / "P1_rtstruct.dcm", ct)
    np.testing.assert_array_equal(rois["Tumour"].array > 0, seg_nii.array == 2)
    doc = json.loads((out / "P1.json").read_text())
    assert doc["input"]["dicom"]["series_uid"] == info.series_uid


def _stamps(folder):
    return {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in folder.iterdir()}


def test_resume_overwrite_and_a_bad_case(cli_model, cli_chest, tmp_path, capsys):
    inp = tmp_path / "in"
    write_volume(cli_chest[0], inp / "good.nii.gz")
    (inp / "bad.nii.gz").write_bytes(b"definitely not a NIfTI file")
    out = tmp_path / "out"
    assert _predict(inp, "-o", out, "--model", cli_model) == 3
    captured = capsys.readouterr()
    failures = [ln for ln in captured.err.splitlines() if ln.startswith("rrcunet predict:")]
    assert len(failures) == 1 and "bad.nii.gz" in failures[0] and "Traceback" not in captured.err
    assert "1 predicted, 0 already complete (skipped), 1 failed" in captured.out
    stamps = _stamps(out)
    assert set(stamps) == {"good_seg.nii.gz", "good.json", "bad.failed.json"}  # the failure, for `rrcunet cohort`

    (inp / "bad.nii.gz").unlink()
    assert _predict(inp, "-o", out, "--model", cli_model) == 0
    assert "0 predicted, 1 already complete (skipped)" in capsys.readouterr().out
    assert _stamps(out) == stamps
    assert _predict(inp, "-o", out, "--model", cli_model, "--overwrite") == 0
    assert "1 predicted" in capsys.readouterr().out
    assert _stamps(out)["good_seg.nii.gz"] != stamps["good_seg.nii.gz"]


def test_postprocessing_options_reach_the_json(cli_model, cli_chest, tmp_path):
    write_volume(cli_chest[0], tmp_path / "c.nii.gz")
    assert _predict(tmp_path / "c.nii.gz", "-o", tmp_path / "out", "--model", cli_model, "--min-tumour-ml", "1e6",
                    "--keep-outside-lung") == 0
    doc = json.loads((tmp_path / "out" / "c.json").read_text())
    assert doc["postprocessing"]["min_tumour_ml"] == 1e6 and doc["postprocessing"]["keep_outside_lung"] is True
    assert doc["tumour"]["n_lesions"] == 0 and doc["tumour"]["volume_ml"] == 0.0  # every component is < 1e6 mL
    assert not (read_image(tmp_path / "out" / "c_seg.nii.gz", kind="label").array == 2).any()


def test_usage_errors_are_one_line_exit_2(cli_chest, tmp_path, capsys, monkeypatch):
    write_volume(cli_chest[0], tmp_path / "c.nii.gz")
    monkeypatch.setitem(bundled_mod.BUNDLED_MODELS, "tumour", "absent_demo.safetensors")
    assert _predict(tmp_path / "c.nii.gz", "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "absent_demo.safetensors is not installed" in err and "--model PATH" in err and "Traceback" not in err
    assert _predict(tmp_path / "missing.nii.gz", "-o", tmp_path / "out", "--model", tmp_path / "c.nii.gz") == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--tta"], ["--sliding-window", "--roi-size", "16", "16", "8"], ["--bf16"],
                                   ["--channels-last"]])
def test_network_options_keep_the_grid(cli_model, cli_chest, tmp_path, extra):
    write_volume(cli_chest[0], tmp_path / "c.nii.gz")
    assert _predict(tmp_path / "c.nii.gz", "-o", tmp_path / "out", "--model", cli_model, *extra) == 0
    seg = read_image(tmp_path / "out" / "c_seg.nii.gz", kind="label")
    assert seg.geometry == read_image(tmp_path / "c.nii.gz").geometry


def test_option_defaults_are_the_config_defaults():
    from rrcunet.cli.cmd_predict import inference_config
    from rrcunet.cli.main import build_parser
    from rrcunet.inference import InferenceConfig

    for command in (["predict", "ct.nii.gz", "-o", "out"], ["demo"]):
        assert inference_config(build_parser().parse_args(command)) == InferenceConfig()


def test_device_cuda_index(tmp_path, capsys, monkeypatch):
    import torch

    from rrcunet.cli.cmd_predict import inference_config
    from rrcunet.cli.main import build_parser
    from rrcunet.errors import ConfigError

    def parse(device):
        return build_parser().parse_args(["predict", "ct.nii.gz", "-o", "out", "--device", device])

    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "cuda1", "CPU"):
        with pytest.raises(SystemExit) as exc:
            parse(bad)
        assert exc.value.code == 2 and "expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert parse(good).device == good
    # Without that GPU: a one-line usage error before any model is loaded.
    assert main(["predict", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out"), "--device", "cuda:99"]) == 2
    assert "--device cuda:99: no CUDA device 99" in capsys.readouterr().err
    # With it: the config carries the index and the predictor runs on that GPU.
    from rrcunet.inference.predictor import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert inference_config(parse("cuda:1")).device == "cuda:1"
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="sees 2 CUDA device"):
        resolve_device(inference_config(parse("cuda:2")).device)


def test_rerun_with_another_option_predicts_again_and_says_so(cli_model, cli_chest, tmp_path, capsys):
    inp = tmp_path / "in"
    write_volume(cli_chest[0], inp / "good.nii.gz")
    out = tmp_path / "out"
    assert _predict(inp, "-o", out, "--model", cli_model) == 0
    capsys.readouterr()
    assert _predict(inp, "-o", out, "--model", cli_model, "--min-tumour-ml", "7") == 0
    captured = capsys.readouterr()
    assert "1 predicted, 0 already complete (skipped), 0 failed; 1 predicted again" in captured.out
    (line,) = [ln for ln in captured.out.splitlines() if ln.startswith("good: ")]  # one line per case
    assert "lesion(s)" in line and "mL tumour" in line and "predicted again" in line
    assert json.loads((out / "good.json").read_text())["postprocessing"]["min_tumour_ml"] == 7.0
    assert _predict(inp, "-o", out, "--model", cli_model, "--min-tumour-ml", "7") == 0
    assert "0 predicted, 1 already complete (skipped)" in capsys.readouterr().out


def test_the_fix_an_error_suggests_works_on_the_same_command(cli_model, cli_chest, tmp_path, capsys):
    ct = cli_chest[0]
    stored = (ct.array.astype("int32").clip(-1024, None) + 1024).astype("int16")  # pixel values, no intercept
    write_volume(ct.with_array(stored), tmp_path / "in" / "raw.nii.gz")
    args = [tmp_path / "in", "-o", tmp_path / "out", "--model", cli_model]
    assert _predict(*args) == 3
    assert "--no-intensity-check" in capsys.readouterr().err
    # what it suggests is an option of predict; with it, no lung is found in the shifted values, and that
    # message's own advice (--on-empty-lung full) is an option of predict too
    code = _predict(*args, "--no-intensity-check")
    err = capsys.readouterr().err
    assert code == 0 or "--on-empty-lung full" in err
    assert _predict(*args, "--no-intensity-check", "--on-empty-lung", "full") == 0


def _blank_uids(folder):
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            setattr(ds, keyword, "")
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        ds.save_as(f, enforce_file_format=True)


def test_a_series_without_uids_gets_generated_ones_and_its_seg(cli_model, cli_chest, tmp_path, capsys, caplog):
    write_ct_series(cli_chest[0], tmp_path / "P9" / "ct", patient_id="P9")
    _blank_uids(tmp_path / "P9" / "ct")
    out = tmp_path / "out"
    assert _predict(tmp_path / "P9" / "ct", "-o", out, "--model", cli_model, "--rtstruct") == 0
    assert "generated UIDs" in caplog.text
    doc = json.loads((out / "P9.json").read_text())
    assert doc.get("status") != "started" and "output_errors" not in doc
    seg = pydicom.dcmread(out / "P9_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID  # a valid reference, not ''


def test_a_failing_optional_output_keeps_the_mask_and_is_reported(cli_model, cli_chest, tmp_path, capsys,
                                                                 monkeypatch):
    import rrcunet.inference.batch as batch

    def broken(*args, **kwargs):
        raise KeyError("")

    monkeypatch.setattr(batch, "write_seg", broken)
    write_ct_series(cli_chest[0], tmp_path / "P8" / "ct", patient_id="P8")
    out = tmp_path / "out"
    assert _predict(tmp_path / "P8" / "ct", "-o", out, "--model", cli_model) == 3
    captured = capsys.readouterr()
    assert "P8" in captured.err and "dicom_seg not written: KeyError" in captured.err
    assert "without one of the requested DICOM outputs" in captured.out
    doc = json.loads((out / "P8.json").read_text())
    assert doc.get("status") != "started"  # the finished record, not the crash marker
    assert "dicom_seg" in doc["output_errors"] and "dicom_seg" not in doc["outputs"]
    assert read_image(out / "P8_seg.nii.gz", kind="label").shape == cli_chest[0].shape
