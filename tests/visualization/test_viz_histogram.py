"""Figure 7 bins and histogram."""

from __future__ import annotations

import math

import pytest

from rrcunet.errors import InputError
from rrcunet.visualization.histogram import dice_bins, dice_histogram


def test_bin_edges_follow_the_documented_inclusivity():
    values = [0.0, 0.4999, 0.5, 0.7499, 0.75, 0.8, 0.8000001, 1.0, math.nan]
    assert dice_bins(values) == {"< 0.5": 2, "0.5–0.75": 2, "0.75–0.8": 2, "> 0.8": 2, "undefined": 1}


def test_paper_counts_reproduced():
    # §4.4: 5 below 0.5, 5 in 0.5–0.75, 6 in 0.75–0.8, 24 above 0.8.
    dices = [0.3] * 5 + [0.6] * 5 + [0.78] * 6 + [0.9] * 24
    assert list(dice_bins(dices).values()) == [5, 5, 6, 24, 0]


def test_empty_and_invalid():
    assert sum(dice_bins([]).values()) == 0
    with pytest.raises(InputError, match=r"Dice scores must lie in \[0, 1\]; got \[1.2\]"):
        dice_bins([0.5, 1.2])
    with pytest.raises(InputError, match="Dice score #0 is not a number"):
        dice_bins(["abc"])  # type: ignore[list-item]


@pytest.mark.parametrize("dices", [[0.1, 0.55, 0.77, 0.9, 0.95, math.nan], []])
def test_histogram_png(tmp_path, dices, png_check):
    out = dice_histogram(dices, tmp_path / "hist.png")
    png_check(out, min_bytes=5_000, max_bytes=200_000)
