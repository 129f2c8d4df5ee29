"""An output path that cannot be written (under an existing file, or a folder that cannot be
created) is one line on stderr and exit status 2 in every command that writes, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.io import Geometry, Volume, write_volume


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    g = Geometry((24, 24, 12), (2.0, 2.0, 3.0))
    hu = np.full(g.shape, -1000, np.int16)
    hu[4:20, 4:20, 2:10] = -850
    write_volume(Volume(hu, g, "image"), root / "ct.nii.gz")
    write_volume(Volume((hu > -900).astype(np.uint8), g, "label"), root / "pred" / "c_seg.nii.gz")
    write_volume(Volume((hu > -900).astype(np.uint8), g, "label"), root / "gt" / "c.nii.gz")
    (root / "a_file").write_text("in the way")
    from tests.training.conftest import write_tiny_dataset

    write_tiny_dataset(root / "dataset", n=3, n_val=1)
    return root


COMMANDS = {
    "demo": lambda r, out: ["demo", "-o", out],
    "phantoms": lambda r, out: ["phantoms", "-n", "1", "-o", out],
    "convert": lambda r, out: ["convert", str(r / "ct.nii.gz"), "-o", out],
    "lungmask": lambda r, out: ["lungmask", str(r / "ct.nii.gz"), "-o", out + ".nii.gz"],
    "predict": lambda r, out: ["predict", str(r / "ct.nii.gz"), "-o", out, "--no-progress"],
    "evaluate": lambda r, out: ["evaluate", str(r / "pred"), str(r / "gt"), "-o", out, "--no-progress"],
    "export": lambda r, out: ["export", "--format", "torchscript", "-o", out + ".pt"],
    "train": lambda r, out: ["train", "--config", "cpu_tumour", "-o", out, f"data.dataset={r / 'dataset'}",
                             "schedule.epochs=1", "runtime.progress=false"],
}


@pytest.mark.parametrize("where", ["under a file", "uncreatable"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_output_is_one_line(inputs, command, where, capsys):
    out = str(inputs / "a_file" / "out") if where == "under a file" else "/proc/rrcunet_cannot_write_here/out"
    code = main(COMMANDS[command](inputs, out))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"rrcunet {command}: error:")]
    assert len(lines) == 1 and ("a_file" in lines[0] or "/proc" in lines[0]), err


def test_an_input_error_leaves_no_empty_output_folder(inputs, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_mistyped_command_gets_a_suggestion(capsys):
    assert main(["predcit", "x", "-o", "y"]) == 2
    assert "did you mean `rrcunet predict`" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "commands: demo" in capsys.readouterr().err


def test_the_report_names_its_inputs_by_absolute_path(inputs, tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(inputs)
    assert main(["evaluate", "pred", "gt", "-o", str(tmp_path / "r"), "--no-progress", "--no-figures"]) == 0
    pair = json.loads((tmp_path / "r" / "summary.json").read_text())["pairs"][0]
    assert pair["prediction"] == str(inputs / "pred" / "c_seg.nii.gz")


def test_a_failed_case_names_its_path_once(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.nii.gz").write_bytes(b"not a NIfTI file")
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]) == 3
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rrcunet predict:")]
    bad = tmp_path / "in" / "bad.nii.gz"
    assert line.startswith(f"rrcunet predict: {bad}: ") and f"{bad}: {bad}:" not in line, line


def test_rtstruct_for_a_nifti_case_is_said_not_written(inputs, tmp_path, caplog):
    assert main(["predict", str(inputs / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--rtstruct",
                 "--no-progress", "--on-empty-lung", "full"]) == 0
    assert "--rtstruct is written only for DICOM inputs" in caplog.text and "get none: ct" in caplog.text


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import rrcunet.cli.main as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["predict", "x", "-o", "y"]) == 130
    assert capsys.readouterr().err.strip() == "rrcunet: interrupted"


def test_a_seg_of_a_single_word_patient_name_warns_nothing(tmp_path, recwarn):
    from rrcunet.io import read_image, write_ct_series, write_seg

    g = Geometry((16, 16, 4), (1.0, 1.0, 2.0))
    hu = np.full(g.shape, -800, np.int16)
    write_ct_series(Volume(hu, g, "image"), tmp_path / "ct", patient_id="LUNG1-001", patient_name="LUNG1-001")
    ct = read_image(tmp_path / "ct")
    labels = ct.with_array(np.zeros(g.shape, np.uint8), kind="label")
    labels.array[4:8, 4:8, 1:3] = 2
    write_seg(labels, ct.meta["dicom"], tmp_path / "seg.dcm")
    assert not [w for w in recwarn if "person name" in str(w.message)]
