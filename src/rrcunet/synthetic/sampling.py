"""Per-case parameter sampling: the acquisition (grid, field of view, noise, blur), the anatomy
parameters and the tumour requests of one phantom, each drawn from its own random stream of the
case seed (so changing, say, the noise range never changes the anatomy of a seed).

Sampling is cheap (no rendering), which lets tests check the ranges a preset produces over many
seeds without building full-size volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rrcunet.io.volume import Geometry
from rrcunet.synthetic.anatomy import AnatomyParams, ChestModel
from rrcunet.synthetic.config import LOCATIONS, TUMOUR_KINDS, PhantomConfig, TumourSpec

# Independent random streams of one case seed.
STREAM_ANATOMY, STREAM_ACQUISITION, STREAM_TUMOURS, STREAM_SHAPES, STREAM_TREES, STREAM_TEXTURE, \
    STREAM_NOISE, STREAM_HU, STREAM_BODYTEX, STREAM_KERNEL = range(10)

COMMON_SLICE_SPACINGS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
SLICE_PROFILE_FWHM_VOXELS = 1.0  # slice thickness = slice spacing


def case_rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """The random generator of one stream of a case seed (PCG64 through SeedSequence)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(stream), *map(int, extra))))


@dataclass(frozen=True)
class Acquisition:
    """How one phantom is "scanned": voxel grid, placement of the patient, blur and noise.

    ``offset`` maps the anatomy frame to patient LPS (``patient = anatomy + offset``).
    """

    geometry: Geometry
    offset: tuple[float, float, float]
    noise_std_hu: float
    psf_fwhm_mm: float
    fov_padding: bool
    padding_value: int
    contrast: bool
    truncated_fov: bool
    kernel_sharpening: float = 0.0  # 0: the soft kernel (the PSF alone); > 0: the unsharp mask's amount

    @property
    def fov_mm(self) -> float:
        return float(min(self.geometry.shape[0] * self.geometry.spacing[0],
                         self.geometry.shape[1] * self.geometry.spacing[1]))

    def to_dict(self) -> dict[str, Any]:
        g = self.geometry
        return {
            "shape": list(g.shape), "spacing_mm": [round(v, 5) for v in g.spacing],
            "origin_mm": [round(v, 4) for v in g.origin], "direction": [round(v, 6) for v in g.direction],
            "anatomy_to_patient_offset_mm": [round(v, 3) for v in self.offset],
            "noise_std_hu": round(self.noise_std_hu, 2),
            "psf_fwhm_mm": round(self.psf_fwhm_mm, 3), "slice_profile_fwhm_vox": SLICE_PROFILE_FWHM_VOXELS,
            "fov_mm": round(self.fov_mm, 2), "fov_padding": self.fov_padding, "padding_value": self.padding_value,
            "contrast": self.contrast, "truncated_fov": self.truncated_fov,
            # only when drawn, so manifests of phantoms without it are what they were
            **({"kernel_sharpening": round(self.kernel_sharpening, 3)} if self.kernel_sharpening else {}),
        }


def _body_width(model: ChestModel) -> float:
    return 2.0 * model.body_halfwidth()


def sample_anatomy(seed: int, config: PhantomConfig) -> AnatomyParams:
    """Anatomy parameters; redrawn (deterministically) until the body fits the preset's widest field
    of view, so small presets get proportionally small patients rather than cut-off bodies."""
    rng = case_rng(seed, STREAM_ANATOMY)
    fov_max = config.matrix * config.inplane_spacing_mm[1]
    params = AnatomyParams.sample(rng, config.patient_scale)
    for _ in range(30):
        model = ChestModel(params)
        ap = model.y_back - model.body_front()
        if _body_width(model) + 10.0 <= fov_max and ap + 20.0 <= fov_max:
            break
        params = AnatomyParams.sample(rng, config.patient_scale)
    return params


def _sample_slice_spacing(rng: np.random.Generator, lo: float, hi: float) -> float:
    common = [v for v in COMMON_SLICE_SPACINGS if lo <= v <= hi]
    if common and rng.uniform() < 0.7:
        return float(rng.choice(common))
    return float(rng.uniform(lo, hi))


