"""Classical lung-region extractor on an analytic chest with juxta-pleural / juxta-mediastinal tumours."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.ndimage as ndi

from rrcunet.errors import ConfigError, InputError
from rrcunet.inference import InferenceConfig, make_lung_extractor
from rrcunet.io.volume import Geometry, Volume
from rrcunet.lungmask import LUNGMASK_METHODS, ClassicalLungConfig, ClassicalLungExtractor, check_method, extract_lungs
from rrcunet.preprocessing import PreprocessConfig, preprocess
from tests.lungmask.chest import synthetic_chest


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def chest():
    return synthetic_chest()


@pytest.fixture(scope="module")
def chest_mask(chest):
    return extract_lungs(chest.ct)


def test_output_is_a_01_label_on_the_input_grid(chest, chest_mask):
    assert chest_mask.geometry == chest.ct.geometry
    assert chest_mask.kind == "label" and chest_mask.array.dtype == np.uint8
    assert set(np.unique(chest_mask.array)) == {0, 1}


def test_tumours_touching_wall_and_mediastinum_are_inside(chest, chest_mask):
    mask = chest_mask.array.astype(bool)
    for name, tumour in (("chest wall", chest.tumour_wall), ("mediastinum", chest.tumour_mediastinum)):
        inside = (mask & tumour).sum() / tumour.sum()
        assert inside >= 0.95, f"only {inside:.1%} of the tumour touching the {name} is in the lung mask"


def test_lung_region_matches_and_trachea_body_and_air_are_outside(chest, chest_mask):
    mask = chest_mask.array.astype(bool)
    assert _dice(mask, chest.lung_region) >= 0.95
    assert not (mask & chest.trachea).any(), "trachea lumen is in the lung mask"
    assert not (mask & ~chest.body).any(), "air outside the body is in the lung mask"
    # body tissue more than 5 mm from the lung region must stay out
    far = ndi.distance_transform_edt(~chest.lung_region, sampling=chest.ct.spacing) > 5.0
    assert not (mask & chest.body & far).any(), "body tissue away from the lungs is in the lung mask"


def test_result_does_not_depend_on_the_array_axis_order(chest, chest_mask):
    """Same anatomy stored flipped and transposed (direction adjusted) gives the same voxels."""
    ct = chest.ct
    arr = np.flip(ct.array, axis=0).transpose(1, 0, 2)
    g = ct.geometry
    d = g.direction_matrix
    new_d = np.stack([d[:, 1], -d[:, 0], d[:, 2]], axis=1)
    origin = g.index_to_physical(np.array([g.shape[0] - 1, 0, 0]))
    geometry = Geometry((g.shape[1], g.shape[0], g.shape[2]), (g.spacing[1], g.spacing[0], g.spacing[2]),
                        tuple(origin), tuple(new_d.ravel()))
    mask = extract_lungs(Volume(np.ascontiguousarray(arr), geometry, "image"))
    expected = np.flip(chest_mask.array, axis=0).transpose(1, 0, 2)
    np.testing.assert_array_equal(mask.array, expected)


def test_cropped_field_of_view_keeps_the_cut_lung(chest):
    """A lung cut by the edge of the field of view is not mistaken for outside air."""
    ct = chest.ct
    x0 = int(np.flatnonzero(chest.lungs.any(axis=(1, 2)))[-1]) - 25  # cut through the left lung
    sub = Volume(np.ascontiguousarray(ct.array[x0:]), Geometry(
        (ct.shape[0] - x0, *ct.shape[1:]), ct.spacing, tuple(ct.geometry.index_to_physical(np.array([x0, 0, 0]))),
        ct.direction), "image")
    mask = extract_lungs(sub).array.astype(bool)
    truth = chest.lung_region[x0:]
    assert _dice(mask, truth) >= 0.9
    assert not (mask & ~chest.body[x0:]).any()


def test_no_lung_gives_an_empty_mask_and_a_warning(caplog):
    g = Geometry((24, 20, 6), (2.0, 2.0, 5.0))
    ct = Volume(np.full(g.shape, 40, dtype=np.int16), g, "image")
    with caplog.at_level(logging.WARNING):
        mask = extract_lungs(ct)
    assert mask.array.sum() == 0 and mask.geometry == g
    assert "no lung-like air" in caplog.text


def test_label_input_is_refused():
    g = Geometry((8, 8, 4), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="needs a CT image in HU"):
        extract_lungs(Volume(np.zeros(g.shape, np.uint8), g, "label"))


# --- registry ---------------------------------------------------------------------------------


def test_registry_lists_the_methods_the_cli_offers():
    from rrcunet.cli.main import build_parser

    assert set(LUNGMASK_METHODS) == {"classical", "coordunet"}
    help_text = build_parser()._subparsers._group_actions[0].choices["lungmask"].format_help()
    for name in LUNGMASK_METHODS:
        assert name in help_text


def test_coordunet_needs_a_model():
    with pytest.raises(ConfigError, match="needs --model"):
        check_method("coordunet")
    g = Geometry((8, 8, 4), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="needs --model"):
        extract_lungs(Volume(np.zeros(g.shape, np.int16), g), method="coordunet")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "otsu"}, "unknown lung-mask method 'otsu'"),
        ({"model": "x.safetensors"}, "takes no model"),
        ({"radius": 3}, r"unknown option\(s\) \['radius'\]"),
        ({"config": ClassicalLungConfig(), "air_hu": -500}, "either config= or individual options"),
        ({"fill_radius_mm": -1.0}, "fill_radius_mm must be a positive number"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    g = Geometry((8, 8, 4), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match=message):
        extract_lungs(Volume(np.zeros(g.shape, np.int16), g), **kwargs)


def test_the_classical_extractor_object_is_extract_lungs(chest, chest_mask):
    # preprocessing takes the lung region as an argument; the extractor object gives the same channel
    cfg = PreprocessConfig(target_shape=(48, 40, 16))
    auto = preprocess(chest.ct, ClassicalLungExtractor()(chest.ct), config=cfg)
    given = preprocess(chest.ct, chest_mask, config=cfg)
    np.testing.assert_array_equal(auto.image, given.image)
    assert auto.image[1].sum() > 0


def _tiny_model(path, task):
    import torch

    from rrcunet.models import build_model
    from rrcunet.preprocessing import PreprocessConfig
    from rrcunet.models.model_file import save_model

    kwargs = {"base_filters": 2, "levels": 2, "dropout": 0.0}
    name = "coordunet" if task == "lung" else "rrcunet"
    model = build_model(name, **kwargs)
    with torch.no_grad():  # every voxel "lung": the head votes for class 1 everywhere
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[1] = 10.0
    return save_model(path, model, model_name=name, model_kwargs=kwargs,
                      preprocess_config=PreprocessConfig(target_shape=(16, 16, 8)), task=task)


def test_coordunet_method_runs_a_lung_model_file_onto_the_input_grid(tmp_path):
    g = Geometry((24, 20, 10), (1.5, 1.5, 3.0), (5.0, -3.0, 10.0))
    ct = Volume((np.arange(24 * 20 * 10).reshape(g.shape) % 50 - 800).astype(np.int16), g)
    model = _tiny_model(tmp_path / "lung.safetensors", "lung")
    lung = make_lung_extractor("coordunet", model, config=InferenceConfig(device="cpu"))(ct)
    assert lung.geometry == ct.geometry and lung.kind == "label"
    assert set(np.unique(lung.array)) == {1}  # the biased head says "lung" everywhere


def test_coordunet_method_refuses_a_tumour_model(tmp_path):
    g = Geometry((24, 20, 10), (1.5, 1.5, 3.0))
    ct = Volume(np.full(g.shape, -800, np.int16), g)
    model = _tiny_model(tmp_path / "tumour.safetensors", "tumour")
    with pytest.raises(InputError, match="is a 'tumour' model, not a lung model"):
        make_lung_extractor("coordunet", model, config=InferenceConfig(device="cpu"))(ct)


@pytest.mark.parametrize("factors", [(2, 2, 1), (2, 2, 3), (1, 1, 2)])
def test_slab_wise_return_to_the_full_grid_equals_the_whole_volume_at_once(factors, monkeypatch):
    """Step 6 runs in slabs of slices (less working memory); it must give the whole-volume result."""
    import rrcunet.lungmask.classical as classical

    rng = np.random.default_rng(5)
    shape = (37, 41, 29)  # not multiples of the factors: partial blocks at the end of every axis
    reduced = tuple(-(-n // f) for n, f in zip(shape, factors))
    mask = ndi.binary_opening(rng.random(reduced) < 0.55, iterations=1)
    filled = mask & (rng.random(reduced) < 0.2)
    hu = rng.normal(-500, 400, shape).astype(np.int16)
    cfg = ClassicalLungConfig()
    whole = classical._refine_boundary(classical._expand(mask, factors, shape), classical._expand(filled, factors, shape),
                                       hu, cfg.boundary_hu, cfg.boundary_steps)
    assert whole.any() and not whole.all()
    monkeypatch.setattr(classical, "SLAB_SLICES", 4)  # many slabs, the last one partial
    np.testing.assert_array_equal(classical._to_full_grid(mask, filled, factors, hu, cfg), whole)


def test_the_two_lungs_filled_in_two_threads_equal_one_after_the_other(chest, chest_mask, monkeypatch):
    """Step 5 fills the two lungs in parallel threads (issue 23); the mask is the serial one's."""
    import rrcunet.lungmask.classical as classical

    calls = []
    monkeypatch.setattr(classical, "_map_sides", lambda fill, lungs: calls.append(len(lungs)) or [fill(s) for s in lungs])
    serial = extract_lungs(chest.ct)
    assert calls == [2]  # the synthetic chest has two lungs, so the threaded path ran for chest_mask
    np.testing.assert_array_equal(np.asarray(serial.array), np.asarray(chest_mask.array))


