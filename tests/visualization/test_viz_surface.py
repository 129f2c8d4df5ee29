"""3D surface meshes and figure."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.io.volume import Geometry, Volume
from rrcunet.visualization.surface import label_meshes, surface_figure


def test_tumour_mesh_matches_sphere():
    shape, spacing = (60, 60, 24), (1.0, 1.0, 2.5)
    c = np.array([30.0, 30.0, 30.0])  # mm from voxel (0,0,0) centre
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    dist = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c)))
    lab = np.where(dist <= 20.0, 2, np.where(dist <= 26.0, 1, 0)).astype(np.uint8)
    meshes = label_meshes(Volume(lab, Geometry(shape, spacing), "label"), lung_mm=3.0, tumour_mm=2.0)
    t = meshes["tumour"]
    r = np.linalg.norm(t.verts - c, axis=1)
    # vertices lie on the 20 mm sphere to within about one block (2.5 mm along z)
    assert abs(np.median(r) - 20.0) < 1.5 and r.max() < 23.0 and r.min() > 17.0
    assert abs(t.volume_ml - 4 / 3 * np.pi * 20**3 / 1000) < 0.1 * 4 / 3 * np.pi * 8
    assert meshes["lung"].verts.max() > t.verts.max()


def test_empty_label_has_no_meshes(tmp_path, png_check):
    lab = Volume(np.zeros((16, 16, 8), np.uint8), Geometry((16, 16, 8), (2.0, 2.0, 4.0)), "label")
    assert label_meshes(lab) == {"lung": None, "tumour": None}
    png_check(surface_figure(lab, tmp_path / "e.png"), min_bytes=2_000, max_bytes=300_000)


def test_surface_figure_with_and_without_gt(tmp_path, chest, png_check):
    _ct, gt = chest
    pred = gt.with_array(np.where(gt.array == 2, 1, gt.array))
    png_check(surface_figure(pred, tmp_path / "s1.png", gt=gt, title="x", dice=0.0),
               min_bytes=10_000, max_bytes=600_000)
    png_check(surface_figure(gt, tmp_path / "s2.png"), min_bytes=10_000, max_bytes=600_000)


def test_surface_refuses_gt_on_another_grid(tmp_path, chest):
    from rrcunet.errors import InputError

    _ct, gt = chest
    other = Volume(gt.array, Geometry(gt.shape, (1.0, 1.0, 1.0)), "label")
    with pytest.raises(InputError, match="the ground truth is not on the prediction grid"):
        surface_figure(gt, tmp_path / "x.png", gt=other)
