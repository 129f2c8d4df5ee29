"""Display frame, focus choice and plane extraction (radiological convention)."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.errors import InputError
from rrcunet.io.volume import Geometry, Volume
from rrcunet.visualization.orientation import choose_focus, display_frame, orthogonal_planes
from rrcunet.visualization.slices import case_planes


def _label(shape=(40, 30, 20), spacing=(1.0, 1.0, 2.5)) -> Volume:
    return Volume(np.zeros(shape, np.uint8), Geometry(shape, spacing), "label")


def test_focus_is_centroid_of_largest_tumour_component():
    lab = _label()
    a = lab.array
    a[5:36, 3:28, 2:19] = 1
    a[10:21, 4:9, 6:11] = 2   # 11×5×5 = 275 voxels, centroid (15, 6, 8)
    a[30:33, 20:23, 15:18] = 2  # 27 voxels: smaller, ignored
    focus = choose_focus(lab, None)
    assert focus.index == (15, 6, 8)
    assert "ground truth tumour" in focus.reason


def test_focus_falls_back_to_prediction_then_lungs_then_centre():
    gt, pred = _label(), _label()
    gt.array[0:10, 0:10, 0:4] = 1          # lungs only in GT: centroid (4.5, 4.5, 1.5)
    pred.array[20:23, 10:13, 4:7] = 2      # predicted tumour centroid (21, 11, 5)
    assert choose_focus(gt, pred).index == (21, 11, 5)
    pred.array[:] = 0
    f = choose_focus(gt, pred)
    # np.rint rounds half to even: (4.5, 4.5, 1.5) → (4, 4, 2)
    assert f.index == (4, 4, 2) and "lungs" in f.reason
    gt.array[:] = 0
    assert choose_focus(gt, pred).index == (20, 15, 10)
    assert choose_focus(None, None, shape=(8, 6, 4)).index == (4, 3, 2)
    with pytest.raises(InputError, match="needs a ground truth, a prediction or a grid shape"):
        choose_focus(None, None)


def test_planes_pass_through_focus_and_follow_the_radiological_convention():
    shape = (6, 5, 4)
    arr = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    ct = Volume(arr, Geometry(shape, (1.0, 2.0, 3.0)))  # identity: i→L, j→P, k→S
    planes = orthogonal_planes(display_frame(ct), (2, 3, 1))
    ax, co, sa = planes["axial"], planes["coronal"], planes["sagittal"]
    # Hand-derived from the convention: axial rows = j (anterior first), columns = i (patient right
    # first); coronal/sagittal rows = k from superior (k = 3) down.
    np.testing.assert_array_equal(ax.image, arr[:, :, 1].T)
    np.testing.assert_array_equal(co.image, arr[:, 3, ::-1].T)
    np.testing.assert_array_equal(sa.image, arr[2, :, ::-1].T)
    assert ax.image[0, 0] == arr[0, 0, 1]      # top-left = most right-anterior voxel
    assert co.image[0, 0] == arr[0, 3, 3]      # top-left = most right-superior voxel
    assert sa.image[0, 0] == arr[2, 0, 3]      # top-left = most anterior-superior voxel
    for p in planes.values():
        assert p.image[p.focus] == arr[2, 3, 1]
    assert ax.pixel_mm == (2.0, 1.0) and co.pixel_mm == (3.0, 1.0) and sa.pixel_mm == (3.0, 2.0)
    assert ax.edges == ("R", "L", "A", "P") and co.edges == ("R", "L", "S", "I") and sa.edges == ("A", "P", "S", "I")


def _reindex(vol: Volume, *, flip: tuple[int, ...] = (), perm: tuple[int, int, int] = (0, 1, 2)) -> Volume:
    """The same anatomy stored with flipped and/or permuted array axes (geometry adjusted to match)."""
    g = vol.geometry
    d = g.direction_matrix.copy()
    origin = np.asarray(g.origin, float)
    arr = vol.array
    for ax in flip:
        origin = origin + d[:, ax] * g.spacing[ax] * (g.shape[ax] - 1)
        d[:, ax] = -d[:, ax]
        arr = np.flip(arr, axis=ax)
    arr = np.transpose(arr, perm)
    d = d[:, list(perm)]
    spacing = tuple(g.spacing[p] for p in perm)
    geom = Geometry(arr.shape, spacing, tuple(origin), tuple(d.ravel()))
    return Volume(np.ascontiguousarray(arr), geom, vol.kind, dict(vol.meta))


@pytest.mark.parametrize("flip,perm", [((0,), (0, 1, 2)), ((0, 1, 2), (0, 1, 2)), ((), (1, 0, 2)),
                                       ((2,), (2, 0, 1))])
def test_reindexed_volume_displays_identically(flip, perm, chest_factory):
    ct, gt = chest_factory((40, 36, 16), (4.0, 4.0, 8.0))
    pred = gt.with_array(np.where(gt.array == 2, 1, gt.array))
    ct2, gt2, pred2 = (_reindex(v, flip=flip, perm=perm) for v in (ct, gt, pred))
    # Sanity: the re-indexed CT really stores a different array, with the same physical voxels.
    assert not np.array_equal(ct2.array, ct.array) or ct2.shape != ct.shape
    np.testing.assert_allclose(ct2.geometry.index_to_physical(np.zeros(3)),
                               ct.geometry.index_to_physical(np.array([(s - 1) if a in flip else 0
                                                                       for a, s in enumerate(ct.shape)])))
    ref_ct, ref_masks, _, _ = case_planes(ct, gt, pred)
    got_ct, got_masks, _, _ = case_planes(ct2, gt2, pred2)
    for view in ("axial", "coronal", "sagittal"):
        np.testing.assert_array_equal(got_ct[view].image, ref_ct[view].image)
        assert got_ct[view].pixel_mm == ref_ct[view].pixel_mm
        for key in ref_masks:
            np.testing.assert_array_equal(got_masks[key][view].image, ref_masks[key][view].image)


def test_slightly_oblique_volume_displays_in_nearest_frame(chest_factory):
    ct, gt = chest_factory((40, 36, 16), (4.0, 4.0, 8.0))
    t = np.deg2rad(5.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    g = ct.geometry
    og = Geometry(g.shape, g.spacing, g.origin, tuple(rot.ravel()))
    ref, _, _, _ = case_planes(ct, gt, gt)
    got, _, _, _ = case_planes(Volume(ct.array, og), Volume(gt.array, og, "label"), Volume(gt.array, og, "label"))
    for view in ref:
        np.testing.assert_array_equal(got[view].image, ref[view].image)


def test_label_on_another_grid_is_refused(chest_factory):
    ct, gt = chest_factory((32, 32, 16), (4.0, 4.0, 8.0))
    other = Volume(gt.array, Geometry(gt.shape, (4.0, 4.0, 5.0)), "label")
    with pytest.raises(InputError, match="the prediction is not on the CT grid"):
        case_planes(ct, gt, other)


def test_crop_keeps_labelled_region_and_focus(chest_factory):
    ct, gt = chest_factory((64, 64, 32), (5.0, 5.0, 10.0))
    planes, masks, _, focus = case_planes(ct, gt, gt, crop_margin_mm=10.0)
    full, full_masks, _, _ = case_planes(ct, gt, gt, crop_margin_mm=None)
    assert planes["axial"].image.shape[0] < full["axial"].image.shape[0]
    for view in planes:
        # every lung voxel of the full plane survives the crop
        assert masks["gt_lung"][view].image.sum() == full_masks["gt_lung"][view].image.sum()
        p = planes[view]
        assert p.image[p.focus] == ct.array[focus]
