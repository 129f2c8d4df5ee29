"""One phantom end to end: :func:`generate_phantom` samples a case from a seed and a
:class:`~rrcunet.synthetic.config.PhantomConfig`, renders it, and returns a :class:`Phantom` (CT,
label map, lung-region mask, and the ground-truth facts of its tumours).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rrcunet.errors import ConfigError
from rrcunet.io.volume import Volume
from rrcunet.synthetic.anatomy import ChestModel, TissueHU
from rrcunet.io.volume import Geometry
from rrcunet.synthetic.config import PhantomConfig, TumourSpec
from rrcunet.synthetic.render import Renderer
from rrcunet.synthetic.sampling import (
    STREAM_HU, STREAM_SHAPES, STREAM_TEXTURE, STREAM_TREES, Acquisition, case_rng, sample_acquisition,
    sample_anatomy, sample_tumour_specs,
)
from rrcunet.synthetic.trees import grow_lung_trees
from rrcunet.synthetic.tumours import LungSites, centrality, make_shape, measured_location, place_tumours

GENERATOR_VERSION = 1

#: random stream of a follow-up's new lesion (after the streams of rrcunet.synthetic.sampling)
STREAM_FOLLOW_UP = 20
#: where a follow-up's new nodule is put: inside the lung, away from the walls (config.LOCATIONS)
NEW_LESION_LOCATION = "peripheral"


@dataclass(frozen=True, kw_only=True)
class FollowUp:
    """How a follow-up scan of a phantom differs from its baseline (:func:`generate_phantom`).

    The same body and the same tumours (shape, texture, place), rendered again with:

    Args:
        volume_factors: per baseline tumour, the factor its volume is multiplied by (the shape is
            scaled by its cube root about its centre; 0 = the tumour has gone). Missing entries are 1.
        shift_mm: the patient moved by this much (LPS mm) on the table.
        rotation_deg: and turned by this angle about the scanner's z axis (the grid centre).
        breathing_mm: the diaphragm domes sit this much lower (deeper breath; negative: higher);
            the tumours move with the lung, in proportion to their depth below the apex.
        new_lesion_mm: the diameter of a new round solid nodule (0: none), placed in the lungs away from
            the others.
    """

    volume_factors: tuple[float, ...] = ()
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: float = 0.0
    breathing_mm: float = 0.0
    new_lesion_mm: float = 0.0

    def __post_init__(self) -> None:
        if any(not (math.isfinite(f) and f >= 0) for f in self.volume_factors):
            raise ConfigError(f"volume_factors must be numbers >= 0, not {self.volume_factors!r}")
        if len(self.shift_mm) != 3 or not all(math.isfinite(v) for v in self.shift_mm):
            raise ConfigError(f"shift_mm must be 3 finite numbers, not {self.shift_mm!r}")
        if not (math.isfinite(self.new_lesion_mm) and self.new_lesion_mm >= 0):
            raise ConfigError(f"new_lesion_mm must be >= 0, not {self.new_lesion_mm!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _scaled(t: Any, k: float) -> Any:
    """A copy of a placed tumour shape grown by the linear factor ``k`` about its centre."""
    out = dataclasses.replace(t)
    out.diameter_mm = t.diameter_mm * k
    out.spicule_len = t.spicule_len * k
    out.spicule_r = t.spicule_r * k
    out.core_offset = t.core_offset * k
    out.cavity_offset = t.cavity_offset * k
    out.cavity_r = t.cavity_r * k
    out.centre = np.array(t.centre, float)
    return out


def _moved_acquisition(acq: Acquisition, follow: FollowUp) -> Acquisition:
    """The acquisition of the follow-up: the patient shifted by ``shift_mm`` and the grid turned by
    ``rotation_deg`` about its centre (the image is recorded on the baseline's grid, so the body
    appears turned the other way)."""
    g = acq.geometry
    d = np.asarray(g.direction, float).reshape(3, 3)
    a = math.radians(follow.rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    half = np.asarray(g.spacing) * (np.asarray(g.shape) - 1) / 2.0
    centre = np.asarray(g.origin) + d @ half
    d2 = rot @ d
    origin = centre - d2 @ half
    geometry = Geometry(g.shape, g.spacing, tuple(float(v) for v in origin), tuple(float(v) for v in d2.reshape(-1)))
    offset = tuple(float(o + s) for o, s in zip(acq.offset, follow.shift_mm))
    return dataclasses.replace(acq, geometry=geometry, offset=offset)


@dataclass(frozen=True)
class TumourFacts:
    """Ground truth of one tumour, as rendered.

    ``location`` is the class the rendered masks show (see
    :func:`rrcunet.synthetic.tumours.measured_location`); ``requested_location`` what the
    sampler asked for. ``diameter_mm`` is the nominal diameter of the tumour body;
    ``equivalent_diameter_mm`` the diameter of a sphere of the rendered volume.
    """

    index: int
    kind: str
    location: str
    requested_location: str
    side: str
    diameter_mm: float
    volume_ml: float
    equivalent_diameter_mm: float
    n_voxels: int
    centre_mm: tuple[float, float, float]
    centre_voxel: tuple[float, float, float]
    bbox_voxel: tuple[tuple[int, int, int], tuple[int, int, int]]
    touches_chest_wall: bool
    touches_mediastinum: bool
    fraction_in_lung: float
    hu_mean: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PhantomFacts:
    """Everything needed to reproduce and analyse a phantom (JSON-ready through :meth:`to_dict`)."""

    seed: int
    preset: str
    generator_version: int
    acquisition: dict[str, Any]
    anatomy: dict[str, Any]
    tumours: tuple[TumourFacts, ...]
    lung_volume_ml: float
    config: dict[str, Any] = field(default_factory=dict)
    follow_up: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "generator": "rrcunet.synthetic", "generator_version": self.generator_version, "seed": self.seed,
            "preset": self.preset, "acquisition": self.acquisition, "anatomy": self.anatomy,
            "lung_volume_ml": round(self.lung_volume_ml, 2),
            "tumours": [t.to_dict() for t in self.tumours], "config": self.config,
        }
        if self.follow_up is not None:
            out["follow_up"] = self.follow_up
        return out


@dataclass(frozen=True)
class Phantom:
    """A rendered phantom.

    ``image``: int16 HU; ``label``: uint8 0 background / 1 lung / 2 tumour; ``lungs``: uint8 0/1 lung
    region (lung ∪ tumours); ``tissues``: uint8 tissue ids of the underlying anatomy (names in
    :data:`rrcunet.synthetic.anatomy.TISSUE_NAMES`; useful for realism checks, not written to disk);
    ``facts``: ground truth and parameters.
    """

    image: Volume
    label: Volume
    lungs: Volume
    tissues: Volume
    facts: PhantomFacts


def _config_dict(config: PhantomConfig) -> dict[str, Any]:
    d = config.to_dict()
    if d.get("tumours") is not None:
        d["tumours"] = [dict(t) for t in d["tumours"]]
    return d


def generate_phantom(seed: int, *, config: PhantomConfig | None = None, follow_up: FollowUp | None = None) -> Phantom:
    """Generate the phantom of ``seed`` under ``config`` (default: the ``"small"`` preset).

    Deterministic: the same seed and config give byte-identical arrays. With ``follow_up``, the
    same patient scanned again as :class:`FollowUp` says; ``facts.follow_up`` then holds the
    parameters and ``baseline_index``: for each follow-up tumour (in order) the 1-based index of
    its baseline tumour, or ``None`` for the new lesion.

    Example::

        ph = generate_phantom(3, config=PhantomConfig.preset("small"))
        ph.image.array.shape, ph.facts.tumours[0].location
    """
    if config is None:
        config = PhantomConfig.preset("small")
    if not isinstance(config, PhantomConfig):
        raise ConfigError(f"config must be a PhantomConfig, not {type(config).__name__}")
    try:
        seed = int(seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"seed must be an integer, not {seed!r}") from exc
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, not {seed}")
    anatomy = sample_anatomy(seed, config)
    acq = sample_acquisition(seed, config, anatomy)
    hu = TissueHU.sample(case_rng(seed, STREAM_HU), contrast=acq.contrast)
    model = ChestModel(anatomy)
    grow_lung_trees(model, case_rng(seed, STREAM_TREES), r_min=config.vessel_min_radius_mm,
                    airway_min=config.airway_min_radius_mm)
    specs = sample_tumour_specs(seed, config)
    shape_rng = case_rng(seed, STREAM_SHAPES)
    shapes = [make_shape(sp, shape_rng) for sp in specs]
    sites = LungSites.from_model(model, np.concatenate(list(model.lobes.values())))
    gap = 1.3 * max(acq.geometry.spacing[0], acq.geometry.spacing[1]) + 2.0
    placed = place_tumours(shapes, sites, shape_rng, gap=gap)
    recorded = acq.geometry
    follow_facts = None
    if follow_up is not None:
        placed, model, acq, follow_facts = _follow_up_scene(seed, config, anatomy, acq, placed, follow_up, gap)
    renderer = Renderer(model, placed, acq, hu, seed=seed, texture_rng=case_rng(seed, STREAM_TEXTURE),
                        slab_slices=config.slab_slices, table=config.table)
    out = renderer.run()
    acq = dataclasses.replace(acq, geometry=recorded)  # a turned follow-up is recorded on the baseline grid
    g = acq.geometry
    vox_ml = g.voxel_volume_ml
    offset = np.asarray(acq.offset)
    tumour_facts = []
    for i, (t, st) in enumerate(zip(placed, out.stats)):
        if st.n_voxels == 0:
            centre_vox = tuple(float(v) for v in g.physical_to_index(t.centre + offset))
            bbox = ((0, 0, 0), (0, 0, 0))
            hu_mean = float("nan")
        else:
            centre_vox = tuple(float(v) for v in st.sum_ijk / st.n_voxels)
            bbox = (tuple(int(v) for v in st.lo), tuple(int(v) + 1 for v in st.hi))
            sl = tuple(slice(a, b) for a, b in zip(*bbox))
            sel = out.label[sl] == 2
            hu_mean = float(out.image[sl][sel].mean()) if sel.any() else float("nan")
        centre_mm = tuple(float(v) for v in g.index_to_physical(np.asarray(centre_vox)))
        comp = model.components_points(t.centre[None])
        depth = float(centrality(comp["mediastinum"], np.minimum(comp["wall"], comp["diaphragm"]))[0])
        vol = st.n_voxels * vox_ml
        tumour_facts.append(TumourFacts(
            index=i + 1, kind=t.kind,
            location=measured_location(t.requested_location, st.touches_wall, st.touches_mediastinum, depth),
            requested_location=t.requested_location, side=t.side, diameter_mm=round(t.diameter_mm, 2),
            volume_ml=round(vol, 3), equivalent_diameter_mm=round(float(np.cbrt(6.0 * vol * 1000.0 / np.pi)), 2),
            n_voxels=int(st.n_voxels), centre_mm=tuple(round(v, 2) for v in centre_mm),
            centre_voxel=tuple(round(v, 2) for v in centre_vox), bbox_voxel=bbox,
            touches_chest_wall=bool(st.touches_wall), touches_mediastinum=bool(st.touches_mediastinum),
            fraction_in_lung=round(st.n_in_lung / st.n_voxels, 4) if st.n_voxels else 0.0,
            hu_mean=round(hu_mean, 1), note=t.placement_note,
        ))
    facts = PhantomFacts(
        seed=seed, preset=config.name, generator_version=GENERATOR_VERSION, acquisition=acq.to_dict(),
        anatomy={**anatomy.to_dict(), "hu": {k: round(v, 1) for k, v in asdict(hu).items()}},
        tumours=tuple(tumour_facts), lung_volume_ml=round(float(np.count_nonzero(out.label == 1)) * vox_ml, 2),
        config=_config_dict(config), follow_up=follow_facts,
    )
    meta = {"source": "rrcunet.synthetic", "seed": seed, "preset": config.name}
    image = Volume(out.image, g, "image", dict(meta))
    label = Volume(out.label, g, "label", dict(meta))
    lungs = Volume(out.lungs, g, "label", dict(meta))
    tissues = Volume(out.tissues, g, "label", dict(meta))
    return Phantom(image=image, label=label, lungs=lungs, tissues=tissues, facts=facts)


def _follow_up_scene(seed: int, config: PhantomConfig, anatomy: Any, acq: Acquisition, placed: list[Any],
                     follow: FollowUp, gap: float) -> tuple[list[Any], ChestModel, Acquisition, dict[str, Any]]:
    """The tumours, chest model and acquisition of a follow-up scan (see :class:`FollowUp`)."""
    b = float(follow.breathing_mm)
    moved = dataclasses.replace(anatomy, z_dome_r=anatomy.z_dome_r - b, z_dome_l=anatomy.z_dome_l - b)
    model = ChestModel(moved)
    grow_lung_trees(model, case_rng(seed, STREAM_TREES), r_min=config.vessel_min_radius_mm,
                    airway_min=config.airway_min_radius_mm)
    depth = max(1.0, anatomy.z_apex - 0.5 * (anatomy.z_dome_r + anatomy.z_dome_l))
    tumours: list[Any] = []
    baseline_index: list[int | None] = []
    for i, t in enumerate(placed):
        factor = follow.volume_factors[i] if i < len(follow.volume_factors) else 1.0
        if factor == 0:
            continue
        t2 = _scaled(t, float(factor) ** (1.0 / 3.0))
        t2.centre[2] -= b * float(np.clip((anatomy.z_apex - t.centre[2]) / depth, 0.0, 1.0))
        tumours.append(t2)
        baseline_index.append(i + 1)
    if follow.new_lesion_mm > 0:
        rng = case_rng(seed, STREAM_FOLLOW_UP)
        new = make_shape(TumourSpec(kind="round", location=NEW_LESION_LOCATION, diameter_mm=follow.new_lesion_mm), rng)
        sites = LungSites.from_model(model, np.concatenate(list(model.lobes.values())))
        tumours += place_tumours([new], sites, rng, gap=gap, avoid=tumours)
        baseline_index.append(None)
    facts = {**follow.to_dict(), "baseline_index": baseline_index}
    return tumours, model, _moved_acquisition(acq, follow), facts
