"""Postprocessing of predicted tumour: components outside the lung region, components below N mL."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.errors import ConfigError, InputError
from rrcunet.inference import PostprocessConfig, postprocess_labels
from rrcunet.io import Geometry, Volume

GEOM = Geometry((20, 20, 10), (1.0, 1.0, 2.0))  # 2 mm³ = 0.002 mL per voxel


def _case():
    lung = np.zeros(GEOM.shape, np.uint8)
    lung[0:10] = 1                                     # lung region: the half i < 10
    lab = lung.copy()
    lab[2:5, 2:5, 2:5] = 2                             # 27 voxels inside the lung: 0.054 mL
    lab[7, 7, 7] = 2                                   # 1 voxel inside the lung: 0.002 mL
    lab[9:12, 15:17, 1:3] = 2                          # 12 voxels straddling the lung border (i = 9 inside)
    lab[15:17, 15:17, 5:7] = 2                         # 8 voxels entirely outside the lung
    return Volume(lab, GEOM, "label"), Volume(lung, GEOM, "label")


def test_outside_lung_components_are_dropped_by_default():
    pred, lung = _case()
    out, removed = postprocess_labels(pred, lung, PostprocessConfig())
    assert [(r.reason, r.n_voxels) for r in removed] == [("outside_lung", 8)]
    assert not (out.array[15:17, 15:17, 5:7] == 2).any()
    assert (out.array[15:17, 15:17, 5:7] == 0).all()            # outside the lung region → background
    assert (out.array[9:12, 15:17, 1:3] == 2).all()               # touching the lung region → kept
    assert np.count_nonzero(out.array == 2) == 27 + 1 + 12
    assert removed[0].volume_ml == pytest.approx(8 * 0.002)
    assert removed[0].centroid_mm == pytest.approx((15.5, 15.5, 11.0))
    assert (pred.array[15:17, 15:17, 5:7] == 2).all()             # the input is not modified


def test_min_volume_drops_small_components_and_restores_lung():
    pred, lung = _case()
    out, removed = postprocess_labels(pred, lung, PostprocessConfig(min_tumour_ml=0.03, keep_outside_lung=True))
    assert sorted((r.reason, r.n_voxels) for r in removed) == [("below_min_volume", 1), ("below_min_volume", 8),
                                                              ("below_min_volume", 12)]
    assert out.array[7, 7, 7] == 1                                 # inside the lung region → lung
    assert (out.array[10:12, 15:17, 1:3] == 0).all() and (out.array[9, 15:17, 1:3] == 1).all()
    assert np.count_nonzero(out.array == 2) == 27


def test_both_rules_name_outside_lung_first():
    pred, lung = _case()
    _, removed = postprocess_labels(pred, lung, PostprocessConfig(min_tumour_ml=0.03))
    assert sorted((r.reason, r.n_voxels) for r in removed) == [("below_min_volume", 1), ("below_min_volume", 12),
                                                              ("outside_lung", 8)]


def test_keep_everything_is_a_no_op():
    pred, lung = _case()
    out, removed = postprocess_labels(pred, lung, PostprocessConfig(keep_outside_lung=True))
    assert removed == [] and out is pred


def test_lung_on_another_grid_and_bad_threshold_are_refused():
    pred, _ = _case()
    other = Volume(np.zeros((20, 20, 11), np.uint8), Geometry((20, 20, 11), (1.0, 1.0, 2.0)), "label")
    with pytest.raises(InputError, match="not on the prediction's grid"):
        postprocess_labels(pred, other, PostprocessConfig())
    with pytest.raises(ConfigError, match="min_tumour_ml must be a number >= 0"):
        PostprocessConfig(min_tumour_ml=-1)


def test_each_removed_component_names_its_number_among_the_components():
    """The predictor drops the removed components from the ones it measures by these numbers."""
    from rrcunet.inference.measure import tumour_components

    pred, lung = _case()
    comps = tumour_components(np.asarray(pred.array) == 2)
    out, removed = postprocess_labels(pred, lung, PostprocessConfig(min_tumour_ml=0.03), components=comps)
    assert sorted(r.component for r in removed) == sorted(
        c for c in range(1, comps.count + 1) if not (np.asarray(out.array)[comps.box][comps.labels == c] == 2).any())
    assert all(int((comps.labels == r.component).sum()) == r.n_voxels for r in removed)
