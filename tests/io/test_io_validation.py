"""check_same_grid, validate_label and the label dtype rule."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.errors import InputError
from rrcunet.io import Geometry, Volume, check_same_grid, validate_label
from rrcunet.io.validation import to_label_array


def _vol(shape=(4, 5, 6), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), kind="image", value=0):
    return Volume(np.full(shape, value, np.uint8), Geometry(shape, spacing, origin), kind)


def test_same_grid_passes_and_each_difference_is_named():
    check_same_grid(_vol(), _vol(kind="label"), "ct.nii.gz", "lab.nii.gz")
    with pytest.raises(InputError, match=r"ct.nii.gz and label lab.nii.gz .*shape \(4, 5, 6\) vs \(4, 5, 7\)"):
        check_same_grid(_vol(), _vol(shape=(4, 5, 7)), "ct.nii.gz", "lab.nii.gz")
    with pytest.raises(InputError, match=r"spacing .* vs .*Resample the label"):
        check_same_grid(_vol(), _vol(spacing=(1.0, 1.0, 2.5)), "ct.nii.gz", "lab.nii.gz")
    with pytest.raises(InputError, match=r"origin \(0.0, 0.0, 0.0\) vs \(0.0, 0.0, 1.0\)"):
        check_same_grid(_vol(), _vol(origin=(0.0, 0.0, 1.0)), "ct.nii.gz", "lab.nii.gz")
    flipped = Geometry((4, 5, 6), (1.0, 1.0, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    with pytest.raises(InputError, match="direction"):
        check_same_grid(_vol(), flipped, "ct.nii.gz", "lab.nii.gz")


def test_validate_label_lists_unexpected_values():
    a = np.zeros((4, 4, 4), np.int16)
    a[0, 0, :2] = 3
    a[1, 1, 1] = -1
    with pytest.raises(InputError, match=r"lab.nii.gz: found label values -1 \(1 voxels\), 3 \(2 voxels\)"):
        validate_label(Volume(a, Geometry((4, 4, 4), (1, 1, 1)), "label"), "lab.nii.gz")
    ok = validate_label(Volume(a.clip(0, 2).astype(np.float32), Geometry((4, 4, 4), (1, 1, 1))), "x",
                        allowed=(0, 1, 2))
    assert ok.kind == "label" and ok.array.dtype == np.uint8
    # a custom allowed set
    validate_label(Volume(a.clip(0, 1), Geometry((4, 4, 4), (1, 1, 1)), "label"), "x", allowed=(0, 1))
    with pytest.raises(InputError, match=r"expected only \[0, 1\]"):
        validate_label(Volume(a.clip(0, 2), Geometry((4, 4, 4), (1, 1, 1)), "label"), "x", allowed=(0, 1))


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([0, 1, 2], np.uint8), ([0, 255], np.uint8), ([0, 256], np.int16), ([-1, 2], np.int16), ([True, False], np.uint8)],
)
def test_label_dtype_rule(values, dtype):
    assert to_label_array(np.array(values), "x").dtype == dtype


def test_label_out_of_int16_refused():
    with pytest.raises(InputError, match="fit int16"):
        to_label_array(np.array([0, 70000]), "x")
