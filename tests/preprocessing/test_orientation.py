"""Canonical orientation: exact, invertible, physically consistent, for all 48 axis orders/flips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rrcunet.io.volume import Geometry
from rrcunet.preprocessing.orientation import closest_axes, orientation_step

SIGNED_PERMUTATIONS = [
    (perm, signs) for perm in itertools.permutations(range(3)) for signs in itertools.product((1, -1), repeat=3)
]


def _direction(perm: tuple[int, ...], signs: tuple[int, ...], rotation: np.ndarray | None = None) -> np.ndarray:
    """Columns of the identity, permuted and signed (optionally rotated on the left)."""
    d = np.eye(3)[:, list(perm)] * np.asarray(signs, dtype=float)
    return d if rotation is None else rotation @ d


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _check_same_voxels(geometry: Geometry, array: np.ndarray, step) -> None:
    """Every output voxel holds the input voxel at the same physical position."""
    out = step.apply(array)
    og = step.output_geometry
    assert out.shape == og.shape
    idx = np.array(list(np.ndindex(*og.shape)), dtype=float)
    old = geometry.physical_to_index(og.index_to_physical(idx))
    old_int = np.rint(old).astype(int)
    np.testing.assert_allclose(old, old_int, atol=1e-6)
    np.testing.assert_array_equal(out[tuple(idx.astype(int).T)], array[tuple(old_int.T)])


@pytest.mark.parametrize("perm,signs", SIGNED_PERMUTATIONS)
def test_all_48_axis_orders_become_identity(perm, signs):
    d = _direction(perm, signs)
    geometry = Geometry((3, 4, 5), (0.7, 1.1, 2.5), (10.0, -20.0, 30.0), tuple(d.ravel()))
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    step = orientation_step(geometry)
    np.testing.assert_allclose(step.output_geometry.direction_matrix, np.eye(3), atol=1e-12)
    _check_same_voxels(geometry, array, step)
    np.testing.assert_array_equal(step.invert(step.apply(array)), array)
    # spacing follows its axis: the 2.5 mm axis is the one that points along LPS z
    assert step.output_geometry.spacing[2] == pytest.approx(geometry.spacing[perm.index(2)])


@pytest.mark.parametrize("perm,signs", SIGNED_PERMUTATIONS[::7])
def test_oblique_remainder_is_kept(perm, signs):
    rotation = _rotation((8.0, -12.0, 5.0))
    d = _direction(perm, signs, rotation)
    geometry = Geometry((4, 3, 5), (0.8, 0.9, 3.0), (1.0, 2.0, 3.0), tuple(d.ravel()))
    step = orientation_step(geometry)
    # no resampling: the remaining tilt is exactly the rotation
    np.testing.assert_allclose(step.output_geometry.direction_matrix, rotation, atol=1e-12)
    array = np.random.default_rng(0).normal(size=geometry.shape)
    _check_same_voxels(geometry, array, step)
    np.testing.assert_array_equal(step.invert(step.apply(array)), array)


def test_leading_channel_axes_are_left_alone():
    d = _direction((2, 0, 1), (1, -1, 1))
    geometry = Geometry((3, 4, 5), (1.0, 1.0, 1.0), direction=tuple(d.ravel()))
    step = orientation_step(geometry)
    stacked = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    out = step.apply(stacked)
    np.testing.assert_array_equal(out[1], step.apply(stacked[1]))
    np.testing.assert_array_equal(step.invert(out), stacked)


def test_exact_45_degree_tie_is_deterministic():
    c = np.sqrt(0.5)
    d = np.array([[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]])  # 45° about z: x and y tie
    first = closest_axes(tuple(d.ravel()))
    assert first == closest_axes(tuple(d.ravel()))
    assert first[0] == (0, 1, 2)  # the lexicographically first permutation wins the tie
