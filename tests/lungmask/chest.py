"""A small analytic chest CT with known anatomy, for the lung-extractor tests and the benchmark.

Canonical LPS frame (+x patient left, +y posterior, +z superior), voxel (0, 0, 0) at the
right-anterior-inferior corner. Everything is a closed-form shape, so the truth masks are exact:

* outside air −1000 HU; an elliptic body (0 HU core of muscle/mediastinum at +40 HU) with a
  10 mm fat layer at −100 HU under the skin;
* two ellipsoid lungs at −850 HU with a few vessels (+40 HU rods) inside;
* a trachea (lumen −1000 HU, radius 8 mm) running down the midline from the top and splitting
  into two main bronchi that end inside the lungs (so lungs and airways form one air component);
* two solid spherical tumours (+30 HU, radius 12 mm) inside the lungs: one touching the lateral
  chest wall of the left lung, one touching the mediastinal surface of the right lung.

Gaussian noise (σ = 15 HU by default) is added with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrcunet.io.volume import Geometry, Volume


@dataclass(frozen=True)
class SyntheticChest:
    """The CT and its exact truth masks (all ``[x, y, z]`` bool arrays on ``ct``'s grid)."""

    ct: Volume
    lungs: np.ndarray  # lung parenchyma, tumours excluded
    tumour_wall: np.ndarray  # the tumour voxels that replace lung, left lung, chest-wall side
    tumour_mediastinum: np.ndarray  # same, right lung, mediastinal side
    trachea: np.ndarray  # trachea lumen above the carina
    body: np.ndarray  # everything inside the skin

    @property
    def lung_region(self) -> np.ndarray:
        """What the extractor should return: lungs with the tumours filled in."""
        return self.lungs | self.tumour_wall | self.tumour_mediastinum


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p - closest, axis=-1)


def synthetic_chest(*, spacing: tuple[float, float, float] = (1.25, 1.25, 5.0),
                    extent_mm: tuple[float, float, float] = (340.0, 260.0, 200.0),
                    noise_hu: float = 15.0, seed: int = 0) -> SyntheticChest:
    """Render the chest described in the module docstring on a grid of ``spacing`` mm."""
    shape = tuple(int(round(e / s)) for e, s in zip(extent_mm, spacing))
    geometry = Geometry(shape, spacing, (-extent_mm[0] / 2, -extent_mm[1] / 2, 0.0))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    p = geometry.index_to_physical(idx).astype(np.float32)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]

    body = (x / 150.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    core = (x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1.0
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body] = -100.0
    hu[core] = 40.0

    lung_c = {"right": np.array([-65.0, 5.0, 95.0]), "left": np.array([65.0, 5.0, 95.0])}
    lung_r = np.array([50.0, 75.0, 80.0])
    lungs = np.zeros(shape, dtype=bool)
    for c in lung_c.values():
        lungs |= (((p - c) / lung_r) ** 2).sum(axis=-1) <= 1.0
    hu[lungs] = -850.0
    # vessels: thin soft-tissue rods inside each lung (they are lung region, filled by the extractor)
    vessels = np.zeros(shape, dtype=bool)
    for c in lung_c.values():
        for dx, dy in ((-15, -20), (10, 25), (20, -5)):
            vessels |= np.hypot(x - (c[0] + dx), y - (c[1] + dy)) <= 2.5
    hu[lungs & vessels] = 40.0

    # airways: trachea from the top down to a carina at z = 150 mm, then two bronchi into the lungs
    carina = np.array([0.0, -5.0, 150.0])
    trachea = (np.hypot(x - carina[0], y - carina[1]) <= 8.0) & (z >= carina[2])
    airway = trachea.copy()
    for c in lung_c.values():
        end = c + np.array([0.0, 0.0, 30.0]) - np.sign(c[0]) * np.array([25.0, 0.0, 0.0])
        airway |= _segment_distance(p, carina, end) <= 5.0
    hu[airway] = -1000.0

    # tumours: solid spheres inside the lungs, tangent to the chest wall / mediastinal surface
    radius = 12.0
    left_wall = lung_c["left"] + np.array([lung_r[0] - radius + 1.0, 0.0, 0.0])
    right_med = lung_c["right"] + np.array([lung_r[0] - radius + 1.0, 0.0, 0.0])
    tumour_wall = (np.linalg.norm(p - left_wall, axis=-1) <= radius) & lungs
    tumour_med = (np.linalg.norm(p - right_med, axis=-1) <= radius) & lungs
    hu[tumour_wall | tumour_med] = 30.0

    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    ct = Volume(np.round(hu).astype(np.int16), geometry, "image", {"source": "synthetic chest"})
    return SyntheticChest(ct=ct, lungs=lungs & ~(tumour_wall | tumour_med), tumour_wall=tumour_wall,
                          tumour_mediastinum=tumour_med, trachea=trachea, body=body)