def _scipy_ball_closing(mask, radius_mm, spacing):
    """The closing as SciPy's exact EDT gives it (the extractor's form before issue 23)."""
    import math

    pad = [int(math.ceil(radius_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad])
    dilated = ndi.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return closed[pad[0]:-pad[0], pad[1]:-pad[1], pad[2]:-pad[2]]


@pytest.mark.parametrize("spacing", [(1.953125, 1.953125, 3.0), (1.0, 1.0, 1.0), (2.0, 2.0, 2.5), (1.40625, 1.40625, 5.0)])
@pytest.mark.parametrize("radius", [5.0, 6.0, 15.0])
def test_the_ball_closing_is_scipys_closing(spacing, radius):
    """SimpleITK's distance maps close exactly as SciPy's EDT does (issue 23) where the spacing is a
    binary fraction, as a FOV/512 pixel size and 0.625-5 mm slices are (ties compare exactly)."""
    from rrcunet.lungmask.classical import _ball_closing

    rng = np.random.default_rng(int(radius))
    mask = ndi.binary_opening(rng.random((50, 40, 24)) > 0.6)
    mask[10:40, 8:30, 5:20] |= ndi.binary_erosion(rng.random((30, 22, 15)) > 0.2)
    want = _scipy_ball_closing(mask, radius, spacing)
    assert want.sum() > mask.sum() > 0
    np.testing.assert_array_equal(_ball_closing(mask, radius, spacing), want)


def test_the_ball_closing_differs_from_scipys_only_at_the_radius():
    """With a spacing that is not a binary fraction the float32 squared distances may round across
    the radius, so a few boundary voxels may differ (here at most 5 % of the closed mask)."""
    from rrcunet.lungmask.classical import _ball_closing

    rng = np.random.default_rng(1)
    mask = ndi.binary_opening(rng.random((60, 50, 30)) > 0.7)
    spacing, radius = (0.7, 0.8, 2.0), 15.0
    got, want = _ball_closing(mask, radius, spacing), _scipy_ball_closing(mask, radius, spacing)
    assert np.count_nonzero(got != want) <= 0.05 * np.count_nonzero(want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bounding_box_and_the_one_voxel_dilation_are_scipys(seed):
    """classical._bbox_slices (axis projections) and _dilated_once (on the grown box) give what
    ndimage.find_objects and ndimage.binary_dilation give, masks touching the array's faces included."""
    from rrcunet.lungmask import classical

    rng = np.random.default_rng(seed)
    mask = np.zeros((30, 24, 18), bool)
    lo = rng.integers(0, 10, 3)
    hi = lo + rng.integers(1, 14, 3)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random(tuple(hi - lo)) > 0.6
    mask[0, 5, 5] = mask[-1, 3, 17] = bool(seed % 2)  # on the faces
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    pad = (2, 0, 1)
    grown = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(box, pad, mask.shape))
    assert classical._bbox_slices(mask, pad) == grown
    assert np.array_equal(classical._dilated_once(mask), ndi.binary_dilation(mask, iterations=1))
    empty = np.zeros_like(mask)
    assert classical._bbox_slices(empty, pad) is None
    assert not classical._dilated_once(empty).any()


def _airways_by_labelling(hu, candidate, seed, spacing, cfg):
    """The airway growing as ndimage.label of the whole box at every threshold (the reference)."""
    import math

    voxel_ml = float(np.prod(spacing)) / 1000.0
    reach = [int(math.ceil(80.0 / s)) for s in spacing[:2]]
    box = (slice(max(0, seed[0] - reach[0]), seed[0] + reach[0] + 1),
           slice(max(0, seed[1] - reach[1]), seed[1] + reach[1] + 1), slice(0, seed[2] + 1))
    local = (seed[0] - box[0].start, seed[1] - box[1].start, seed[2])
    best, previous = None, 0.0
    for threshold in np.arange(-990.0, cfg.air_hu, 15.0):
        region = candidate[box] & (hu[box] < threshold)
        if not region[local]:
            continue
        labels, _ = ndi.label(region)
        grown = labels == labels[local]
        volume = grown.sum() * voxel_ml
        if volume > cfg.airway_max_ml or (previous > 5.0 and volume > 2.0 * previous):
            break
        best, previous = grown, volume
    if best is None:
        return None
    out = np.zeros_like(candidate)
    out[box] = best
    return out


@pytest.mark.parametrize("noise", [0.0, 60.0])
def test_the_airway_flood_fill_grows_the_voxels_labelling_grows(chest, noise):
    from rrcunet.lungmask import classical

    cfg = ClassicalLungConfig()
    _, _, _, hu, spacing = classical._working_grid(chest.ct, cfg)
    hu = hu + np.random.default_rng(3).normal(0.0, noise, hu.shape).astype(np.float32) if noise else hu
    air = hu < cfg.air_hu
    candidate = air & ~classical._outside_air(air, hu, cfg)
    seed = classical._find_trachea_seed(candidate, spacing, cfg)
    assert seed is not None
    grown = classical._grow_airways(hu, candidate, seed, spacing, cfg)
    reference = _airways_by_labelling(hu, candidate, seed, spacing, cfg)
    assert (grown is None) == (reference is None)
    if grown is not None:
        assert grown.any() and np.array_equal(grown, reference)


def test_the_working_arrays_are_temporaries_and_the_result_is_not(chest, chest_mask, monkeypatch):
    """The extraction's steps run inside rrcunet.heap.temporaries (the CLI reuses freed heap memory
    there); the result is allocated before it, and is the same mask."""
    import contextlib

    from rrcunet import heap
    from rrcunet.lungmask import classical

    state = {"inside": False, "steps_inside": None}

    @contextlib.contextmanager
    def block():
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    working_grid = classical._working_grid

    def spy(*args, **kwargs):
        state["steps_inside"] = state["inside"]
        return working_grid(*args, **kwargs)

    monkeypatch.setattr(heap, "temporaries", block)
    monkeypatch.setattr(classical, "_working_grid", spy)
    mask = classical.extract_lungs_classical(chest.ct)
    assert state["steps_inside"] is True and not state["inside"]
    assert np.array_equal(mask.array, chest_mask.array) and mask.array.dtype == np.uint8
