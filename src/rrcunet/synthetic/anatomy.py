"""The analytic chest model of the phantom generator: sampled anatomical parameters
(:class:`AnatomyParams`), tissue Hounsfield values (:class:`TissueHU`) and :class:`ChestModel`,
whose methods give signed distances (mm, negative inside) of the body, rib cage, lungs,
mediastinum, heart and abdominal organs at any points.

Coordinates are the *anatomy frame*: LPS axes (x → patient left, y → posterior, z → superior) in
mm, with the carina at z = 0 and the thoracic cavity centred on x = y = 0. The renderer shifts
this frame to patient coordinates and samples it on a voxel grid. All methods take broadcastable
arrays, so the same code serves voxel grids (cheap 1-D/2-D broadcasts) and point clouds.

Why our own model rather than an existing phantom (XCAT, 4D-XCAT, MIDA): those are licensed mesh
phantoms of a handful of fixed bodies; we need thousands of varied, seeded chests with tumours,
computed on the fly at any resolution, so the anatomy is written as parametric implicit shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from rrcunet.synthetic.raster import segment_sd_points

# Tissue ids of the hard-edged label map the renderer builds before looking up HU values.
T_AIR, T_SKIN, T_FAT, T_MUSCLE, T_MEDFAT, T_LUNG, T_BLOOD, T_MYOCARD, T_LIVER, T_SPLEEN, T_STOMACH, \
    T_KIDNEY, T_ABDOMEN, T_CORTEX, T_MARROW, T_CARTILAGE, T_DISC, T_CANAL, T_AIRWALL, T_OESOPH, T_LYMPH, \
    T_TABLE_SHELL, T_TABLE_FOAM, T_GLAND, T_CONTRAST_BLOOD = range(25)
N_TISSUES = 25
TISSUE_NAMES: dict[int, str] = {
    T_AIR: "air", T_SKIN: "skin", T_FAT: "fat", T_MUSCLE: "muscle", T_MEDFAT: "mediastinal_fat", T_LUNG: "lung",
    T_BLOOD: "blood", T_MYOCARD: "myocardium", T_LIVER: "liver", T_SPLEEN: "spleen", T_STOMACH: "stomach",
    T_KIDNEY: "kidney", T_ABDOMEN: "abdomen", T_CORTEX: "cortical_bone", T_MARROW: "cancellous_bone",
    T_CARTILAGE: "cartilage", T_DISC: "disc", T_CANAL: "spinal_canal", T_AIRWALL: "airway_wall",
    T_OESOPH: "oesophagus", T_LYMPH: "lymph_node", T_TABLE_SHELL: "table_shell", T_TABLE_FOAM: "table_foam",
    T_GLAND: "breast_gland", T_CONTRAST_BLOOD: "heart_chamber",
}
"""Names of the tissue ids in :attr:`rrcunet.synthetic.Phantom.tissues` (airway lumens are ``air``;
pulmonary vessels, small airways, fissures and tumours are drawn on top of this map and are not in it)."""


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class TissueHU:
    """Mean Hounsfield units of each tissue for one scan (before blur and noise)."""

    air: float
    skin: float
    fat: float
    medfat: float
    muscle: float
    lung: float              # lung parenchyma at the non-dependent (anterior) side
    lung_gradient: float     # extra HU at the most dependent (posterior) lung
    lung_texture: float      # std of the fine parenchymal texture field (~2.5 mm correlation)
    lung_heterogeneity: float  # std of the coarse regional density field (~12 mm correlation)
    blood: float             # blood pool (aorta, heart chambers); bright when contrast
    vessel: float            # intrapulmonary vessels
    myocard: float
    liver: float
    spleen: float
    stomach: float
    kidney: float
    abdomen: float           # abdominal fat/bowel mixture
    cortex: float            # cortical bone
    marrow: float            # cancellous bone
    cartilage: float
    disc: float
    canal: float             # spinal canal: cord + CSF
    airway_wall: float
    oesophagus: float
    lymph: float
    gland: float             # fibroglandular breast tissue
    table_shell: float
    table_foam: float

    @classmethod
    def sample(cls, rng: np.random.Generator, *, contrast: bool) -> "TissueHU":
        fat = _u(rng, -112, -88)
        blood = _u(rng, 150, 320) if contrast else _u(rng, 30, 48)
        return cls(
            air=-1000.0, skin=_u(rng, 10, 45), fat=fat, medfat=fat + _u(rng, -6, 12), muscle=_u(rng, 25, 50),
            lung=_u(rng, -895, -860), lung_gradient=_u(rng, 50, 130), lung_texture=_u(rng, 12, 20),
            lung_heterogeneity=_u(rng, 15, 28),
            blood=blood, vessel=(blood if contrast else _u(rng, 30, 50)), myocard=_u(rng, 90, 130) if contrast
            else blood + _u(rng, -2, 8), liver=_u(rng, 45, 65) + (40 if contrast else 0),
            spleen=_u(rng, 40, 52) + (50 if contrast else 0), stomach=_u(rng, 0, 25), kidney=_u(rng, 25, 35)
            + (120 if contrast else 0), abdomen=_u(rng, -75, -40), cortex=_u(rng, 600, 1000),
            marrow=_u(rng, 140, 300), cartilage=_u(rng, 80, 160), disc=_u(rng, 70, 105), canal=_u(rng, 10, 30),
            airway_wall=_u(rng, 20, 50), oesophagus=_u(rng, 30, 48), lymph=_u(rng, 28, 45),
            gland=_u(rng, 10, 45), table_shell=_u(rng, 350, 650), table_foam=_u(rng, -950, -880),
        )

    def lut(self) -> np.ndarray:
        """HU per tissue id (index with the renderer's tissue map)."""
        v = np.zeros(N_TISSUES, np.float32)
        v[T_AIR] = self.air
        v[T_SKIN] = self.skin
        v[T_FAT] = self.fat
        v[T_MUSCLE] = self.muscle
        v[T_MEDFAT] = self.medfat
        v[T_LUNG] = self.lung
        v[T_BLOOD] = self.blood
        v[T_MYOCARD] = self.myocard
        v[T_LIVER] = self.liver
        v[T_SPLEEN] = self.spleen
        v[T_STOMACH] = self.stomach
        v[T_KIDNEY] = self.kidney
        v[T_ABDOMEN] = self.abdomen
        v[T_CORTEX] = self.cortex
        v[T_MARROW] = self.marrow
        v[T_CARTILAGE] = self.cartilage
        v[T_DISC] = self.disc
        v[T_CANAL] = self.canal
        v[T_AIRWALL] = self.airway_wall
        v[T_OESOPH] = self.oesophagus
        v[T_LYMPH] = self.lymph
        v[T_TABLE_SHELL] = self.table_shell
        v[T_TABLE_FOAM] = self.table_foam
        v[T_GLAND] = self.gland
        v[T_CONTRAST_BLOOD] = self.blood
        return v


@dataclass(frozen=True)
class AnatomyParams:
    """Sampled size and shape parameters of one chest (mm unless stated).

    The rib cage's inner surface (the parietal pleura) is an elliptic cylinder with separate
    anterior/posterior semi-axes, squared off by ``cav_square`` and narrowing towards the thoracic
    inlet. z landmarks are relative to the carina (z = 0).
    """

    scale: float
    cav_a: float            # lateral semi-axis of the rib cage at its widest
    cav_ba: float           # anterior semi-axis
    cav_bp: float           # posterior semi-axis
    cav_square: float       # 0 = ellipse, 1 = markedly squared-off
    cav_taper: float        # how much narrower the chest is in front than behind
    z_apex: float           # top of the lung apices
    z_dome_r: float         # top of the right hemidiaphragm
    z_dome_l: float         # top of the left hemidiaphragm
    recess_lat: float       # how far the lateral costophrenic recess lies below the dome
    recess_post: float      # same for the posterior recess
    rib_layer: float        # radial thickness of the rib/intercostal layer
    muscle_lat: float
    muscle_ant: float
    fat_lat: float
    fat_ant: float
    fat_post: float
    back_muscle: float      # cavity-to-back distance at the posterior gutters (paraspinal muscles)
    shoulder: float         # extra lateral soft tissue at the shoulder girdle
    female: bool
    breast: float           # breast size (0 = none)
    heart_a: float
    heart_b: float
    heart_c: float
    heart_rot: float        # rotation of the heart's long axis about z (rad)
    heart_tilt: float       # tilt of the long axis downwards (rad)
    heart_x: float
    pericard_fat: float
    aorta_r: float
    aorta_desc_r: float
    arch_z: float
    trachea_r: float
    vb_a: float             # vertebral body lateral semi-axis
    vb_b: float             # vertebral body AP semi-axis
    vert_period: float      # vertebral body + disc height
    vert_phase: float
    rib_pitch: float
    rib_drop: float         # how much lower a rib's anterior end is than its posterior end
    med_width: float        # half-width of the middle mediastinum
    mediastinal_fat: float  # 0..1 fraction of mediastinal space that is fat rather than soft tissue
    gas_bubble: float       # height of the gastric air bubble

    @classmethod
    def sample(cls, rng: np.random.Generator, scale_range: tuple[float, float]) -> "AnatomyParams":
        s = _u(rng, *scale_range)
        female = bool(rng.uniform() < 0.45)
        z_dome_r = -s * _u(rng, 90, 125)
        obese = _u(rng, 0.0, 1.0) ** 1.5
        return cls(
            scale=s,
            cav_a=s * _u(rng, 130, 160), cav_ba=s * _u(rng, 88, 112), cav_bp=s * _u(rng, 100, 122),
            cav_square=_u(rng, 0.0, 0.4), cav_taper=_u(rng, 0.1, 0.25),
            z_apex=s * _u(rng, 85, 110), z_dome_r=z_dome_r, z_dome_l=z_dome_r - s * _u(rng, 8, 22),
            recess_lat=s * _u(rng, 25, 45), recess_post=s * _u(rng, 38, 62),
            rib_layer=s * _u(rng, 9, 12), muscle_lat=s * _u(rng, 3, 9), muscle_ant=s * _u(rng, 10, 22),
            fat_lat=s * (8 + 40 * obese), fat_ant=s * (6 + 30 * obese), fat_post=s * (5 + 20 * obese),
            back_muscle=s * _u(rng, 28, 42), shoulder=s * _u(rng, 15, 40),
            female=female, breast=(_u(rng, 0.45, 1.05) if female else 0.0),
            heart_a=s * _u(rng, 60, 74), heart_b=s * _u(rng, 46, 56), heart_c=s * _u(rng, 46, 56),
            heart_rot=np.deg2rad(_u(rng, 35, 55)), heart_tilt=np.deg2rad(_u(rng, 12, 28)),
            heart_x=s * _u(rng, 32, 50), pericard_fat=s * _u(rng, 2, 9),
            aorta_r=s * _u(rng, 15.5, 19.5), aorta_desc_r=s * _u(rng, 11, 14), arch_z=s * _u(rng, 22, 38),
            trachea_r=s * _u(rng, 8, 10.5), vb_a=s * _u(rng, 16, 21), vb_b=s * _u(rng, 13, 16),
            vert_period=s * _u(rng, 25, 29), vert_phase=_u(rng, 0, 1),
            rib_pitch=s * _u(rng, 22.0, 26.0), rib_drop=s * _u(rng, 95, 130),
            med_width=s * _u(rng, 22, 32), mediastinal_fat=_u(rng, 0.3, 1.0), gas_bubble=s * _u(rng, 0, 25),
        )

    def to_dict(self) -> dict[str, float | bool]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smin(a: np.ndarray, b: np.ndarray, k: np.float32) -> np.ndarray:
    """Polynomial smooth minimum (a smooth union of two signed distances, blend width ``k``)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * (k * 0.25)


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass
class Tubes:
    """A set of tapered capsules with a tissue id per capsule."""

    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    tissue: np.ndarray

    @classmethod
    def empty(cls) -> "Tubes":
        z = np.zeros((0, 3))
        return cls(z, z.copy(), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))

    @classmethod
    def from_polyline(cls, pts: np.ndarray, radii: np.ndarray | float, tissue: int) -> "Tubes":
        pts = np.asarray(pts, np.float64)
        r = np.broadcast_to(np.asarray(radii, np.float64), (len(pts),))
        n = len(pts) - 1
        return cls(pts[:-1].copy(), pts[1:].copy(), r[:-1].copy(), r[1:].copy(), np.full(n, tissue, np.int64))

    def __len__(self) -> int:
        return len(self.p0)

    def select(self, mask: np.ndarray) -> "Tubes":
        return Tubes(self.p0[mask], self.p1[mask], self.r0[mask], self.r1[mask], self.tissue[mask])

    def inflate(self, d: float) -> "Tubes":
        return Tubes(self.p0, self.p1, self.r0 + d, self.r1 + d, self.tissue)

    @staticmethod
    def concat(items: list["Tubes"]) -> "Tubes":
        items = [t for t in items if len(t)]
        if not items:
            return Tubes.empty()
        return Tubes(*(np.concatenate([getattr(t, f.name) for t in items]) for f in fields(Tubes)))

    def sd_points(self, pts: np.ndarray) -> np.ndarray:
        return segment_sd_points(pts, self.p0, self.p1, self.r0, self.r1)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = np.maximum(self.r0, self.r1)[:, None]
        return (np.minimum(self.p0, self.p1) - r).min(axis=0), (np.maximum(self.p0, self.p1) + r).max(axis=0)


def _ellipsoid_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, axes: np.ndarray,
                  rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance to a (rotated) ellipsoid: radial distance along the ray from the centre."""
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    if rot is not None:  # local = rot^T @ d
        r = rot.astype(np.float32)
        lx = dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]
        ly = dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]
        lz = dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]
        dx, dy, dz = lx, ly, lz
    a = np.asarray(axes, np.float32)
    q = np.sqrt((dx / a[0]) ** 2 + (dy / a[1]) ** 2 + (dz / a[2]) ** 2)
    rad = np.sqrt(dx * dx + dy * dy + dz * dz)
    return rad * (1.0 - 1.0 / np.maximum(q, np.float32(1e-6)))


