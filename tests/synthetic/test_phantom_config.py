"""PhantomConfig presets, overrides and validation; the per-case parameter sampler (no rendering)."""

from __future__ import annotations

import numpy as np
import pytest

from rrcunet.errors import ConfigError
from rrcunet.synthetic import LOCATIONS, TUMOUR_KINDS, PhantomConfig, TumourSpec
from rrcunet.synthetic.sampling import sample_acquisition, sample_anatomy, sample_tumour_specs


def test_presets_and_overrides():
    full = PhantomConfig.preset("full")
    small = PhantomConfig.preset("small", direction="flipped")
    assert full.matrix == 512 and small.matrix == 128
    assert small.direction == "flipped" and PhantomConfig.preset("small").direction == "identity"
    with pytest.raises(ConfigError, match="unknown phantom preset 'huge'"):
        PhantomConfig.preset("huge")
    with pytest.raises(ConfigError, match="invalid PhantomConfig override"):
        PhantomConfig.preset("small", not_a_field=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"inplane_spacing_mm": (1.0, 0.5)}, "min <= max"),
    ({"n_slices": (2, 10)}, r"n_slices must lie in \[4"),
    ({"direction": "sideways"}, "direction must be one of"),
    ({"kind_weights": (1.0, 0.0)}, "kind_weights needs 5"),
    ({"fov_padding_probability": 1.5}, "probability"),
    ({"tumours": ("round",)}, "TumourSpec"),
])
def test_invalid_config_is_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PhantomConfig(**kwargs)


def test_invalid_tumour_spec_is_refused():
    with pytest.raises(ConfigError, match="TumourSpec.kind must be one of"):
        TumourSpec(kind="square")
    with pytest.raises(ConfigError, match="TumourSpec.location must be one of"):
        TumourSpec(location="liver")
    with pytest.raises(ConfigError, match=r"diameter_mm must be in \[2, 120\]"):
        TumourSpec(diameter_mm=500)


def test_full_preset_sampler_ranges():
    """Sample only the parameters (no rendering) of many seeds of the clinical preset."""
    cfg = PhantomConfig.preset("full")
    sxy, sz, nz = [], [], []
    for seed in range(60):
        acq = sample_acquisition(seed, cfg)
        g = acq.geometry
        assert g.shape[:2] == (512, 512)
        assert g.spacing[0] == g.spacing[1]
        sxy.append(g.spacing[0])
        sz.append(g.spacing[2])
        nz.append(g.shape[2])
        assert g.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert 10.0 <= acq.noise_std_hu <= 30.0
    assert 0.6 <= min(sxy) and max(sxy) <= 1.0
    assert 1.0 <= min(sz) and max(sz) <= 5.0
    assert 60 <= min(nz) and max(nz) <= 600
    # The sampler really varies them (not one fixed protocol).
    assert max(sxy) - min(sxy) > 0.15 and len(set(sz)) >= 4 and max(nz) > 3 * min(nz)


def test_small_preset_sampler_ranges():
    cfg = PhantomConfig.preset("small")
    for seed in range(30):
        g = sample_acquisition(seed, cfg).geometry
        assert g.shape[:2] == (128, 128) and 40 <= g.shape[2] <= 64
        assert 2.5 <= g.spacing[0] <= 3.0 and 4.5 <= g.spacing[2] <= 5.0


def test_sampling_is_deterministic_and_seed_dependent():
    cfg = PhantomConfig.preset("small")
    assert sample_anatomy(5, cfg) == sample_anatomy(5, cfg)
    assert sample_acquisition(5, cfg) == sample_acquisition(5, cfg)
    assert sample_anatomy(5, cfg) != sample_anatomy(6, cfg)


def test_tumour_sampler_covers_kinds_locations_and_sizes():
    cfg = PhantomConfig.preset("full")
    specs = [t for seed in range(200) for t in sample_tumour_specs(seed, cfg)]
    assert {t.location for t in specs} == set(LOCATIONS)
    assert {t.kind for t in specs} == set(TUMOUR_KINDS)
    d = np.array([t.diameter_mm for t in specs])
    assert d.min() >= 5.0 and d.max() <= 70.0 and d.min() < 8.0 and d.max() > 60.0
    counts = {len(sample_tumour_specs(seed, cfg)) for seed in range(200)}
    assert counts == {0, 1, 2, 3}
    # Sub-solid tumours are never larger than 4 cm.
    assert all(t.diameter_mm <= 40.0 for t in specs if t.kind in ("part_solid", "ground_glass"))


def test_explicit_tumour_requests_are_kept():
    req = (TumourSpec(kind="spiculated", location="central", diameter_mm=25.0, side="left"), TumourSpec())
    specs = sample_tumour_specs(3, PhantomConfig.preset("small", tumours=req))
    assert len(specs) == 2
    assert (specs[0].kind, specs[0].location, specs[0].diameter_mm, specs[0].side) == ("spiculated", "central", 25.0,
                                                                                       "left")
    assert specs[1].kind in TUMOUR_KINDS and specs[1].location in LOCATIONS
    assert sample_tumour_specs(3, PhantomConfig.preset("small", tumours=())) == []
