"""Lung tumours of the phantoms: shapes (round, lobulated, spiculated, part-solid, ground-glass),
their internal appearance, and placement by location class (central, peripheral, juxta-pleural,
mediastinal).

A tumour body is a star-shaped implicit surface ``|q| = R (1 + Σ a_k T_{n_k}(q̂·v_k))`` in a
rotated, slightly anisotropic frame (``T_n`` are Chebyshev polynomials, i.e. smooth zonal lobes);
spiculated tumours add tapered spicules. Placement picks a centre among points uniformly filling
the lungs whose distances to the chest wall, mediastinum and diaphragm satisfy the requested
class; the rendered masks then decide the recorded class (see :func:`measured_location`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rrcunet.synthetic.anatomy import ChestModel
from rrcunet.synthetic.config import TumourSpec

SOLID_KINDS = ("round", "lobulated", "spiculated")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class TumourShape:
    """One tumour: geometry in the anatomy frame (mm) and appearance (HU)."""

    kind: str
    requested_location: str
    side: str
    diameter_mm: float
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    axes: np.ndarray = field(default_factory=lambda: np.ones(3))
    lobe_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lobe_orders: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lobe_amps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spicule_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    spicule_len: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spicule_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    core_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    core_scale: float = 0.0
    border: float = 0.0            # amplitude (fraction of the radius) of the irregular-border field
    hu_solid: float = 40.0
    hu_ggo: float = -600.0
    texture_hu: float = 10.0
    necrosis: float = 0.0          # fraction of the radius that is necrotic (0 = none)
    hu_necrosis: float = 15.0
    cavity_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    cavity_r: float = 0.0
    placement_note: str = ""

    @property
    def radius(self) -> float:
        return 0.5 * self.diameter_mm

    @property
    def extent(self) -> float:
        """Radius of a sphere around the centre that holds the whole tumour, spicules included."""
        lobes = float(np.sum(np.abs(self.lobe_amps))) if len(self.lobe_amps) else 0.0
        body = self.radius * (1.0 + lobes) * float(np.max(self.axes))
        spic = float(np.max(self.radius * self.axes.max() + self.spicule_len)) if len(self.spicule_len) else 0.0
        return max(body + 3.0 * self.border * self.radius, spic) + 1.0

    def spicule_segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.spicule_len)
        if n == 0:
            z = np.zeros((0, 3))
            return z, z, np.zeros(0), np.zeros(0)
        base = self.centre + self.spicule_dirs * (0.75 * self.radius)
        tip = self.centre + self.spicule_dirs * (self.radius + self.spicule_len)[:, None]
        return base, tip, self.spicule_r, np.full(n, 0.3)

    def body_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, *, scale: float = 1.0,
                offset: np.ndarray | None = None) -> np.ndarray:
        """Approximate signed distance (mm) to the tumour body (``scale`` < 1: the solid core)."""
        c = self.centre + (offset if offset is not None else 0.0)
        r = self.rot.astype(np.float32)
        dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
        a = self.axes.astype(np.float32)
        lx = (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]) / a[0]
        ly = (dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]) / a[1]
        lz = (dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]) / a[2]
        rho = np.sqrt(lx * lx + ly * ly + lz * lz)
        inv = 1.0 / np.maximum(rho, np.float32(1e-6))
        f = np.zeros_like(rho)
        for v, n, amp in zip(self.lobe_dirs.astype(np.float32), self.lobe_orders, self.lobe_amps):
            t = (lx * v[0] + ly * v[1] + lz * v[2]) * inv
            t0, t1 = np.ones_like(t), t
            for _ in range(int(n) - 1):
                t0, t1 = t1, 2.0 * t * t1 - t0
            f += np.float32(amp) * (t1 if n >= 1 else t0)
        R = np.float32(self.radius * scale) * (1.0 + f)
        return (rho - R) * np.float32(np.min(self.axes))


def make_shape(spec: TumourSpec, rng: np.random.Generator) -> TumourShape:
    """Random morphology and appearance for a fully specified request (centre set later)."""
    kind = spec.kind
    d = float(spec.diameter_mm)
    t = TumourShape(kind=kind, requested_location=spec.location, side=spec.side, diameter_mm=d)
    t.rot = _random_rotation(rng)
    aniso = {"round": 0.12, "lobulated": 0.18, "spiculated": 0.15, "part_solid": 0.2, "ground_glass": 0.25}[kind]
    ax = np.exp(rng.uniform(-aniso, aniso, size=3))
    t.axes = ax / np.cbrt(np.prod(ax))
    k, amp = {"round": (3, 0.05), "lobulated": (7, 0.16), "spiculated": (5, 0.1), "part_solid": (5, 0.12),
              "ground_glass": (5, 0.14)}[kind]
    t.border = {"round": 0.04, "lobulated": 0.09, "spiculated": 0.1, "part_solid": 0.1, "ground_glass": 0.14}[kind]
    nk = int(rng.integers(max(1, k - 2), k + 1))
    t.lobe_dirs = _unit(rng, nk)
    t.lobe_orders = rng.integers(2, 6 if kind == "lobulated" else 4, size=nk)
    t.lobe_amps = rng.uniform(0.3, 1.0, size=nk) * amp * rng.choice([-1.0, 1.0], size=nk)
    t.hu_solid = float(rng.uniform(22.0, 50.0))
    t.texture_hu = float(rng.uniform(6.0, 14.0))
    if kind == "spiculated":
        ns = int(rng.integers(14, 34))
        t.spicule_dirs = _unit(rng, ns)
        t.spicule_len = rng.uniform(0.3, 1.0, size=ns) * t.radius + rng.uniform(3.0, 8.0, size=ns)
        t.spicule_r = np.clip(rng.uniform(0.07, 0.14, size=ns) * t.radius, 0.8, 3.5)
    if kind in ("round", "lobulated", "spiculated") and d > 35.0 and rng.uniform() < 0.55:
        t.necrosis = float(rng.uniform(0.35, 0.6))
        t.hu_necrosis = float(rng.uniform(0.0, 20.0))
    if kind in ("lobulated", "spiculated") and d > 30.0 and rng.uniform() < 0.12:
        t.cavity_r = float(rng.uniform(0.15, 0.3)) * t.radius
        t.cavity_offset = _unit(rng, 1)[0] * rng.uniform(0.0, 0.3) * t.radius
    if kind == "part_solid":
        t.core_scale = float(rng.uniform(0.3, 0.6))
        t.core_offset = _unit(rng, 1)[0] * rng.uniform(0.0, 0.25) * t.radius
        t.hu_ggo = float(rng.uniform(-680.0, -480.0))
    if kind == "ground_glass":
        t.hu_ggo = float(rng.uniform(-700.0, -500.0))
        t.texture_hu = float(rng.uniform(15.0, 35.0))
    return t


@dataclass
class LungSites:
    """Candidate tumour centres (points uniformly filling the lungs) and their distances (mm)."""

    pts: np.ndarray
    side: np.ndarray        # "right"/"left"
    wall: np.ndarray        # to the costal/apical pleura
    mediastinum: np.ndarray
    diaphragm: np.ndarray
    centrality: np.ndarray  # 0 at the mediastinal pleura, 1 at the chest wall (see centrality())

    @classmethod
    def from_model(cls, model: ChestModel, pts: np.ndarray) -> "LungSites":
        comp = model.components_points(pts)
        right = pts[:, 0] < 3.0 * model.p.scale
        return cls(pts=pts, side=np.where(right, "right", "left"), wall=comp["wall"],
                   mediastinum=comp["mediastinum"], diaphragm=comp["diaphragm"],
                   centrality=centrality(comp["mediastinum"], np.minimum(comp["wall"], comp["diaphragm"])))


def centrality(med: np.ndarray, wall: np.ndarray) -> np.ndarray:
    """Relative depth across the lung: 0 at the mediastinal pleura (hilum side), 1 at the chest wall.

    "Central" tumours lie in the inner third (< :data:`CENTRAL_MAX`), "peripheral" ones in the outer
    half (> :data:`PERIPHERAL_MIN`).
    """
    med = np.maximum(np.asarray(med, np.float64), 0.0)
    wall = np.maximum(np.asarray(wall, np.float64), 0.0)
    return med / np.maximum(med + wall, 1e-6)


CENTRAL_MAX = 0.38
PERIPHERAL_MIN = 0.5


def _candidates(sites: LungSites, t: TumourShape, location: str, gap: float) -> np.ndarray:
    R, E = t.radius, t.extent
    pleura = np.minimum(sites.wall, sites.diaphragm)
    clear_wall = pleura > E + gap
    clear_med = sites.mediastinum > E + gap
    if location == "central":
        m = (sites.centrality < CENTRAL_MAX) & clear_wall & clear_med
    elif location == "peripheral":
        m = (sites.centrality > PERIPHERAL_MIN) & clear_wall & clear_med
    elif location == "juxta_pleural":
        m = (pleura > 0.45 * R) & (pleura < 0.82 * R) & clear_med
    else:  # mediastinal
        m = (sites.mediastinum > 0.45 * R) & (sites.mediastinum < 0.85 * R) & clear_wall
    if t.side in ("left", "right"):
        m &= sites.side == t.side
    return m


FALLBACK = {"central": ("mediastinal", "peripheral", "juxta_pleural"),
            "peripheral": ("juxta_pleural", "central", "mediastinal"),
            "juxta_pleural": ("peripheral", "mediastinal", "central"),
            "mediastinal": ("central", "juxta_pleural", "peripheral")}


def place_tumours(shapes: list[TumourShape], sites: LungSites, rng: np.random.Generator, *,
                  gap: float, avoid: Sequence[TumourShape] = ()) -> list[TumourShape]:
    """Choose centres so each tumour meets its requested class and tumours do not overlap
    (each other, nor the already placed ``avoid``).

    A request that cannot be met is placed in the next class of :data:`FALLBACK` (shrinking the
    tumour as a last resort), so every tumour is placed; the note says what was changed.
    """
    placed: list[TumourShape] = []
    for t in shapes:
        done = False
        for attempt in range(4):
            order = (t.requested_location,) + FALLBACK[t.requested_location]
            for loc in order:
                for side_free in (False, True):
                    m = _candidates(sites, t, loc, gap)
                    if side_free and t.side in ("left", "right"):
                        tmp_side, t.side = t.side, None
                        m = _candidates(sites, t, loc, gap)
                        t.side = tmp_side
                    for other in (*avoid, *placed):
                        m &= np.linalg.norm(sites.pts - other.centre, axis=1) > t.extent + other.extent + 4.0
                    idx = np.nonzero(m)[0]
                    if len(idx):
                        i = int(rng.choice(idx))
                        t.centre = sites.pts[i].copy()
                        t.side = str(sites.side[i])
                        if loc != t.requested_location:
                            t.placement_note = f"requested {t.requested_location}, placed {loc}"
                        done = True
                        break
                if done:
                    break
            if done:
                break
            # Could not place anywhere: shrink and retry.
            scale = 0.75
            t.diameter_mm *= scale
            t.spicule_len = t.spicule_len * scale
            t.spicule_r = np.maximum(t.spicule_r * scale, 0.5)
            t.cavity_r *= scale
            t.core_offset = t.core_offset * scale
            t.cavity_offset = t.cavity_offset * scale
            t.placement_note = f"shrunk to {t.diameter_mm:.1f} mm to fit"
        if done:
            placed.append(t)
    return placed


def measured_location(requested: str, touches_wall: bool, touches_med: bool, centrality: float) -> str:
    """The location class a rendered tumour really has (the request wins when it is true)."""
    if requested == "juxta_pleural" and touches_wall:
        return requested
    if requested == "mediastinal" and touches_med:
        return requested
    if touches_wall:
        return "juxta_pleural"
    if touches_med:
        return "mediastinal"
    if requested in ("central", "peripheral"):
        ok = centrality < 0.45 if requested == "central" else centrality >= 0.43
        if ok:
            return requested
    return "central" if centrality < 0.44 else "peripheral"
