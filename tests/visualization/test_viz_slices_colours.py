"""Lung and tumour are told apart by colour in the slice figures, each with its own legend entry."""

from __future__ import annotations

from rrcunet.visualization.slices import CONTOUR_COLORS


def test_lung_and_tumour_differ_by_colour_for_both_sources():
    assert len(set(CONTOUR_COLORS.values())) == 4
    for source in ("gt", "pred"):
        assert CONTOUR_COLORS[source, "lung"] != CONTOUR_COLORS[source, "tumour"]
