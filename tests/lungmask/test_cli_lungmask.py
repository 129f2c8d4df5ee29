"""``rrcunet lungmask``: a thin CLI over extract_lungs that writes the mask on the input grid."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.cli.main import main
from rrcunet.io import read_image, write_volume
from rrcunet.lungmask import extract_lungs
from tests.lungmask.chest import synthetic_chest


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    chest = synthetic_chest(spacing=(2.5, 2.5, 5.0))
    path = tmp_path_factory.mktemp("ct") / "chest.nii.gz"
    write_volume(chest.ct, path)
    return path


def test_writes_the_library_result_on_the_input_grid(ct_file, tmp_path, capsys):
    out = tmp_path / "lungs.nii.gz"
    assert main(["lungmask", str(ct_file), "-o", str(out)]) == 0
    assert "lung region" in capsys.readouterr().out
    ct = read_image(ct_file)
    mask = read_image(out, kind="label")
    assert mask.geometry.same_grid(ct.geometry)
    np.testing.assert_array_equal(mask.array, extract_lungs(ct).array)


def test_existing_output_needs_overwrite(ct_file, tmp_path, capsys):
    out = tmp_path / "lungs.nii.gz"
    out.write_bytes(b"keep me")
    assert main(["lungmask", str(ct_file), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["lungmask", str(ct_file), "-o", str(out), "--overwrite"]) == 0
    assert read_image(out, kind="label").array.max() == 1


def test_coordunet_without_model_is_a_one_line_error(ct_file, tmp_path, capsys):
    out = tmp_path / "lungs.nii.gz"
    assert main(["lungmask", str(ct_file), "-o", str(out), "--method", "coordunet"]) == 2
    err = capsys.readouterr().err
    assert "needs --model" in err and "Traceback" not in err
    assert not out.exists()