class ChestModel:
    """Geometry of one sampled chest; see the module docstring for the frame.

    Construction only derives landmark geometry from :class:`AnatomyParams` (cheap); the
    intrapulmonary trees are grown by :func:`rrcunet.synthetic.trees.grow_lung_trees`.
    """

    def __init__(self, p: AnatomyParams):
        self.p = p
        s = p.scale
        self.yc = 0.0
        self.z_top_cage = p.z_apex + 15.0 * s
        self.z_wide = p.z_dome_r + 20.0 * s
        # Lung apex caps: ellipsoidal domes over each hemithorax.
        self.z_cap = p.z_apex - 75.0 * s
        a_cap = float(self.A(np.float32(self.z_cap)))
        self.cap_x = 0.5 * a_cap
        self.cap_rx = 0.56 * a_cap
        ba, bp = float(self.Ba(np.float32(self.z_cap))), float(self.Bp(np.float32(self.z_cap)))
        self.cap_y = 0.5 * (bp - ba) + 0.1 * bp
        self.cap_ry = 0.56 * (ba + bp)
        # Diaphragm domes.
        self.dome_x = 0.42 * p.cav_a
        self.dome_y = -0.15 * p.cav_ba
        # Spine: vertebral body centre y follows the posterior cavity wall.
        self.vb_depth = 0.36 * p.cav_bp
        # Back: flat where the patient lies on the table.
        self.y_back = p.cav_bp + p.back_muscle + p.fat_post
        # Heart.
        self.heart_rot = _rot_z(p.heart_rot) @ _rot_x(-p.heart_tilt)
        z_d_mid = float(self.diaphragm_z(np.float32(p.heart_x), np.float32(-0.3 * p.cav_ba)))
        self.heart_centre = np.array([p.heart_x, -0.3 * p.cav_ba, z_d_mid + 0.62 * p.heart_c])
        self.heart_axes = np.array([p.heart_a, p.heart_b, p.heart_c])
        self.heart_top = self.heart_centre[2] + 0.85 * p.heart_c
        # Atria: the right atrium forms the right heart border, the left atrium the posterior one.
        hc = self.heart_centre
        self.right_atrium = (np.array([hc[0] - 0.95 * p.heart_a, hc[1] + 0.25 * p.heart_b, hc[2] + 0.05 * p.heart_c]),
                             np.array([0.42 * p.heart_a, 0.5 * p.heart_b, 0.62 * p.heart_c]))
        self.left_atrium_box = (np.array([hc[0] - 0.5 * p.heart_a, hc[1] + 0.85 * p.heart_b, hc[2] + 0.45 * p.heart_c]),
                                np.array([0.5 * p.heart_a, 0.38 * p.heart_b, 0.4 * p.heart_c]))
        self._build_tubes()
        self._build_abdomen()
        self.trees: Tubes = Tubes.empty()          # intrapulmonary airways/arteries/veins, tissue-coded
        self.hilar: Tubes = Tubes.empty()          # hilar parts of the trees (belong to the mediastinum)
        self.airway_lumen: Tubes = Tubes.empty()   # intrapulmonary airway lumens
        self.airway_wall: Tubes = Tubes.empty()
        self.lobes: dict[str, np.ndarray] = {}

    # ---- profiles -------------------------------------------------------------------------
    def _t_up(self, z: np.ndarray) -> np.ndarray:
        return np.clip((z - np.float32(self.z_wide)) / np.float32(self.z_top_cage - self.z_wide), 0.0, 1.2)

    def A(self, z: np.ndarray) -> np.ndarray:
        t = self._t_up(z)
        low = np.clip((np.float32(self.z_wide) - z) / np.float32(200.0), 0.0, 1.0)
        return np.float32(self.p.cav_a) * (1.0 - 0.25 * t - 0.2 * t * t) * (1.0 - 0.06 * low)

    def Ba(self, z: np.ndarray) -> np.ndarray:
        t = self._t_up(z)
        return np.float32(self.p.cav_ba) * np.sqrt(np.maximum(1.0 - 0.7 * t * t, 0.05))

    def Bp(self, z: np.ndarray) -> np.ndarray:
        t = self._t_up(z)
        return np.float32(self.p.cav_bp) * np.sqrt(np.maximum(1.0 - 0.55 * t * t, 0.05))

    def y_vb(self, z: np.ndarray) -> np.ndarray:
        """AP position of the vertebral body centre."""
        return self.Bp(z) - np.float32(self.vb_depth)

    # ---- body wall ------------------------------------------------------------------------
    def cavity_ellipse_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Radial signed distance to the rib cage's inner surface, ignoring the spinal notch."""
        yy = y - np.float32(self.yc)
        # The chest is narrower in front than behind (the cross-section is egg-shaped).
        front = np.clip(-yy / np.float32(self.p.cav_ba), 0.0, 1.0)
        taper = 1.0 - np.float32(self.p.cav_taper) * front * front
        u2 = x * x / (self.A(z) ** 2 * taper * taper)
        v2 = yy * yy / np.where(yy < 0, self.Ba(z), self.Bp(z)) ** 2
        s2 = u2 + v2
        q2 = s2 - np.float32(self.p.cav_square) * (u2 * v2) / (s2 + np.float32(1e-6))
        r = np.sqrt(x * x + yy * yy)
        return r * (1.0 - 1.0 / np.sqrt(np.maximum(q2, np.float32(1e-8))))

    def spine_notch(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Positive inside the posterior midline block (vertebrae, paraspinal muscles).

        The block is a box open posteriorly, |x| < half-width and y > the vertebral body centre,
        with rounded (12 mm) anterior corners so the lungs wrap smoothly around the spine.
        """
        r = np.float32(12.0 * self.p.scale)
        qx = np.abs(x) - np.float32(self.p.vb_a + 9.0 * self.p.scale) + r
        qy = (self.y_vb(z) + r) - y
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return -(outside + np.minimum(np.maximum(qx, qy), 0.0) - r)

    def cavity_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                  ellipse_sd: np.ndarray | None = None) -> np.ndarray:
        """Signed distance to the thoracic cavity (parietal pleura): the ellipse minus the spine block."""
        if ellipse_sd is None:
            ellipse_sd = self.cavity_ellipse_sd(x, y, z)
        return np.maximum(ellipse_sd, self.spine_notch(x, y, z))

    def wall_thickness(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Radial thickness of ribs + muscle (pectorals, lateral muscles, shoulder girdle) outside the cavity."""
        p = self.p
        yy = y - np.float32(self.yc)
        r = np.sqrt(x * x + yy * yy) + np.float32(1e-3)
        c2 = (x / r) ** 2                      # 1 laterally, 0 on the midline
        ant2 = np.clip(-yy / r, 0.0, 1.0) ** 2
        pec = 4.0 * c2 * ant2                  # pectoral muscles: zero over the sternum, peak at 45°
        base = np.float32(p.rib_layer) + np.float32(p.muscle_lat) * c2 + np.float32(p.muscle_ant) * pec
        sh = _smoothstep((z - np.float32(p.z_apex - 70 * p.scale)) / np.float32(70 * p.scale))
        return base + np.float32(p.shoulder) * sh * c2

    def fat_thickness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = self.p
        yy = y - np.float32(self.yc)
        r = np.sqrt(x * x + yy * yy) + np.float32(1e-3)
        c2 = (x / r) ** 2
        ant = np.clip(-yy / r, 0.0, 1.0)
        post = np.clip(yy / r, 0.0, 1.0)
        return (np.float32(p.fat_lat) * c2 + np.float32(p.fat_ant) * ant * (1 - c2)
                + np.float32(p.fat_post) * post * (1 - c2) + np.float32(1.5))

    def breast_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray | None:
        p = self.p
        if p.breast <= 0:
            return None
        out = None
        for side in (-1.0, 1.0):
            c = self.breast_centre(side)
            sd = _ellipsoid_sd(x, y, z, c, np.array([85.0, 24.0, 62.0]) * p.breast * p.scale)
            out = sd if out is None else np.minimum(out, sd)
        return out

    def breast_centre(self, side: float) -> np.ndarray:
        p = self.p
        z = p.z_dome_r + 55 * p.scale
        front = -(p.cav_ba + p.rib_layer + p.muscle_ant + 0.6 * p.fat_ant)
        return np.array([side * 0.55 * p.cav_a, front, z])

    def body_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, ellipse_sd: np.ndarray | None = None) -> np.ndarray:
        """Signed distance to the skin surface; the back is flattened where the patient lies."""
        if ellipse_sd is None:
            ellipse_sd = self.cavity_ellipse_sd(x, y, z)
        sd = ellipse_sd - self.wall_thickness(x, y, z) - self.fat_thickness(x, y) - self.back_extra(x, y)
        return np.maximum(sd, y - np.float32(self.y_back))

    def back_extra(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Extra posterior soft tissue so the back reaches the table and is flattened by it."""
        yy = y - np.float32(self.yc)
        r = np.sqrt(x * x + yy * yy) + np.float32(1e-3)
        post = np.clip(yy / r, 0.0, 1.0)
        return np.float32(self.p.back_muscle + 25.0) * post ** 2

    # ---- lungs ----------------------------------------------------------------------------
    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm (top of the abdomen) under (x, y): two domes."""
        p = self.p
        ya = (y - np.float32(self.dome_y))
        post = np.clip(ya / np.float32(p.cav_bp), 0.0, None) ** 2
        ant = np.clip(-ya / np.float32(p.cav_ba), 0.0, None) ** 2
        out = None
        for sign, zd in ((-1.0, p.z_dome_r), (1.0, p.z_dome_l)):
            lat = ((x - np.float32(sign * self.dome_x)) / np.float32(0.58 * p.cav_a)) ** 2
            zz = np.float32(zd) - np.float32(p.recess_lat) * lat - np.float32(p.recess_post) * post \
                - np.float32(0.35 * p.recess_lat) * ant
            out = zz if out is None else np.maximum(out, zz)
        return out

    def lowest_lung_z(self) -> float:
        x = np.linspace(-self.p.cav_a, self.p.cav_a, 41, dtype=np.float32)
        y = np.linspace(-self.p.cav_ba, self.p.cav_bp, 41, dtype=np.float32)
        X, Y = np.meshgrid(x, y, indexing="ij")
        zd = self.diaphragm_z(X, Y)
        inside = (X / self.p.cav_a) ** 2 + (Y / np.where(Y < 0, self.p.cav_ba, self.p.cav_bp)) ** 2 < 0.9
        return float(zd[inside].min())

    def cap_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance of the apical domes (only constrains z > z_cap)."""
        dz = np.clip(z - np.float32(self.z_cap), 0.0, None) / np.float32(self.p.z_apex - self.z_cap)
        dx = (np.abs(x) - np.float32(self.cap_x)) / np.float32(self.cap_rx)
        dy = (y - np.float32(self.cap_y)) / np.float32(self.cap_ry)
        q = np.sqrt(dx * dx + dy * dy + dz * dz)
        sd = (q - 1.0) * np.float32(min(self.cap_rx, self.cap_ry, self.p.z_apex - self.z_cap))
        return np.where(z > np.float32(self.z_cap), sd, np.float32(-1e3))

    def septum_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Central mediastinal column between the lungs (widest around the trachea)."""
        p = self.p
        nu = (y - np.float32(self.yc)) / np.float32(p.cav_bp)
        w = np.float32(4.0 * p.scale) + np.float32(p.med_width) * np.exp(-((nu - 0.12) / 0.42) ** 2)
        # Slightly wider above the carina (great vessels) and towards the thoracic inlet.
        w = w * (1.0 + 0.25 * _smoothstep(z / np.float32(60 * p.scale)))
        return np.abs(x - np.float32(3.0 * p.scale)) - w

    def heart_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Ventricles (a rotated ellipsoid pointing anterior-left-down) smoothly joined to both atria."""
        k = np.float32(10.0 * self.p.scale)
        sd = _ellipsoid_sd(x, y, z, self.heart_centre, self.heart_axes, self.heart_rot)
        sd = _smin(sd, _ellipsoid_sd(x, y, z, *self.right_atrium), k)
        return _smin(sd, _ellipsoid_sd(x, y, z, *self.left_atrium_box), k)

    def vb_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Vertebral body column (elliptic cylinder)."""
        dy = y - self.y_vb(z)
        q = np.sqrt((x / np.float32(self.p.vb_a)) ** 2 + (dy / np.float32(self.p.vb_b)) ** 2)
        r = np.sqrt(x * x + dy * dy)
        return r * (1.0 - 1.0 / np.maximum(q, np.float32(1e-6)))

    def mediastinum_sd(self, x, y, z, tube_sd, heart_sd=None, vb_sd=None) -> np.ndarray:
        """Signed distance of everything between the lungs (the lungs' medial boundary).

        ``tube_sd`` is the signed distance to the mediastinal/hilar tubes (:attr:`med_tubes`,
        :attr:`hilar`), computed by the caller (on a grid or at points).
        """
        p = self.p
        if heart_sd is None:
            heart_sd = self.heart_sd(x, y, z)
        if vb_sd is None:
            vb_sd = self.vb_sd(x, y, z)
        k = np.float32(13.0 * p.scale)
        m = _smin(self.septum_sd(x, y, z), heart_sd - np.float32(p.pericard_fat + 2.0), k)
        m = _smin(m, tube_sd - np.float32(4.0 * p.scale), k)
        return np.minimum(m, vb_sd - np.float32(4.0 * p.scale))

    def lung_sd(self, x, y, z, *, cav_sd, med_sd) -> np.ndarray:
        """Signed distance of the lung region (both lungs, tumours not yet considered)."""
        sd = np.maximum(cav_sd + np.float32(1.0), self.diaphragm_z(x, y) + np.float32(4.0 * self.p.scale) - z)
        sd = np.maximum(sd, -med_sd)
        if np.any(z > self.z_cap):
            sd = np.maximum(sd, self.cap_sd(x, y, z))
        return sd

    def lung_sd_points(self, pts: np.ndarray, *, with_hilar: bool = True) -> np.ndarray:
        pts = np.asarray(pts, np.float32)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        tubes = Tubes.concat([self.med_tubes, self.hilar]) if with_hilar else self.med_tubes
        tsd = tubes.sd_points(pts).astype(np.float32)
        med = self.mediastinum_sd(x, y, z, tsd)
        return self.lung_sd(x, y, z, cav_sd=self.cavity_sd(x, y, z), med_sd=med)

    def components_points(self, pts: np.ndarray) -> dict[str, np.ndarray]:
        """Distances (mm, positive inside the lung side) to the chest wall, mediastinum and diaphragm."""
        pts = np.asarray(pts, np.float32)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        tubes = Tubes.concat([self.med_tubes, self.hilar])
        med = self.mediastinum_sd(x, y, z, tubes.sd_points(pts).astype(np.float32))
        wall = -(self.cavity_sd(x, y, z) + 1.0)
        wall = np.minimum(wall, -self.cap_sd(x, y, z))
        diaph = z - self.diaphragm_z(x, y) - 4.0 * self.p.scale
        return {"wall": wall, "mediastinum": med, "diaphragm": diaph}

    # ---- tubes ----------------------------------------------------------------------------
    def _build_tubes(self) -> None:
        p = self.p
        s = p.scale
        z_hi = p.z_apex + 200.0
        z_lo = p.z_dome_r - 400.0
        yvb = lambda z: float(self.y_vb(np.float32(z)))  # noqa: E731
        # Oesophagus: anterior to the spine, drifting left towards the hiatus.
        r_oe = 8.0 * s
        oe_y = lambda z: yvb(z) - p.vb_b - r_oe - 1.5 * s  # noqa: E731
        zs = [z_hi, p.z_apex, 0.0, 0.5 * p.z_dome_l, p.z_dome_l - 5 * s]
        xs = [1.0 * s, 2.0 * s, 8.0 * s, 16.0 * s, 30.0 * s]
        oes = np.array([[xx, oe_y(zz), zz] for xx, zz in zip(xs, zs)])
        oes[-1, 1] -= 25 * s
        self.oesophagus = Tubes.from_polyline(oes, r_oe, T_OESOPH)
        # Trachea, carina at z = 0, main bronchi.
        tr_y = lambda z: oe_y(z) - r_oe - p.trachea_r - 1.5 * s  # noqa: E731
        self.carina = np.array([0.0, tr_y(0.0), 0.0])
        trachea = np.array([[0.0, tr_y(z_hi), z_hi], [0.0, tr_y(p.z_apex), p.z_apex],
                            [-1.0 * s, tr_y(40 * s), 40 * s], [0.0, tr_y(8 * s), 8.0 * s], self.carina])
        a_r, a_l = np.deg2rad(25.0), np.deg2rad(42.0)
        self.rmb_end = self.carina + 22 * s * np.array([-np.sin(a_r), 0.08, -np.cos(a_r)])
        self.lmb_end = self.carina + 46 * s * np.array([np.sin(a_l), 0.12, -np.cos(a_l)])
        r_rm, r_lm = 0.75 * p.trachea_r, 0.65 * p.trachea_r
        airway = [Tubes.from_polyline(trachea, p.trachea_r, T_AIRWALL),
                  Tubes.from_polyline(np.array([self.carina, self.rmb_end]), [r_rm, r_rm * 0.95], T_AIRWALL),
                  Tubes.from_polyline(np.array([self.carina, self.lmb_end]), [r_lm, r_lm * 0.95], T_AIRWALL)]
        self.central_airways = Tubes.concat(airway)  # radii are the lumen radii
        # Aorta: ascending from the heart, arch over the left main bronchus, descending beside the spine.
        asc0 = np.array([2.0 * s, -0.28 * p.cav_ba, self.heart_top - 35 * s])
        asc1 = np.array([-4.0 * s, -0.22 * p.cav_ba, p.arch_z])
        desc_x = 24.0 * s
        z_arch_back = p.arch_z
        desc_y = lambda z: yvb(z) - p.vb_b - p.aorta_desc_r + 6.0 * s  # noqa: E731
        d0 = np.array([desc_x, desc_y(z_arch_back), z_arch_back])
        arch = []
        for t in np.linspace(0, 1, 9):
            ang = np.pi * t
            q = asc1 + (d0 - asc1) * (1 - np.cos(ang)) / 2
            q = q + np.array([0.0, 0.0, 24.0 * s * np.sin(ang)])
            arch.append(q)
        desc = [d0]
        for z in (0.0, -60 * s, p.z_dome_l, p.z_dome_l - 60 * s, z_lo):
            frac = np.clip((d0[2] - z) / (d0[2] - p.z_dome_l + 1e-6), 0, 1)
            desc.append(np.array([desc_x * (1 - 0.75 * frac), desc_y(z) + 3 * s * frac, z]))
        aorta_pts = np.array([asc0, asc1] + arch[1:] + desc[1:])
        radii = np.concatenate([[p.aorta_r, p.aorta_r], np.linspace(p.aorta_r, p.aorta_desc_r, 8),
                                np.full(len(desc) - 1, p.aorta_desc_r)])
        vessels = [Tubes.from_polyline(aorta_pts, radii, T_BLOOD)]
        # Arch branches (brachiocephalic, left carotid, left subclavian) up to the neck.
        for frac, dx, r in ((0.25, -14.0, 6.5), (0.45, 4.0, 4.5), (0.62, 14.0, 5.0)):
            q = arch[int(round(frac * 8))]
            top = np.array([q[0] + dx * s, q[1] + 6 * s, z_hi])
            mid = np.array([q[0] + 0.6 * dx * s, q[1] + 3 * s, q[2] + 40 * s])
            vessels.append(Tubes.from_polyline(np.array([q, mid, top]), r * s, T_BLOOD))
        # Superior vena cava to the right atrium.
        svc_x, svc_y = -0.2 * p.cav_a, -0.12 * p.cav_ba
        svc = np.array([[svc_x - 10 * s, svc_y - 6 * s, z_hi], [svc_x, svc_y, p.arch_z],
                        [svc_x + 4 * s, svc_y, self.heart_top - 30 * s]])
        vessels.append(Tubes.from_polyline(svc, 9.5 * s, T_BLOOD))
        # Inferior vena cava below the heart.
        ivc = np.array([[-18 * s, yvb(p.z_dome_r) - p.vb_b - 14 * s, self.heart_centre[2] - 20 * s],
                        [-20 * s, yvb(z_lo) - p.vb_b - 14 * s, z_lo]])
        vessels.append(Tubes.from_polyline(ivc, 11 * s, T_BLOOD))
        # Pulmonary trunk → bifurcation → left/right pulmonary arteries to the hila.
        pa0 = np.array([p.heart_x * 0.6, -0.55 * p.cav_ba, self.heart_top - 20 * s])
        bif = np.array([10.0 * s, -0.08 * p.cav_ba, -20.0 * s])
        self.hilum_l = np.array([0.36 * p.cav_a, 0.05 * p.cav_bp, -12.0 * s])
        self.hilum_r = np.array([-0.32 * p.cav_a, 0.0, -26.0 * s])
        rpa_mid = np.array([-14.0 * s, self.carina[1] - r_rm - 13 * s, -24 * s])
        vessels.append(Tubes.from_polyline(np.array([pa0, bif]), 15.0 * s, T_BLOOD))
        vessels.append(Tubes.from_polyline(np.array([bif, 0.5 * (bif + self.hilum_l) + [0, 0, 10 * s],
                                                     self.hilum_l]), [12 * s, 11 * s, 9.5 * s], T_BLOOD))
        vessels.append(Tubes.from_polyline(np.array([bif, rpa_mid, self.hilum_r]), [12 * s, 11 * s, 9.5 * s], T_BLOOD))
        # Left atrium and the entry points of the four pulmonary veins.
        self.left_atrium = self.left_atrium_box[0].copy()
        self.vein_entries = {
            "right_upper": np.array([-0.27 * p.cav_a, -0.05 * p.cav_ba, -40 * s]),
            "right_lower": np.array([-0.25 * p.cav_a, 0.3 * p.cav_bp, -62 * s]),
            "left_upper": np.array([0.3 * p.cav_a, 0.0, -36 * s]),
            "left_lower": np.array([0.27 * p.cav_a, 0.3 * p.cav_bp, -58 * s]),
        }
        self.great_vessels = Tubes.concat(vessels)
        self.med_tubes = Tubes.concat([self.great_vessels, self.central_airways.inflate(2.0 * s), self.oesophagus])
        # Lymph nodes (subcarinal, paratracheal, aortopulmonary window).
        self.lymph_nodes = [
            (self.carina + np.array([2 * s, 4 * s, -22 * s]), np.array([9.0, 6.0, 7.0]) * s),
            (self.carina + np.array([-15 * s, -6 * s, 25 * s]), np.array([5.0, 5.0, 7.0]) * s),
            (np.array([16 * s, self.carina[1] - 14 * s, 6 * s]), np.array([5.0, 4.0, 5.0]) * s),
        ]

    def _build_abdomen(self) -> None:
        p = self.p
        s = p.scale
        self.liver = (np.array([-0.22 * p.cav_a, 0.05 * p.cav_bp, p.z_dome_r - 85 * s]),
                      np.array([0.82 * p.cav_a, 0.95 * p.cav_bp, 105 * s]))
        self.stomach = (np.array([0.42 * p.cav_a, -0.25 * p.cav_ba, p.z_dome_l - 50 * s]),
                        np.array([0.34 * p.cav_a, 0.42 * p.cav_ba, 55 * s]))
        self.spleen = (np.array([0.68 * p.cav_a, 0.55 * p.cav_bp, p.z_dome_l - 52 * s]),
                       np.array([0.2 * p.cav_a, 0.36 * p.cav_bp, 52 * s]))
        ykid = float(self.y_vb(np.float32(p.z_dome_r - 140 * s)))
        self.kidneys = [(np.array([sgn * 0.36 * p.cav_a, ykid + 4 * s, p.z_dome_r - (145 - 12 * (sgn > 0)) * s]),
                         np.array([28.0, 32.0, 55.0]) * s) for sgn in (-1.0, 1.0)]

    # ---- extents --------------------------------------------------------------------------
    def body_halfwidth(self) -> float:
        p = self.p
        return p.cav_a + p.rib_layer + p.muscle_lat + p.shoulder + p.fat_lat + 2.0

    def body_front(self) -> float:
        p = self.p
        return -(p.cav_ba + p.rib_layer + p.muscle_ant + p.fat_ant + 2.0 + 45.0 * p.breast * p.scale)

    def lung_box(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        return (np.array([-p.cav_a, -p.cav_ba, self.lowest_lung_z()]),
                np.array([p.cav_a, p.cav_bp, p.z_apex]))
