"""Rendered phantoms (small preset): determinism, Hounsfield units per tissue, labels, tumour
placement by location class, orientation options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from rrcunet.errors import ConfigError
from rrcunet.synthetic import LOCATIONS, PhantomConfig, TumourSpec, generate_phantom
from rrcunet.synthetic.anatomy import (
    T_AIR,
    T_AIRWALL,
    T_BLOOD,
    T_CANAL,
    T_CARTILAGE,
    T_CONTRAST_BLOOD,
    T_CORTEX,
    T_FAT,
    T_LYMPH,
    T_MARROW,
    T_MEDFAT,
    T_MUSCLE,
    T_MYOCARD,
    T_OESOPH,
    T_SKIN,
)

SMALL = PhantomConfig.preset("small")
CHEST_WALL = (T_SKIN, T_FAT, T_MUSCLE, T_CORTEX, T_MARROW, T_CARTILAGE)
MEDIASTINUM = (T_MEDFAT, T_BLOOD, T_MYOCARD, T_CONTRAST_BLOOD, T_AIRWALL, T_OESOPH, T_LYMPH)


@pytest.fixture(scope="module")
def phantoms():
    return {seed: generate_phantom(seed, config=SMALL) for seed in (0, 1, 2)}


def test_same_seed_gives_identical_bytes(phantoms):
    again = generate_phantom(1, config=SMALL)
    ref = phantoms[1]
    for name in ("image", "label", "lungs"):
        a, b = getattr(ref, name), getattr(again, name)
        assert a.array.dtype == b.array.dtype
        assert a.array.tobytes() == b.array.tobytes(), name
        assert a.geometry == b.geometry
    assert ref.facts == again.facts


def test_different_seeds_differ(phantoms):
    a, b = phantoms[0].image, phantoms[1].image
    assert a.geometry != b.geometry or not np.array_equal(a.array, b.array)
    assert phantoms[0].facts.anatomy != phantoms[1].facts.anatomy


def test_arrays_types_and_label_values(phantoms):
    for ph in phantoms.values():
        assert ph.image.array.dtype == np.int16 and ph.image.kind == "image"
        assert ph.label.kind == "label" and ph.lungs.kind == "label"
        assert set(np.unique(ph.label.array)) <= {0, 1, 2}
        assert set(np.unique(ph.lungs.array)) <= {0, 1}
        assert ph.image.geometry == ph.label.geometry == ph.lungs.geometry
        assert -1024 <= ph.image.array.min() and ph.image.array.max() <= 3071
        # The lung-region mask is exactly lung ∪ tumour.
        np.testing.assert_array_equal(ph.lungs.array, (ph.label.array > 0).astype(np.uint8))


def _interior(tissues: np.ndarray, ids) -> np.ndarray:
    """Voxels of the given tissues away from their boundary (no partial volume)."""
    return ndimage.binary_erosion(np.isin(tissues, ids))


def test_hounsfield_units_per_tissue(phantoms):
    for seed, ph in phantoms.items():
        a, t, lab = ph.image.array, ph.tissues.array, ph.label.array
        lung = np.median(a[lab == 1])
        assert -900 <= lung <= -780, (seed, lung)
        fat = np.median(a[_interior(t, [T_FAT])])
        assert -130 <= fat <= -65, (seed, fat)
        muscle = np.median(a[_interior(t, [T_MUSCLE])])
        assert 5 <= muscle <= 70, (seed, muscle)
        bone = a[np.isin(t, [T_CORTEX, T_MARROW])]
        assert np.median(bone) > 120 and np.percentile(bone, 95) > 350, (seed, np.median(bone))
        canal = np.median(a[np.isin(t, [T_CANAL])])
        assert -20 <= canal <= 60
        air = a[_interior(t, [T_AIR]) & (a > ph.facts.acquisition["padding_value"])]
        assert abs(np.median(air) + 1000) <= 15
        if ph.facts.acquisition["fov_padding"]:
            assert a[0, 0, 0] == ph.facts.acquisition["padding_value"]


def test_lung_shape_is_plausible(phantoms):
    """Two lungs separated by the mediastinum, tapering to the apices, left lung smaller (heart)."""
    for ph in phantoms.values():
        lung = ph.label.array == 1
        g = ph.image.geometry
        labels, n = ndimage.label(lung)
        sizes = np.sort(ndimage.sum_labels(lung, labels, range(1, n + 1)))[::-1]
        assert n >= 2 and sizes[1] > 0.5 * sizes[0]  # two big lungs
        area = lung.sum(axis=(0, 1)).astype(float)
        ks = np.nonzero(area)[0]
        top = area[ks[-1] - 2: ks[-1] + 1].mean()
        assert top < 0.35 * area.max()  # apices are narrow domes, not flat-topped
        mid = g.shape[0] // 2
        # patient left (+x) is high i; the cardiac notch makes the left lung smaller.
        right, left = lung[:mid].sum(), lung[mid:].sum()
        assert left < right


def test_requested_tumours_and_their_location_classes():
    """Each location class is produced, and the masks show the contact the class promises."""
    for i, loc in enumerate(LOCATIONS):
        cfg = PhantomConfig.preset("small", tumours=(TumourSpec(kind="round", location=loc, diameter_mm=24.0),))
        ph = generate_phantom(40 + i, config=cfg)
        (t,) = ph.facts.tumours
        tum = ph.label.array == 2
        assert tum.sum() == t.n_voxels > 0
        assert t.location == loc, (loc, t)
        assert abs(t.volume_ml - t.n_voxels * ph.image.geometry.voxel_volume_ml) < 1e-2
        near = ndimage.binary_dilation(tum) & ~tum
        tissues = ph.tissues.array
        touches_wall = np.isin(tissues[near], CHEST_WALL).any() or t.touches_chest_wall
        touches_med = np.isin(tissues[near | tum], MEDIASTINUM).any()
        if loc == "juxta_pleural":
            assert t.touches_chest_wall and touches_wall
            # The lung-region channel holds the tumour even where it abuts the chest wall.
            assert ph.lungs.array[tum].mean() >= 0.95
        elif loc == "mediastinal":
            assert t.touches_mediastinum and touches_med
        else:
            assert not t.touches_chest_wall and not t.touches_mediastinum
            assert not np.isin(tissues[near], CHEST_WALL).any()
        # The reported centre lies in the tumour's bounding box.
        lo, hi = np.array(t.bbox_voxel[0]), np.array(t.bbox_voxel[1])
        assert np.all(np.array(t.centre_voxel) >= lo - 0.5) and np.all(np.array(t.centre_voxel) <= hi)


def test_no_tumour_when_none_requested():
    ph = generate_phantom(7, config=PhantomConfig.preset("small", tumours=()))
    assert ph.facts.tumours == () and not (ph.label.array == 2).any()


@pytest.mark.parametrize("direction", ["flipped", "oblique"])
def test_orientation_options_keep_the_anatomy(direction):
    ref = generate_phantom(11, config=SMALL)
    ph = generate_phantom(11, config=PhantomConfig.preset("small", direction=direction))
    d = np.asarray(ph.image.direction).reshape(3, 3)
    assert np.allclose(d @ d.T, np.eye(3), atol=1e-6)
    assert not np.allclose(d, np.eye(3))
    if direction == "flipped":
        # Same physical voxels, slices stored in reverse order.
        np.testing.assert_array_equal(ph.label.array, ref.label.array[:, :, ::-1])
        assert np.allclose(ph.image.geometry.index_to_physical([0, 0, ph.image.shape[2] - 1]),
                           ref.image.geometry.index_to_physical([0, 0, 0]), atol=1e-3)
    else:
        vol = (ph.label.array == 1).sum() / (ref.label.array == 1).sum()
        assert 0.97 < vol < 1.03  # same lungs, resampled on a tilted grid
    assert [t.kind for t in ph.facts.tumours] == [t.kind for t in ref.facts.tumours]


def test_sharp_kernel_option_changes_only_the_image_texture(phantoms):
    """``sharp_kernel_probability``: an unsharp mask after the PSF, drawn from its own stream, so the
    anatomy, tumours, labels and every other acquisition draw of the seed are those of the soft scan."""
    soft = phantoms[2]
    cfg = dataclasses.replace(SMALL, sharp_kernel_probability=1.0)
    sharp = generate_phantom(2, config=cfg)
    again = generate_phantom(2, config=cfg)
    assert sharp.image.array.tobytes() == again.image.array.tobytes()  # deterministic
    for name in ("label", "lungs"):
        assert getattr(sharp, name).array.tobytes() == getattr(soft, name).array.tobytes(), name
    acq_soft, acq_sharp = dict(soft.facts.acquisition), dict(sharp.facts.acquisition)
    assert "kernel_sharpening" not in acq_soft  # the default writes what it wrote before the option
    amount = acq_sharp.pop("kernel_sharpening")
    assert cfg.sharp_kernel_gain[0] <= amount <= cfg.sharp_kernel_gain[1]
    assert acq_sharp == acq_soft
    # more high-frequency energy inside the lungs (edges and noise); the same median HU away from
    # their edges (the mask adds no offset; near edges it overshoots, and clipping at -1024 HU skews
    # the mean)
    lungs = soft.lungs.array.astype(bool)
    hf_soft = ndimage.laplace(soft.image.array.astype(np.float32))[lungs].std()
    hf_sharp = ndimage.laplace(sharp.image.array.astype(np.float32))[lungs].std()
    assert hf_sharp > 1.3 * hf_soft, (hf_sharp, hf_soft)
    core = ndimage.binary_erosion(lungs, iterations=3)
    assert abs(float(np.median(sharp.image.array[core])) - float(np.median(soft.image.array[core]))) < 15.0


def test_sharp_kernel_probability_is_checked():
    with pytest.raises(ConfigError, match="sharp_kernel_probability must be a probability"):
        PhantomConfig(sharp_kernel_probability=1.5)
