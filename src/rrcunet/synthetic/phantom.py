"""One phantom end to end: :func:`generate_phantom` samples a case from a seed and a
:class:`~rrcunet.synthetic.config.PhantomConfig`, renders it, and returns a :class:`Phantom` (CT,
label map, lung-region mask, and the ground-truth facts of its tumours).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rrcunet.errors import ConfigError
from rrcunet.io.volume import Volume
from rrcunet.synthetic.anatomy import ChestModel, TissueHU
from rrcunet.synthetic.config import PhantomConfig
from rrcunet.synthetic.render import Renderer
from rrcunet.synthetic.sampling import (
    STREAM_HU, STREAM_SHAPES, STREAM_TEXTURE, STREAM_TREES, case_rng, sample_acquisition, sample_anatomy,
    sample_tumour_specs,
)
from rrcunet.synthetic.trees import grow_lung_trees
from rrcunet.synthetic.tumours import LungSites, centrality, make_shape, measured_location, place_tumours

GENERATOR_VERSION = 1


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": "rrcunet.synthetic", "generator_version": self.generator_version, "seed": self.seed,
            "preset": self.preset, "acquisition": self.acquisition, "anatomy": self.anatomy,
            "lung_volume_ml": round(self.lung_volume_ml, 2),
            "tumours": [t.to_dict() for t in self.tumours], "config": self.config,
        }


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


def generate_phantom(seed: int, *, config: PhantomConfig | None = None) -> Phantom:
    """Generate the phantom of ``seed`` under ``config`` (default: the ``"small"`` preset).

    Deterministic: the same seed and config give byte-identical arrays.

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
    renderer = Renderer(model, placed, acq, hu, seed=seed, texture_rng=case_rng(seed, STREAM_TEXTURE),
                        slab_slices=config.slab_slices, table=config.table)
    out = renderer.run()
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
        config=_config_dict(config),
    )
    meta = {"source": "rrcunet.synthetic", "seed": seed, "preset": config.name}
    image = Volume(out.image, g, "image", dict(meta))
    label = Volume(out.label, g, "label", dict(meta))
    lungs = Volume(out.lungs, g, "label", dict(meta))
    tissues = Volume(out.tissues, g, "label", dict(meta))
    return Phantom(image=image, label=label, lungs=lungs, tissues=tissues, facts=facts)
