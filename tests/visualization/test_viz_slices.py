"""Per-case slice figure."""

from __future__ import annotations

import math
import numpy as np
import pytest

from rrcunet.errors import ConfigError, InputError
from rrcunet.visualization.slices import case_figure, case_planes

def test_case_figure_writes_png(tmp_path, chest, png_check):
    ct, gt = chest
    pred = gt.with_array(np.where(gt.array == 2, 1, gt.array))
    pred.array[20:26, 28:34, 16:20] = 2
    img = png_check(case_figure(ct, gt, pred, tmp_path / "c.png", title="case <1>", dice=0.5),
                     min_bytes=20_000, max_bytes=600_000)
    h, w = img.shape[:2]
    assert 300 <= h <= 700 and 600 <= w <= 1400


def test_case_figure_without_ground_truth_and_undefined_dice(tmp_path, chest, png_check):
    ct, gt = chest
    png_check(case_figure(ct, None, gt, tmp_path / "p.png", dice=math.nan), min_bytes=20_000, max_bytes=600_000)


def test_focus_slices_go_through_the_tumour(chest):
    ct, gt = chest
    planes, masks, reason, focus = case_planes(ct, gt, gt)
    assert gt.array[focus] == 2
    assert "tumour" in reason
    for view, p in planes.items():
        assert masks["gt_tumour"][view].image[p.focus]


def test_anisotropic_pixels_are_reported_in_mm(chest):
    ct, gt = chest  # spacing (5, 5, 10)
    planes, _, _, _ = case_planes(ct, gt, gt, crop_margin_mm=None)
    assert planes["coronal"].pixel_mm == (10.0, 5.0)
    # physical height of the coronal panel = 32 slices × 10 mm, not 32 pixels
    assert planes["coronal"].image.shape[0] * planes["coronal"].pixel_mm[0] == 320.0


def test_bad_inputs(tmp_path, chest):
    ct, gt = chest
    with pytest.raises(ConfigError, match="window must be"):
        case_figure(ct, gt, gt, tmp_path / "a.png", window=(100, -100))
    with pytest.raises(InputError, match="expected the CT image"):
        case_figure(gt, gt, gt, tmp_path / "a.png")
    with pytest.raises(InputError, match="must end in .png"):
        case_figure(ct, gt, gt, tmp_path / "a.jpg")
    assert not list(tmp_path.iterdir())
