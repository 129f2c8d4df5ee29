"""Hostile inputs of issue 22's second round that are handled at the command line: each ends in one
error line naming the problem and a fix, exit status 2, no traceback and nothing written."""

from __future__ import annotations

import pytest

from rrcunet.cli.main import main
from rrcunet.io import write_volume
from tests.reliability.rel_helpers import chest_ct


def test_sliding_window_grid_above_the_bound_is_refused_before_allocating(tmp_path, capsys):
    ct = tmp_path / "ct.nii.gz"
    write_volume(chest_ct(), ct)
    out = tmp_path / "out"
    code = main(["predict", str(ct), "-o", str(out), "--sliding-window", "--target-spacing", "0.05", "0.05", "0.05",
                 "--no-progress"])
    err = capsys.readouterr()
    assert code != 0
    text = err.err + err.out
    assert "coarser --target-spacing" in text and "above the bound" in text
    assert "Traceback" not in text
    assert not out.exists() or not list(out.rglob("*_seg.nii.gz"))


def test_json_nested_200000_deep_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    code = main(["train", "--config", str(deep), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nested too deeply" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import rrcunet.synthetic.dataset as dataset

    def explode(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(dataset, "write_phantom_dataset", explode)
    code = main(["phantoms", "-n", "1", "-o", str(tmp_path / "ph")])
    err = capsys.readouterr().err
    assert code == 2 and "not enough memory" in err and "Traceback" not in err
    with pytest.raises(MemoryError):  # -v keeps the traceback for a genuine bug
        main(["-v", "phantoms", "-n", "1", "-o", str(tmp_path / "ph")])


@pytest.mark.parametrize("setting,match", [
    ("padding_value=1e30", "padding_value must be a whole HU value"),
    ("padding_value=-1024.5", "padding_value must be a whole HU value"),
    ("n_slices=[60,100000000]", "above the bound"),
])
def test_phantom_settings_beyond_their_bounds_are_refused(tmp_path, capsys, setting, match):
    out = tmp_path / "ph"
    assert main(["phantoms", "-n", "1", "--set", setting, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_second_predict_into_a_busy_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import subprocess
    import sys

    ct = tmp_path / "ct.nii.gz"
    write_volume(chest_ct(), ct)
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".rrcunet-predict.lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{live.pid}\n")
        assert main(["predict", str(ct), "-o", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"another `rrcunet predict` (process {live.pid}) is writing into this folder" in err
        assert "choose another -o folder" in err
        assert not list(out.glob("*_seg.nii.gz")) and lock.read_text() == f"{live.pid}\n"
    finally:
        live.kill()
        live.wait()
    # the holder is gone (killed): the next run takes the lock over, completes and removes it
    assert main(["predict", str(ct), "-o", str(out), "--no-progress"]) == 0
    assert list(out.glob("*_seg.nii.gz")) and not lock.exists()


def test_a_label_7_in_a_training_dataset_names_its_file(tmp_path):
    import numpy as np

    from rrcunet.data.dataset import build_cache
    from rrcunet.errors import InputError
    from rrcunet.io import read_image
    from rrcunet.preprocessing import PreprocessConfig
    from rrcunet.synthetic.dataset import write_phantom_dataset

    manifest = write_phantom_dataset(tmp_path / "ds", 1, seed=3)
    label_file = tmp_path / "ds" / manifest.cases[0].label
    label = read_image(label_file, kind="label")
    arr = np.asarray(label.array).copy()
    arr[0, 0, 0] = 7
    write_volume(label.with_array(arr), label_file, overwrite=True)
    with pytest.raises(InputError, match=rf"{label_file}: found label values 7 \(1 voxels\)"):
        build_cache(tmp_path / "ds", [manifest.cases[0].case_id], preprocess_config=PreprocessConfig(target_shape=(32, 32, 16)),
                    task="tumour")


def test_a_238_character_input_name_with_probabilities_completes_the_batch(tmp_path, capsys):
    from rrcunet.inference.batch import MAX_CASE_ID

    inputs = tmp_path / "in"
    inputs.mkdir()
    long_name = "a" * 238
    write_volume(chest_ct(), inputs / f"{long_name}.nii.gz")
    write_volume(chest_ct(seed=1), inputs / "b.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", str(inputs), "-o", str(out), "--save-probabilities", "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    long_seg = [n for n in names if n.startswith("aaaa") and n.endswith("_seg.nii.gz")]
    assert len(long_seg) == 1 and len(long_seg[0]) - len("_seg.nii.gz") == MAX_CASE_ID
    assert "b_seg.nii.gz" in names and all(len(n.encode()) <= 255 for n in names)
    # the rerun takes nothing for a new case and skips both
    assert main(["predict", str(inputs), "-o", str(out), "--save-probabilities", "--no-progress"]) == 0
    assert "0 predicted, 2 already complete" in capsys.readouterr().out


def _nest(top, depth=1100):
    """``depth`` nested folders ``top/d/d/...`` made one at a time (os.makedirs itself recurses)."""
    made = []
    deep = top
    for _ in range(depth):
        deep = deep / "d"
        deep.mkdir()
        made.append(deep)
    return made


def _unnest(made):
    """Remove them deepest first: shutil.rmtree (pytest's tmp_path cleanup) recurses and would fail."""
    for folder in reversed(made):
        folder.rmdir()


def test_1100_nested_empty_folders_beside_the_inputs(tmp_path, capsys):
    from rrcunet.io import write_ct_series

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_volume(chest_ct(), inputs / "a.nii.gz")
    dicom = tmp_path / "dicom"
    write_ct_series(chest_ct(), dicom / "ct", patient_id="P1")
    made = _nest(inputs) + _nest(dicom)
    try:
        assert main(["predict", str(inputs), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
        assert (tmp_path / "out" / "a_seg.nii.gz").is_file()
        assert "Traceback" not in capsys.readouterr().err
        # a DICOM folder holding the same deep tree: convert reads the series beside it
        assert main(["convert", str(dicom), "-o", str(tmp_path / "conv")]) == 0
        assert "Traceback" not in capsys.readouterr().err
    finally:
        _unnest(made)


def test_convert_after_a_kill_and_onto_a_folder(tmp_path, capsys):
    """A killed convert's temporary is removed by the rerun; a mask name that is an existing folder is
    refused even with --overwrite, before anything is written."""
    import os

    from rrcunet.io.atomic import temporary_prefix

    ct = tmp_path / "ct_in.nii.gz"
    write_volume(chest_ct(), ct)
    out = tmp_path / "out"
    out.mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = out / f"{temporary_prefix('ct').replace(str(os.getpid()), str(dead))}abc.part.nii.gz"
    stale.write_bytes(b"half")
    assert main(["convert", str(ct), "-o", str(out)]) == 0
    assert not stale.exists() and (out / "ct.nii.gz").is_file()
    (out / "ct.nii.gz").unlink()
    (out / "ct.nii.gz").mkdir()
    assert main(["convert", str(ct), "-o", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is a folder, where a file must be written" in err and "Traceback" not in err
    assert (out / "ct.nii.gz").is_dir()


def test_evaluate_rerun_removes_a_killed_runs_temporary_table(tmp_path):
    import os

    import numpy as np

    from rrcunet.io.atomic import temporary_prefix

    ref = chest_ct()
    labels = ref.with_array((np.asarray(ref.array) > -500).astype(np.uint8), kind="label")
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    write_volume(labels, tmp_path / "pred" / "a_seg.nii.gz")
    write_volume(labels, tmp_path / "gt" / "a.nii.gz")
    report = tmp_path / "report"
    report.mkdir()
    dead = 2**22 + 12345
    stale = report / f"{temporary_prefix('cases').replace(str(os.getpid()), str(dead))}xyz.part.csv"
    stale.write_text("half a table")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(report), "--no-progress"]) == 0
    assert not stale.exists() and (report / "summary.json").is_file()


def test_fifos_and_devices_are_refused_or_skipped_without_blocking(tmp_path, capsys, caplog):
    import os

    fifo = tmp_path / "in" / "x.nii.gz"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    for path in (fifo, "/dev/null"):
        assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
        assert "not a regular file (a pipe, device or socket)" in capsys.readouterr().err
    # in a batch folder: skipped with a warning, the real case beside it is predicted
    write_volume(chest_ct(), tmp_path / "in" / "y.nii.gz")
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out" / "y_seg.nii.gz").is_file()
    assert "named like images that are not regular files (pipes, devices or sockets): x.nii.gz" in caplog.text


def test_convert_killed_between_its_files_resumes_without_overwrite(tmp_path, capsys, monkeypatch):
    """A convert stopped after its first file (a kill: the process ends between two writes) is completed by
    the same command, without --overwrite; a different conversion into that folder is still refused."""
    import importlib

    convert_module = importlib.import_module("rrcunet.io.convert")  # the module (rrcunet.io.convert is also the function)
    from rrcunet.io import read_image, write_ct_series, write_rtstruct

    import numpy as np

    write_ct_series(chest_ct(), tmp_path / "dicom" / "P1", patient_id="P1")
    ct = read_image(tmp_path / "dicom" / "P1")
    mask = ct.with_array((np.asarray(ct.array) > 0).astype(np.uint8), kind="label")
    write_rtstruct(mask, tmp_path / "dicom" / "P1", tmp_path / "rs.dcm", roi_names={1: "Body"})
    out = tmp_path / "out"
    args = ["convert", str(tmp_path / "dicom" / "P1"), "--rtstruct", str(tmp_path / "rs.dcm"), "-o", str(out)]
    real_write = convert_module.write_volume
    calls = []

    def killed_after_one(*a, **k):
        if calls:
            raise SystemExit(137)  # the process dies here, as under SIGKILL: nothing after it runs
        calls.append(1)
        return real_write(*a, **k)

    monkeypatch.setattr(convert_module, "write_volume", killed_after_one)
    with pytest.raises(SystemExit):
        main(args)
    monkeypatch.setattr(convert_module, "write_volume", real_write)
    assert (out / "ct.nii.gz").is_file() and not (out / "Body.nii.gz").exists()
    assert main(args) == 0, capsys.readouterr().err
    body = np.asarray(read_image(out / "Body.nii.gz", kind="label").array) > 0
    assert abs(int(body.sum()) - int(mask.array.sum())) <= 0.05 * int(mask.array.sum())  # rasterised contours
    # finished: the same command again refuses to replace the outputs without --overwrite, as before
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    other = tmp_path / "other.nii.gz"
    write_volume(ct, other)
    assert main(["convert", str(other), "-o", str(out)]) == 2
