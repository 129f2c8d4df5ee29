"""Lesion measurements: count, volume, centroid and the RECIST-style longest axial diameter,
against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrcunet.inference import feret_diameter_2d, measure_lesions
from rrcunet.inference.measure import tumour_components
from rrcunet.io import Geometry


def test_rectangle_diameter_is_its_diagonal_edge_to_edge():
    # 10 × 4 pixels of 0.8 × 1.5 mm cover 8 mm × 6 mm: the diagonal is 10 mm.
    m = np.zeros((20, 20), bool)
    m[2:12, 5:9] = True
    d, ends = feret_diameter_2d(m, (0.8, 1.5))
    assert d == pytest.approx(10.0, abs=1e-9)
    # The endpoints are opposite corners of the rectangle (pixel edges at index ± 0.5).
    pts = sorted(tuple(round(v, 9) for v in p) for p in ends.tolist())
    assert pts in ([(1.5, 4.5), (11.5, 8.5)], [(1.5, 8.5), (11.5, 4.5)])


def test_single_pixel_and_empty_mask():
    m = np.zeros((5, 5), bool)
    assert feret_diameter_2d(m, (1.0, 1.0))[0] == 0.0
    m[2, 2] = True
    assert feret_diameter_2d(m, (0.7, 2.4))[0] == pytest.approx(math.hypot(0.7, 2.4))


def test_l_shape_uses_the_convex_hull():
    # An L: a 6-pixel row and a 6-pixel column sharing the corner pixel (0, 0), 1 mm pixels.
    # Farthest points: the far corner of the row end (5.5, -0.5) and of the column end (-0.5, 5.5):
    # distance hypot(6, 6).
    m = np.zeros((8, 8), bool)
    m[0:6, 0] = True
    m[0, 0:6] = True
    assert feret_diameter_2d(m, (1.0, 1.0))[0] == pytest.approx(math.hypot(6, 6))


def test_lesion_count_volume_and_centroid():
    geom = Geometry((30, 30, 10), (0.5, 0.5, 2.0), origin=(100.0, -50.0, 20.0))
    lab = np.zeros(geom.shape, np.uint8)
    lab[2:6, 2:6, 1:3] = 2           # 4·4·2 = 32 voxels
    lab[20:22, 20:22, 5] = 2         # 4 voxels
    lab[22, 22, 6] = 2               # touches the previous by a corner: the same lesion (26-connectivity)
    lab[10:12, 25:27, 8] = 1         # lung, not measured
    lesions = measure_lesions(lab, geom)
    assert [les.n_voxels for les in lesions] == [32, 5]
    voxel_ml = 0.5 * 0.5 * 2.0 / 1000
    assert lesions[0].volume_ml == pytest.approx(32 * voxel_ml)
    assert lesions[1].volume_ml == pytest.approx(5 * voxel_ml)
    assert lesions[0].centroid_voxel == pytest.approx((3.5, 3.5, 1.5))
    assert lesions[0].centroid_mm == pytest.approx((100 + 3.5 * 0.5, -50 + 3.5 * 0.5, 20 + 1.5 * 2.0))
    # 4 × 4 pixels of 0.5 mm: diagonal hypot(2, 2) mm.
    assert lesions[0].longest_axial_diameter_mm == pytest.approx(math.hypot(2.0, 2.0))
    assert lesions[0].bbox_voxel == ((2, 2, 1), (5, 5, 2))
    assert [les.index for les in lesions] == [1, 2]


def test_axial_plane_follows_the_direction_not_the_array_order():
    # Array axis 0 points superior, axis 1 left (x), axis 2 posterior (y): the axial plane is (j, k).
    direction = (0.0, 1.0, 0.0,
                 0.0, 0.0, 1.0,
                 1.0, 0.0, 0.0)
    geom = Geometry((10, 20, 20), (3.0, 0.6, 0.8), direction=direction)
    lab = np.zeros(geom.shape, np.uint8)
    lab[2:8, 3:13, 4:10] = 2   # 6 slices of 10 × 6 pixels of 0.6 × 0.8 mm = 6 mm × 4.8 mm
    (les,) = measure_lesions(lab, geom)
    assert les.longest_axial_diameter_mm == pytest.approx(math.hypot(6.0, 4.8))
    # Its endpoints lie in one axial plane (same superior coordinate, z in LPS).
    (p, q) = les.diameter_endpoints_mm
    assert p[2] == pytest.approx(q[2])
    assert math.dist(p, q) == pytest.approx(les.longest_axial_diameter_mm)


def test_no_tumour_no_lesion():
    assert measure_lesions(np.ones((4, 4, 4), np.uint8), Geometry((4, 4, 4), (1.0, 1.0, 1.0))) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_without_some_equal_labelling_what_is_left(seed):
    """Components.without (the predictor's measurement after postprocessing) gives exactly what
    tumour_components of the remaining mask gives: labels, numbering, box and sizes."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 36, 30), dtype=bool)
    mask[3:37, 4:33, 2:28] = rng.random((34, 29, 26)) < 0.08
    comps = tumour_components(mask)
    assert comps.count > 20
    drop = rng.random(comps.count + 1) < 0.5
    drop[1] = True  # the first in scan order, so the box and the numbering both change
    left = mask.copy()
    left[comps.box] &= ~drop[comps.labels]
    expected, got = tumour_components(left), comps.without(drop)
    assert got.offset == expected.offset and got.count == expected.count
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.sizes, expected.sizes)
    assert comps.without(np.ones(comps.count + 1, dtype=bool)).count == 0


def test_component_centroids_are_each_components_centroid():
    """component_centroids (one pass, issue 23) gives every component's centroid() on its own box,
    in the full array's indices."""
    from scipy import ndimage

    from rrcunet.inference.measure import centroid, component_centroids

    rng = np.random.default_rng(5)
    mask = np.zeros((70, 50, 30), bool)
    mask[10:60, 5:45, 4:26] = ndimage.binary_opening(rng.random((50, 40, 22)) > 0.55)
    comps = tumour_components(mask)
    assert comps.count > 20 and comps.offset != (0, 0, 0)
    full = np.zeros(mask.shape, np.int32)
    full[comps.box] = comps.labels
    numbers = np.arange(comps.count, 0, -1)
    want = [centroid(full == n) for n in numbers]
    np.testing.assert_allclose(component_centroids(comps, numbers), want, rtol=0, atol=1e-9)
