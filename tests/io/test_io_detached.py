"""A header-plus-data image (MetaImage .mhd/.mha, NRRD .nhdr/.nrrd) reads its voxels only from a data file
beside it; a header naming another file, and a non-regular input file, are refused before any read."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, read_image


@pytest.fixture
def mhd(tmp_path):
    g = Geometry((8, 8, 4), (1.0, 1.0, 1.0))
    vol = Volume((np.arange(256).reshape(g.shape) - 500).astype(np.int16), g, "image")
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ok.mhd"))
    return tmp_path / "ok.mhd"


def test_a_data_file_beside_its_header_is_read(mhd):
    assert read_image(mhd).shape == (8, 8, 4)


@pytest.mark.parametrize("target", ["/bin/ls", "../../../../etc/passwd", "sub/ok.raw", "LIST", "slice%03d.raw 1 4 1",
                                    "missing.raw"])
def test_a_header_naming_another_file_is_refused(mhd, target):
    evil = mhd.with_name("evil.mhd")
    evil.write_text(mhd.read_text().replace("ElementDataFile = ok.raw", f"ElementDataFile = {target}"))
    with pytest.raises(InputError, match=r"its header reads the voxels from .*expected a data file beside the header"):
        read_image(evil)


def test_an_nhdr_data_file_outside_its_folder_is_refused(tmp_path):
    header = tmp_path / "x.nhdr"
    header.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 2\nencoding: raw\n"
                      "data file: ../../../../etc/passwd\n\n")
    with pytest.raises(InputError, match="its header reads the voxels from '../../../../etc/passwd'"):
        read_image(header)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_before_any_read(tmp_path):
    fifo = tmp_path / "x.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(fifo)


def test_a_header_whose_data_file_is_a_fifo_is_refused_without_blocking(tmp_path):
    (tmp_path / "x.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                                    "ElementDataFile = x.raw\n")
    os.mkfifo(tmp_path / "x.raw")
    with pytest.raises(InputError, match=r"x\.raw.*found a pipe, device or socket, not a regular file"):
        read_image(tmp_path / "x.mhd")