def _direction(rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "identity":
        return np.eye(3)
    if kind == "flipped":
        return np.diag([1.0, 1.0, -1.0])
    ang = np.deg2rad(rng.uniform(8.0, 20.0)) * (1 if rng.uniform() < 0.5 else -1)
    c, s = np.cos(ang), np.sin(ang)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def sample_acquisition(seed: int, config: PhantomConfig, anatomy: AnatomyParams | None = None) -> Acquisition:
    """The voxel grid and scanner settings of case ``seed`` (needs the anatomy for the field of view)."""
    if anatomy is None:
        anatomy = sample_anatomy(seed, config)
    model = ChestModel(anatomy)
    rng = case_rng(seed, STREAM_ACQUISITION)
    n = config.matrix
    s_lo, s_hi = config.inplane_spacing_mm
    truncated = bool(rng.uniform() < config.truncated_fov_probability)
    body_w = _body_width(model) + 12.0
    body_ap = model.y_back - model.body_front() + 25.0
    lung_w = 2.0 * anatomy.cav_a + 20.0
    full_need = max(body_w, body_ap)
    lo_t, hi_t = max(s_lo, lung_w / n), min(s_hi, 0.95 * full_need / n)
    if truncated and lo_t < hi_t:
        sxy = float(rng.uniform(lo_t, hi_t))
    else:
        lo_f = max(s_lo, full_need / n)
        sxy = float(rng.uniform(lo_f, s_hi)) if lo_f < s_hi else s_hi
    truncated = n * sxy < full_need - 12.0
    sz = _sample_slice_spacing(rng, *config.slice_spacing_mm)
    # Scan range: above the apices to below the deepest costophrenic recess.
    z_low_lung = model.lowest_lung_z()
    top = anatomy.z_apex + float(rng.uniform(10.0, 50.0)) * anatomy.scale
    bottom = z_low_lung - float(rng.uniform(15.0, 70.0)) * anatomy.scale
    nz = int(round((top - bottom) / sz)) + 1
    nz_c = int(np.clip(nz, config.n_slices[0], config.n_slices[1]))
    if nz_c != nz:
        # Keep the lungs centred when the slice count is clipped.
        mid = 0.5 * (anatomy.z_apex + z_low_lung)
        extent = (nz_c - 1) * sz
        bottom = mid - 0.5 * extent
        top = bottom + extent
    # Field-of-view centre (anatomy frame): on the body, or on the lungs when truncated.
    cx = float(rng.uniform(-10.0, 10.0))
    if truncated:
        cy = float(rng.uniform(-10.0, 10.0)) + 0.5 * (anatomy.cav_bp - anatomy.cav_ba)
    else:
        cy = 0.5 * (model.body_front() + model.y_back + 18.0) + float(rng.uniform(-10.0, 10.0))
    cz = 0.5 * (top + bottom)
    direction = _direction(rng, config.direction)
    spacing = np.array([sxy, sxy, sz])
    shape = np.array([n, n, nz_c])
    offset = np.array([rng.uniform(-25.0, 25.0), rng.uniform(-220.0, 40.0), rng.uniform(-650.0, 150.0)])
    centre_patient = np.array([cx, cy, cz]) + offset
    origin = centre_patient - direction @ (spacing * (shape - 1) / 2.0)
    geometry = Geometry(tuple(int(v) for v in shape), tuple(float(v) for v in spacing),
                        tuple(float(v) for v in np.round(origin, 4)), tuple(float(v) for v in direction.reshape(-1)))
    return Acquisition(
        geometry=geometry,
        offset=tuple(float(v) for v in offset),
        noise_std_hu=float(rng.uniform(*config.noise_std_hu)),
        psf_fwhm_mm=float(rng.uniform(*config.psf_fwhm_mm)),
        fov_padding=bool(rng.uniform() < config.fov_padding_probability),
        padding_value=int(config.padding_value),
        contrast=bool(rng.uniform() < config.contrast_probability),
        truncated_fov=truncated,
        kernel_sharpening=_sample_kernel(seed, config),
    )


def _sample_kernel(seed: int, config: PhantomConfig) -> float:
    """The sharp kernel's unsharp-mask amount, or 0 for the soft kernel (own stream: the other draws
    of a case do not depend on it)."""
    if config.sharp_kernel_probability <= 0.0:
        return 0.0
    rng = case_rng(seed, STREAM_KERNEL)
    if rng.uniform() >= config.sharp_kernel_probability:
        return 0.0
    return float(rng.uniform(*config.sharp_kernel_gain))


_SUBSOLID = ("part_solid", "ground_glass")
SUBSOLID_MAX_DIAMETER_MM = 40.0


def sample_tumour_specs(seed: int, config: PhantomConfig) -> list[TumourSpec]:
    """Fully specified tumour requests (kind, location, diameter, side) of case ``seed``."""
    rng = case_rng(seed, STREAM_TUMOURS)
    if config.tumours is not None:
        requests = list(config.tumours)
    else:
        w = np.asarray(config.n_tumours_weights, np.float64)
        n = int(rng.choice(len(w), p=w / w.sum()))
        requests = [TumourSpec() for _ in range(n)]
    kw = np.asarray(config.kind_weights, np.float64)
    lw = np.asarray(config.location_weights, np.float64)
    out = []
    for i, req in enumerate(requests):
        # Primary tumours: uniform in diameter; further nodules: log-uniform (small ones common).
        if req.diameter_mm is not None:
            diameter = float(req.diameter_mm)
        elif i == 0:
            diameter = float(rng.uniform(*config.primary_diameter_mm))
        else:
            lo, hi = config.nodule_diameter_mm
            diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        kind = req.kind
        if kind is None:
            probs = kw.copy()
            if diameter > SUBSOLID_MAX_DIAMETER_MM:
                probs[[TUMOUR_KINDS.index(k) for k in _SUBSOLID]] = 0.0
            if probs.sum() <= 0:
                probs = np.ones(len(TUMOUR_KINDS))
            kind = TUMOUR_KINDS[int(rng.choice(len(TUMOUR_KINDS), p=probs / probs.sum()))]
        location = req.location
        if location is None:
            location = LOCATIONS[int(rng.choice(len(LOCATIONS), p=lw / lw.sum()))]
        side = req.side if req.side is not None else ("right" if rng.uniform() < 0.58 else "left")
        out.append(TumourSpec(kind=kind, location=location, diameter_mm=float(diameter), side=side))
    return out
