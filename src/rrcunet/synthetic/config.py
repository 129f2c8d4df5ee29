"""Typed configuration of the chest-CT phantom generator: :class:`PhantomConfig`, its presets
(``"full"``, ``"small"``) and :class:`TumourSpec` (an explicit tumour request).

A config holds *ranges*; :func:`rrcunet.synthetic.sampling.sample_case` draws one case's concrete
values from them with the case seed, so a config plus a seed reproduces a phantom exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rrcunet.errors import ConfigError

TUMOUR_KINDS: tuple[str, ...] = ("round", "lobulated", "spiculated", "part_solid", "ground_glass")
"""Tumour morphologies: solid round/oval, solid lobulated, solid spiculated, part-solid (solid
core in a ground-glass halo) and pure ground-glass (≈ −600 HU)."""

LOCATIONS: tuple[str, ...] = ("central", "peripheral", "juxta_pleural", "mediastinal")
"""Location classes: ``central`` (inner third of the lung, near the hilum, no pleural contact),
``peripheral`` (outer two thirds, no pleural contact), ``juxta_pleural`` (touching the costal,
apical or diaphragmatic pleura, i.e. the chest wall) and ``mediastinal`` (touching the mediastinum,
extending into mediastinal fat)."""

DIRECTIONS: tuple[str, ...] = ("identity", "flipped", "oblique")
"""Voxel-grid orientations: ``identity`` (axial slices, i→patient left, j→posterior,
k→superior), ``flipped`` (slices stored head→feet: direction diag(1, 1, −1)) and ``oblique``
(grid rotated 8–20° about the left-right axis, like a tilted acquisition)."""


def _check_range(name: str, value: tuple[float, float], *, low: float, high: float | None = None) -> None:
    if len(value) != 2:
        raise ConfigError(f"PhantomConfig.{name} must be a (min, max) pair, not {value!r}")
    lo, hi = value
    if not (lo <= hi):
        raise ConfigError(f"PhantomConfig.{name} must have min <= max, found {value!r}")
    if lo < low or (high is not None and hi > high):
        raise ConfigError(f"PhantomConfig.{name} must lie in [{low}, {high}], found {value!r}")


@dataclass(frozen=True, kw_only=True)
class TumourSpec:
    """An explicit tumour request; ``None`` fields are sampled.

    Args:
        kind: one of :data:`TUMOUR_KINDS`.
        location: one of :data:`LOCATIONS`. Placement is verified on the rendered masks; when a
            request cannot be met (e.g. a 7 cm "central" tumour that must touch the mediastinum)
            the recorded location is the one the tumour really has.
        diameter_mm: nominal diameter (mm) of the tumour body, spicules excluded.
        side: ``"left"``, ``"right"`` or ``None`` (either lung).
    """

    kind: str | None = None
    location: str | None = None
    diameter_mm: float | None = None
    side: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in TUMOUR_KINDS:
            raise ConfigError(f"TumourSpec.kind must be one of {TUMOUR_KINDS}, not {self.kind!r}")
        if self.location is not None and self.location not in LOCATIONS:
            raise ConfigError(f"TumourSpec.location must be one of {LOCATIONS}, not {self.location!r}")
        if self.diameter_mm is not None and not (2.0 <= float(self.diameter_mm) <= 120.0):
            raise ConfigError(f"TumourSpec.diameter_mm must be in [2, 120] mm, not {self.diameter_mm!r}")
        if self.side not in (None, "left", "right"):
            raise ConfigError(f"TumourSpec.side must be 'left', 'right' or None, not {self.side!r}")


#: The size guard of a phantom (checked before anything is rendered).
MAX_PHANTOM_VOXELS = 512 * 512 * 1024


@dataclass(frozen=True, kw_only=True)
class PhantomConfig:
    """Ranges the phantom sampler draws from. Use :meth:`preset` for the named presets.

    Args:
        name: preset name, recorded in the manifest.
        matrix: in-plane matrix size (square, e.g. 512).
        inplane_spacing_mm: (min, max) in-plane pixel spacing. The field of view is
            ``matrix × spacing``; the sampler prefers a spacing whose field of view holds the whole
            body and truncates the body (never the lungs) with ``truncated_fov_probability``.
        slice_spacing_mm: (min, max) slice spacing (= slice thickness).
        n_slices: (min, max) number of slices; the scan covers lung apex to bases plus margins.
        patient_scale: (min, max) isotropic size factor of the patient's anatomy (1 ≈ an adult
            whose inner rib cage is ~29 cm wide).
        primary_diameter_mm: (min, max) diameter of the first (primary) tumour.
        nodule_diameter_mm: (min, max) diameter of further tumours (small nodules).
        n_tumours_weights: relative probabilities of 0, 1, 2, 3, ... tumours per scan.
        kind_weights / location_weights: relative probabilities of :data:`TUMOUR_KINDS` /
            :data:`LOCATIONS`, in that order.
        tumours: explicit tumour requests; when given they replace the sampled tumour count and
            (for their non-``None`` fields) the sampled kind/location/diameter.
        noise_std_hu: (min, max) standard deviation of scanner noise in HU (measured after the
            noise's own correlation filter and the slice-profile filter).
        psf_fwhm_mm: (min, max) in-plane full width at half maximum of the Gaussian PSF.
        fov_padding_probability: probability that voxels outside the reconstruction circle are
            set to ``padding_value`` (as many scanners do).
        padding_value: HU written outside the reconstruction circle.
        contrast_probability: probability of an IV-contrast scan (bright blood pool).
        truncated_fov_probability: probability of a field of view narrower than the body.
        sharp_kernel_probability: probability of a sharp (lung / bone) reconstruction kernel:
            after the PSF, an in-plane unsharp mask (Gaussian of one voxel) with an amount drawn from
            ``sharp_kernel_gain``, which overshoots at edges and roughens the noise as such kernels
            do. Default 0: every preset's phantoms are what they were before the option existed
            (its draws come from their own random stream).
        sharp_kernel_gain: (min, max) amount of that unsharp mask.
        direction: voxel-grid orientation, one of :data:`DIRECTIONS`.
        vessel_min_radius_mm: radius at which pulmonary vessel trees stop branching.
        airway_min_radius_mm: airways thinner than this are not drawn (their arteries still are).
        table: draw the patient couch and positioning board below the patient.
        slab_slices: slices rendered per slab (bounds memory; the output does not depend on it).

    Example::

        cfg = PhantomConfig.preset("small", direction="flipped")
    """

    name: str = "full"
    matrix: int = 512
    inplane_spacing_mm: tuple[float, float] = (0.6, 1.0)
    slice_spacing_mm: tuple[float, float] = (1.0, 5.0)
    n_slices: tuple[int, int] = (60, 600)
    patient_scale: tuple[float, float] = (0.86, 1.12)
    primary_diameter_mm: tuple[float, float] = (12.0, 70.0)
    nodule_diameter_mm: tuple[float, float] = (5.0, 20.0)
    n_tumours_weights: tuple[float, ...] = (0.05, 0.55, 0.25, 0.15)
    kind_weights: tuple[float, ...] = (0.25, 0.25, 0.2, 0.15, 0.15)
    location_weights: tuple[float, ...] = (0.25, 0.3, 0.25, 0.2)
    tumours: tuple[TumourSpec, ...] | None = None
    noise_std_hu: tuple[float, float] = (10.0, 30.0)
    psf_fwhm_mm: tuple[float, float] = (0.8, 1.5)
    fov_padding_probability: float = 0.5
    padding_value: int = -1024
    contrast_probability: float = 0.15
    truncated_fov_probability: float = 0.1
    sharp_kernel_probability: float = 0.0
    sharp_kernel_gain: tuple[float, float] = (0.5, 1.5)
    direction: str = "identity"
    vessel_min_radius_mm: float = 0.4
    airway_min_radius_mm: float = 1.0
    table: bool = True
    slab_slices: int = 32

    def __post_init__(self) -> None:
        if self.matrix < 16 or self.matrix > 2048:
            raise ConfigError(f"PhantomConfig.matrix must be in [16, 2048], not {self.matrix}")
        _check_range("inplane_spacing_mm", self.inplane_spacing_mm, low=0.1, high=10.0)
        _check_range("slice_spacing_mm", self.slice_spacing_mm, low=0.1, high=20.0)
        _check_range("n_slices", self.n_slices, low=4)
        _check_range("patient_scale", self.patient_scale, low=0.5, high=1.5)
        _check_range("primary_diameter_mm", self.primary_diameter_mm, low=2.0, high=120.0)
        _check_range("nodule_diameter_mm", self.nodule_diameter_mm, low=2.0, high=120.0)
        _check_range("noise_std_hu", self.noise_std_hu, low=0.0, high=500.0)
        _check_range("psf_fwhm_mm", self.psf_fwhm_mm, low=0.0, high=20.0)
        for name, weights, n in (("kind_weights", self.kind_weights, len(TUMOUR_KINDS)),
                                 ("location_weights", self.location_weights, len(LOCATIONS))):
            if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ConfigError(f"PhantomConfig.{name} needs {n} non-negative weights with a positive sum, "
                                  f"found {weights!r}")
        if not self.n_tumours_weights or any(w < 0 for w in self.n_tumours_weights) \
                or sum(self.n_tumours_weights) <= 0:
            raise ConfigError(f"PhantomConfig.n_tumours_weights must be non-negative with a positive sum, "
                              f"found {self.n_tumours_weights!r}")
        _check_range("sharp_kernel_gain", self.sharp_kernel_gain, low=0.0, high=5.0)
        for name in ("fov_padding_probability", "contrast_probability", "truncated_fov_probability",
                     "sharp_kernel_probability"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"PhantomConfig.{name} must be a probability in [0, 1], not {p}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"PhantomConfig.direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if not 0.05 <= self.vessel_min_radius_mm <= 5.0:
            raise ConfigError("PhantomConfig.vessel_min_radius_mm must be in [0.05, 5], "
                              f"not {self.vessel_min_radius_mm}")
        if self.airway_min_radius_mm <= 0:
            raise ConfigError(f"PhantomConfig.airway_min_radius_mm must be > 0, not {self.airway_min_radius_mm}")
        if isinstance(self.padding_value, bool) or not isinstance(self.padding_value, (int, float)) \
                or not -32768 <= self.padding_value <= 32767 or self.padding_value != int(self.padding_value):
            raise ConfigError("PhantomConfig.padding_value must be a whole HU value that int16 holds "
                              f"([-32768, 32767], e.g. -1024, -2048 or -3024), not {self.padding_value!r}")
        voxels = self.matrix * self.matrix * int(max(self.n_slices))
        if voxels > MAX_PHANTOM_VOXELS:
            raise ConfigError(f"PhantomConfig: a {self.matrix}x{self.matrix}x{max(self.n_slices)} phantom has {voxels} "
                              f"voxels, above the bound of {MAX_PHANTOM_VOXELS} (512x512x1024); choose a smaller "
                              "matrix or n_slices (--set matrix=256, --set n_slices=[60,300])")
        if self.slab_slices < 1:
            raise ConfigError(f"PhantomConfig.slab_slices must be >= 1, not {self.slab_slices}")
        if self.tumours is not None:
            object.__setattr__(self, "tumours", tuple(self.tumours))
            for t in self.tumours:
                if not isinstance(t, TumourSpec):
                    raise ConfigError(f"PhantomConfig.tumours must hold TumourSpec objects, found {type(t).__name__}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PhantomConfig":
        """The named preset (see :data:`PRESETS`), with ``overrides`` replacing its fields."""
        if name not in PRESETS:
            raise ConfigError(f"unknown phantom preset {name!r}; choose one of {sorted(PRESETS)}")
        try:
            return dataclasses.replace(PRESETS[name], **overrides)
        except TypeError as exc:
            fields = sorted(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"invalid PhantomConfig override ({exc}); fields are {fields}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, PhantomConfig] = {
    # Clinical geometry: 512×512, 0.6–1 mm pixels, 1–5 mm slices, 60–600 slices.
    "full": PhantomConfig(name="full"),
    # A realistic but downscaled chest for tests, CPU training and the demo: 128×128×40–64 voxels
    # of ~2.5–3 × 2.5–3 × 4.5–5 mm. Tumours start at 10 mm (≥ 3 voxels across) so they stay
    # visible; thin vessels are drawn with partial-volume-preserving contrast; airways below
    # 1.4 mm radius are not drawn.
    "small": PhantomConfig(
        name="small",
        matrix=128,
        inplane_spacing_mm=(2.5, 3.0),
        slice_spacing_mm=(4.5, 5.0),
        n_slices=(40, 64),
        patient_scale=(0.8, 1.02),
        primary_diameter_mm=(15.0, 60.0),
        nodule_diameter_mm=(10.0, 22.0),
        psf_fwhm_mm=(2.5, 3.5),
        vessel_min_radius_mm=0.8,
        airway_min_radius_mm=1.4,
        slab_slices=64,
    ),
}
