"""Lesions inserted into a CT (`rrcunet.synthetic.insertion`): the label and the image agree, the
geometry is kept, the result is deterministic with a seed, voxels away from a lesion are untouched,
lesions stay in the lung region, and the `rrcunet insert-lesions` command writes a dataset without
touching its input. The background is a small phantom standing in for a real chest."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from rrcunet.cli.main import main
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError
from rrcunet.io import read_image, write_volume
from rrcunet.synthetic import PhantomConfig, generate_phantom
from rrcunet.synthetic.insertion import INSERT_LOCATIONS, insert_lesions, noise_sigma, write_insertion_dataset


@pytest.fixture(scope="module")
def chest():
    """A tumour-free phantom chest: its CT and its lung region."""
    ph = generate_phantom(11, config=PhantomConfig.preset("small", n_tumours_weights=[1.0, 0.0, 0.0, 0.0]))
    assert not (np.asarray(ph.label.array) == 2).any()
    return ph.image, ph.lungs


@pytest.mark.parametrize("location", INSERT_LOCATIONS)
def test_label_and_image_agree(chest, location):
    ct, lung = chest
    res = insert_lesions(ct, lung, seed=3, specs=[{"location": location, "kind": "round", "diameter_mm": 24.0}])
    assert len(res.lesions) == 1, f"no {location} lesion placed"
    label = np.asarray(res.label.array)
    tumour = label == 2
    before = np.asarray(ct.array).astype(float)
    after = np.asarray(res.image.array).astype(float)
    changed = np.abs(after - before) > 0
    # inside the lesion the image became soft tissue; a labelled voxel is at least half lesion, so
    # it is closer to the lesion than to air-filled lung; away from the label nothing changed
    core = ndimage.binary_erosion(tumour, iterations=1)
    assert abs(np.median(after[core]) - res.lesions[0].hu_solid) < 60
    assert np.min(after[tumour]) > -500
    # unlabelled voxels hold at most a partial-volume sliver of the lesion (less than half), and
    # voxels that no lesion reached are exactly as they were
    unlabelled = ~tumour
    half = 0.5 * (res.lesions[0].hu_solid - before[tumour].min())
    assert np.max((after - before)[unlabelled]) < half + 60
    assert changed.sum() < 6 * max(1, tumour.sum())
    # the labelled lesion lies in the lung region grown by a few mm
    lung_arr = np.asarray(lung.array) > 0
    grown = ndimage.binary_dilation(lung_arr, iterations=2)
    assert grown[tumour].all()
    # the facts describe the label
    fact = res.lesions[0]
    assert fact.n_voxels == int(tumour.sum())
    (lo, hi) = fact.bbox_voxel
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    assert tumour[box].sum() == tumour.sum()
    # lung label is the lung region minus tumour; the written region is lung ∪ tumour
    np.testing.assert_array_equal(label == 1, lung_arr & ~tumour)
    np.testing.assert_array_equal(np.asarray(res.lungs.array) > 0, lung_arr | tumour)


def test_geometry_kept_and_types(chest):
    ct, lung = chest
    res = insert_lesions(ct, lung, seed=1, n_lesions=2)
    for vol in (res.image, res.label, res.lungs):
        assert vol.geometry == ct.geometry
    assert res.image.array.dtype == np.int16 and res.label.array.dtype == np.uint8
    assert res.image.kind == "image" and res.label.kind == "label"


def test_deterministic_with_seed(chest):
    ct, lung = chest
    a = insert_lesions(ct, lung, seed=7, n_lesions=2)
    b = insert_lesions(ct, lung, seed=7, n_lesions=2)
    c = insert_lesions(ct, lung, seed=8, n_lesions=2)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.label.array, b.label.array)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.label.array, c.label.array)


def test_ground_glass_keeps_vessels_brighter_than_it(chest):
    ct, lung = chest
    res = insert_lesions(ct, lung, seed=2, specs=[{"location": "intrapulmonary", "kind": "ground_glass",
                                                   "diameter_mm": 25.0}])
    before = np.asarray(ct.array).astype(float)
    after = np.asarray(res.image.array).astype(float)
    tumour = np.asarray(res.label.array) == 2
    core = ndimage.binary_erosion(tumour, iterations=1)
    assert -800 < np.median(after[core]) < -350
    bright = core & (before > -100)  # vessels inside the ground glass: never darkened (beyond noise)
    if bright.any():
        assert np.median(after[bright] - before[bright]) > -40


def test_partial_volume_edge_follows_slice_thickness(chest):
    ct, lung = chest
    res = insert_lesions(ct, lung, seed=4, specs=[{"location": "intrapulmonary", "kind": "round",
                                                   "diameter_mm": 20.0}])
    tumour = np.asarray(res.label.array) == 2
    after = np.asarray(res.image.array).astype(float)
    rim = ndimage.binary_dilation(tumour, iterations=1) & ~tumour & (np.asarray(lung.array) > 0)
    # voxels just outside the label are part-filled: between lung and tumour on average
    lung_hu = np.median(np.asarray(ct.array)[np.asarray(lung.array) > 0])
    assert lung_hu + 50 < np.median(after[rim]) < res.lesions[0].hu_solid


def test_no_lesions_leaves_the_image(chest):
    ct, lung = chest
    res = insert_lesions(ct, lung, seed=0, n_lesions=0)
    np.testing.assert_array_equal(res.image.array, ct.array)
    assert res.lesions == [] and not (np.asarray(res.label.array) == 2).any()


def test_bad_inputs(chest):
    ct, lung = chest
    with pytest.raises(InputError, match="empty"):
        insert_lesions(ct, lung.with_array(np.zeros(lung.shape, np.uint8)), seed=0)
    with pytest.raises(ConfigError, match="location"):
        insert_lesions(ct, lung, seed=0, specs=[{"location": "elsewhere"}])
    assert 3.0 <= noise_sigma(np.asarray(ct.array)) <= 80.0


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_command_writes_dataset_and_keeps_input(chest, tmp_path, capsys):
    ct, _ = chest
    bg = tmp_path / "chest.nii.gz"
    write_volume(ct, bg)
    before = _digest(bg)
    out = tmp_path / "inserted"
    assert main(["insert-lesions", str(bg), "-n", "2", "--negatives", "1", "--seed", "3", "-o", str(out)]) == 0
    assert _digest(bg) == before
    manifest = DatasetManifest.load(out)
    assert [c.case_id for c in manifest.cases] == ["chest_lesions_000", "chest_lesions_001", "chest_negative_002"]
    assert len({c.patient for c in manifest.cases}) == 1  # one real chest = one patient for the split
    neg = manifest.cases[2]
    np.testing.assert_array_equal(read_image(out / neg.image).array, ct.array)
    for case in manifest.cases[:2]:
        label = read_image(out / case.label, kind="label")
        assert label.geometry.same_grid(ct.geometry)
        assert (np.asarray(label.array) == 2).sum() == sum(t["n_voxels"] for t in case.source["tumours"])
    # a second run into the same folder is refused, not merged
    assert main(["insert-lesions", str(bg), "-n", "1", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # the same seed writes the same voxels
    again = write_insertion_dataset(tmp_path / "again", [bg], n=2, negatives=1, seed=3)
    for a, b in zip(manifest.cases, again.cases):
        np.testing.assert_array_equal(read_image(out / a.image).array, read_image(tmp_path / "again" / b.image).array)


def test_location_kind_size_and_invasion_options(chest, tmp_path):
    ct, lung = chest
    small = insert_lesions(ct, lung, seed=5, n_lesions=3, location_weights=(1, 1, 0, 0, 0), max_diameter_mm=12.0)
    assert small.lesions and all(x.location in ("intrapulmonary", "juxtavascular") for x in small.lesions)
    assert all(x.diameter_mm <= 12.0 for x in small.lesions)
    spec = [{"location": "chest_wall", "kind": "round", "diameter_mm": 50.0}]
    outside = []
    for invade in (2.0, 20.0):
        res = insert_lesions(ct, lung, seed=4, specs=spec, invade_mm=invade)
        tumour = np.asarray(res.label.array) == 2
        outside.append(int(np.count_nonzero(tumour & (np.asarray(lung.array) == 0))))
    assert outside[1] > outside[0]  # the mass grows further into the wall


def test_command_takes_lesion_options(chest, tmp_path, capsys):
    write_volume(chest[0], tmp_path / "bg.nii.gz")
    assert main(["insert-lesions", str(tmp_path / "bg.nii.gz"), "-n", "2", "-o", str(tmp_path / "ds"),
                 "--locations", "intrapulmonary=1", "--kinds", "round=1", "--max-diameter-mm", "15",
                 "--invade-mm", "3"]) == 0
    manifest = DatasetManifest.load(tmp_path / "ds")
    lesions = [x for c in manifest.cases for x in c.source["tumours"]]
    assert lesions and all(x["location"] == "intrapulmonary" and x["kind"] == "round" for x in lesions)
    assert "max_diameter_mm" in manifest.description
    assert main(["insert-lesions", str(tmp_path / "bg.nii.gz"), "-n", "1", "-o", str(tmp_path / "bad"),
                 "--locations", "lung=1"]) == 2
    assert "NAME=WEIGHT" in capsys.readouterr().err
