"""The phantom renderer: samples a :class:`~rrcunet.synthetic.anatomy.ChestModel` and its
tumours on the acquisition's voxel grid, then applies the scanner model.

Order of work (per slab of slices, so memory stays bounded; the result does not depend on the
slab size):

1. hard-edged tissue map (body wall, fat, muscle, rib cage, lungs, mediastinum, heart, great
   vessels, airways, spine, abdomen, table) → HU look-up;
2. lung parenchyma: gravity gradient and a correlated texture field;
3. partial-volume overlays: pulmonary vessel and airway trees (thin vessels keep their
   integrated contrast: a vessel thinner than a voxel is drawn one voxel wide with
   proportionally lower contrast), fissures, tumours;
4. scanner: in-plane Gaussian PSF, correlated Gaussian noise (seeded per slice), then the
   slice-profile filter along z over the whole volume (this also correlates the noise in z; the
   noise amplitude is pre-compensated so the final standard deviation is the sampled one), the
   reconstruction circle, rounding to int16.

Labels come from the same signed distances: lung = lung region (tumours excluded), tumour = 2
(also where a tumour extends outside the lung), and the lung-region mask is lung ∪ tumours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from rrcunet.synthetic.anatomy import (
    T_ABDOMEN, T_AIR, T_AIRWALL, T_BLOOD, T_CANAL, T_CARTILAGE, T_CONTRAST_BLOOD, T_CORTEX, T_DISC, T_FAT, T_GLAND,
    T_KIDNEY, T_LIVER, T_LUNG, T_LYMPH, T_MARROW, T_MEDFAT, T_MUSCLE, T_MYOCARD, T_OESOPH, T_SKIN, T_SPLEEN,
    T_STOMACH, T_TABLE_FOAM, T_TABLE_SHELL, ChestModel, TissueHU, Tubes, _ellipsoid_sd,
)
from rrcunet.synthetic.raster import F32, GridFrame, SmoothField, raster_segments
from rrcunet.synthetic.sampling import SLICE_PROFILE_FWHM_VOXELS, STREAM_BODYTEX, STREAM_NOISE, Acquisition, case_rng
from rrcunet.synthetic.trees import fissure_planes
from rrcunet.synthetic.tumours import TumourShape

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass
class TumourStats:
    """What the rendered masks say about one tumour (accumulated over slabs)."""

    n_voxels: int = 0
    n_in_lung: int = 0
    sum_ijk: np.ndarray = field(default_factory=lambda: np.zeros(3))
    lo: np.ndarray = field(default_factory=lambda: np.full(3, np.iinfo(np.int64).max))
    hi: np.ndarray = field(default_factory=lambda: np.full(3, -1))
    touches_wall: bool = False
    touches_mediastinum: bool = False


@dataclass
class Rendered:
    image: np.ndarray    # int16 HU
    label: np.ndarray    # uint8 0/1/2
    lungs: np.ndarray    # uint8 0/1
    tissues: np.ndarray  # uint8 tissue ids (anatomy.TISSUE_NAMES) of the hard-edged map, before overlays
    stats: list[TumourStats]


def _kernel_gain(sigma: float) -> float:
    """sqrt(sum of squared weights) of scipy's 1-D Gaussian filter: white-noise std reduction."""
    if sigma <= 0:
        return 1.0
    n = int(8 * sigma) * 2 + 21
    delta = np.zeros(n)
    delta[n // 2] = 1.0
    k = ndimage.gaussian_filter1d(delta, sigma, mode="constant")
    return float(np.sqrt(np.sum(k * k)))


def _box(frame: GridFrame, lo: tuple[int, int, int], hi: tuple[int, int, int], pmin, pmax):
    """Intersection of a physical box with the slab ``[lo, hi)``: (sub_lo, sub_hi, slices) or None."""
    blo, bhi = frame.index_box(np.asarray(pmin, np.float64)[None], np.asarray(pmax, np.float64)[None])
    blo = np.maximum(blo[0], lo)
    bhi = np.minimum(bhi[0], hi)
    if np.any(bhi <= blo):
        return None
    sl = tuple(slice(int(blo[a] - lo[a]), int(bhi[a] - lo[a])) for a in range(3))
    return tuple(int(v) for v in blo), tuple(int(v) for v in bhi), sl


def _full(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A new writable float32 array of ``shape`` holding ``a`` broadcast."""
    out = np.empty(shape, np.float32)
    out[...] = a
    return out


class Renderer:
    """Renders one phantom; see the module docstring. Construct, then call :meth:`run`."""

    def __init__(self, model: ChestModel, tumours: list[TumourShape], acq: Acquisition, hu: TissueHU, *,
                 seed: int, texture_rng: np.random.Generator, slab_slices: int, table: bool):
        self.m = model
        self.tumours = tumours
        self.acq = acq
        self.hu = hu
        self.seed = seed
        self.slab = slab_slices
        self.table = table
        g = acq.geometry
        d = np.asarray(g.direction, np.float64).reshape(3, 3)
        self.frame = GridFrame(g.shape, np.asarray(g.origin) - np.asarray(acq.offset), d @ np.diag(g.spacing))
        self.sxy = float(min(g.spacing[0], g.spacing[1]))
        self.sz = float(g.spacing[2])
        self.edge = max(self.sxy, 0.5)  # soft-edge width of partial-volume overlays (mm)
        self.lut = hu.lut()
        if acq.contrast:
            self.lut[T_BLOOD] = hu.blood
        self.lut[T_CONTRAST_BLOOD] = hu.blood
        s = model.p.scale
        self.s = s
        lo, hi = model.lung_box()
        cell = max(1.5, 0.6 * self.sxy)
        self.lung_tex = SmoothField(texture_rng, lo, hi, cell=cell, corr=max(2.2, 0.9 * self.sxy))
        self.lung_tex_coarse = SmoothField(texture_rng, lo, hi, cell=5.0, corr=16.0)
        self.tex_amp = np.zeros(len(self.lut), np.float32)
        for tissue, a in ((T_FAT, 12.0), (T_MEDFAT, 12.0), (T_MUSCLE, 10.0), (T_SKIN, 6.0), (T_LIVER, 5.0),
                          (T_SPLEEN, 5.0), (T_ABDOMEN, 25.0), (T_MARROW, 35.0), (T_GLAND, 25.0), (T_MYOCARD, 4.0),
                          (T_STOMACH, 10.0), (T_LYMPH, 5.0), (T_KIDNEY, 6.0)):
            self.tex_amp[tissue] = a
        self.tumour_tex = []
        self.tumour_border = []
        for t in tumours:
            e = t.extent
            self.tumour_tex.append(SmoothField(texture_rng, t.centre - e, t.centre + e, cell=max(1.0, 0.5 * self.sxy),
                                               corr=max(2.0, 0.8 * self.sxy)))
            corr = max(2.5, 0.22 * t.radius)
            self.tumour_border.append(SmoothField(texture_rng, t.centre - e, t.centre + e, cell=max(1.0, corr / 2.5),
                                                  corr=corr))
        self.stats = [TumourStats() for _ in tumours]
        self._prepare_trees()
        self._crop = self._crop_box()
        # Lateral band holding everything the mediastinum is made of (+ the smooth-union width).
        tl, th = Tubes.concat([model.med_tubes, model.hilar]).bounds()
        hx = 1.45 * model.heart_axes.max() + model.p.pericard_fat + 6
        w = (4.0 * self.s + model.p.med_width) * 1.25 + 3.0 * self.s + 20.0 * self.s
        self._med_x = (min(tl[0], model.heart_centre[0] - hx, -w) - 20.0 * self.s,
                       max(th[0], model.heart_centre[0] + hx, w) + 20.0 * self.s)
        # Lung AP extent for the gravity gradient.
        self.lung_y0 = -model.p.cav_ba
        self.lung_y1 = model.p.cav_bp

    # ------------------------------------------------------------------ setup
    def _crop_box(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        m = self.m
        n = np.asarray(self.frame.shape)
        corners = np.array([[i, j, k] for i in (0, n[0] - 1) for j in (0, n[1] - 1) for k in (0, n[2] - 1)], float)
        pts = self.frame.origin + corners @ self.frame.matrix.T
        zlo, zhi = pts[:, 2].min() - 5, pts[:, 2].max() + 5
        w = max(m.body_halfwidth() + 25.0, 260.0 if self.table else 0.0)
        y1 = m.y_back + (75.0 if self.table else 5.0)
        blo, bhi = self.frame.index_box(np.array([[-w, m.body_front() - 10.0, zlo]]), np.array([[w, y1, zhi]]))
        blo, bhi = blo[0], bhi[0]
        blo[2], bhi[2] = 0, n[2]
        return tuple(int(v) for v in blo), tuple(int(v) for v in bhi)

    def _prepare_trees(self) -> None:
        m = self.m
        fr = self.frame

        def pv(t: Tubes) -> tuple[np.ndarray, ...]:
            """Partial-volume radii and weights: thin capsules drawn ≥ 1 voxel wide, dimmer."""
            if len(t) == 0:
                return t.p0, t.p1, t.r0, t.r1, np.zeros(0), np.zeros(0)
            u = t.p1 - t.p0
            u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-9)
            w = fr.perpendicular_spacing(u)
            r0e = np.maximum(t.r0, 0.5 * w)
            r1e = np.maximum(t.r1, 0.5 * w)
            weight = np.minimum(1.0, ((t.r0 + t.r1) / (r0e + r1e)) ** 2)
            return t.p0, t.p1, r0e, r1e, weight, w

        self.vessels = pv(m.trees)
        self.aw_wall = pv(m.airway_wall)
        self.aw_lumen = pv(m.airway_lumen)

    # ------------------------------------------------------------------ slab
    def _slab(self, k0: int, k1: int):
        """Render slices ``[k0, k1)`` over the body crop: (lo, hi, image, label, lungs, tissues)."""
        m, p, s = self.m, self.m.p, self.s
        lo = (self._crop[0][0], self._crop[0][1], k0)
        hi = (self._crop[1][0], self._crop[1][1], k1)
        shape = tuple(hi[a] - lo[a] for a in range(3))
        X, Y, Z = self.frame.coords(lo, hi)
        zmin = float(Z.min())
        tid = np.zeros(shape, np.uint8)
        k0, k1 = lo[2], hi[2]
        ell = m.cavity_ellipse_sd(X, Y, Z)
        cav = _full(m.cavity_sd(X, Y, Z, ellipse_sd=ell), shape)
        musc_t = m.wall_thickness(X, Y, Z)
        wall_t = musc_t + m.back_extra(X, Y)
        fat_t = m.fat_thickness(X, Y)
        body = ell - wall_t - fat_t
        body = np.maximum(body, Y - F32(m.y_back))
        breast = None
        if p.breast > 0:
            for side in (-1.0, 1.0):
                c = m.breast_centre(side)
                ax = np.array([85.0, 24.0, 62.0]) * p.breast * s
                b = _box(self.frame, lo, hi, c - ax - 25, c + ax + 25)
                if b is None:
                    continue
                bx, by, bz = self.frame.coords(b[0], b[1])
                sd = _ellipsoid_sd(bx, by, bz, c, ax)
                # Smooth union with the chest (polynomial smooth minimum, 35 mm blend).
                k = F32(35.0)
                bo = body[b[2]]
                h = np.clip(0.5 + 0.5 * (sd - bo) / k, 0.0, 1.0)
                body[b[2]] = (sd * (1 - h) + bo * h) - k * h * (1 - h)
                gland = _ellipsoid_sd(bx, by, bz, c + np.array([0, -6.0 * s, 0]), ax * np.array([0.55, 0.45, 0.55]))
                breast = (b[2], gland)
        tid[body < 0] = T_SKIN
        tid[body < -1.6] = T_FAT
        muscle = np.maximum(ell - wall_t, Y - F32(m.y_back) + fat_t)
        tid[muscle < 0] = T_MUSCLE
        # Fat planes: between the rib layer and the chest-wall muscles, and between muscle layers.
        # (Only in front and at the sides: behind, the paraspinal muscles fill the space.)
        musc = musc_t - F32(p.rib_layer)
        front = Y < F32(0.35 * p.cav_bp)
        plane = (np.abs(ell - F32(p.rib_layer + 1.2)) < F32(0.9)) & (muscle < -F32(1.0)) & front
        plane |= (np.abs(ell - (F32(p.rib_layer) + 0.5 * musc)) < F32(1.3)) & (musc > F32(12.0)) & (muscle < 0) \
            & (Y < F32(-0.2 * p.cav_ba))
        tid[plane] = T_FAT
        if breast is not None:
            sl, gland = breast
            sub = tid[sl]
            sub[(gland < 0) & (sub == T_FAT)] = T_GLAND
        inside = cav < 0
        tid[inside] = T_MEDFAT
        zd = m.diaphragm_z(X, Y)
        abd = None
        if zmin < p.z_dome_r + 10:
            band = inside & (Z < zd + F32(4.0 * s))
            tid[band] = T_MUSCLE
            abd = inside & (Z < zd)
            tid[abd] = T_ABDOMEN
            self._abdomen(tid, abd, lo, hi)
        # Mediastinal tubes (signed distances, exact within a few mm).
        big = F32(1e3)
        sd_vessels = np.full(shape, big, np.float32)
        sd_air = np.full(shape, big, np.float32)
        sd_oes = np.full(shape, big, np.float32)
        sd_hilar = np.full(shape, big, np.float32)
        for tubes, out in ((m.great_vessels, sd_vessels), (m.central_airways, sd_air), (m.oesophagus, sd_oes),
                           (m.hilar, sd_hilar)):
            raster_segments(self.frame, lo, out, tubes.p0, tubes.p1, tubes.r0, tubes.r1, mode="sd", margin=8.0)
        wall_air = F32(max(1.5, 0.18 * p.trachea_r))
        tube_sd = np.minimum(np.minimum(sd_vessels, sd_oes), np.minimum(sd_air - wall_air, sd_hilar))
        heart = np.full(shape, big, np.float32)
        hc, ha = m.heart_centre, 1.45 * m.heart_axes.max() + p.pericard_fat + 6
        hb = _box(self.frame, lo, hi, hc - ha, hc + ha)
        if hb is not None:
            hx, hy, hz = self.frame.coords(hb[0], hb[1])
            heart[hb[2]] = m.heart_sd(hx, hy, hz)
        vb = np.full(shape, big, np.float32)
        vbox = _box(self.frame, lo, hi, [-p.vb_a - 60 * s, -40.0 * s, -1e4], [p.vb_a + 60 * s, p.cav_bp + 90 * s, 1e4])
        if vbox is not None:
            vx, vy, vz = self.frame.coords(vbox[0], vbox[1])
            vb[vbox[2]] = _full(m.vb_sd(vx, vy, vz), tuple(b - a for a, b in zip(vbox[0], vbox[1])))
        # The mediastinum only matters near the midline: evaluate it on that band of columns.
        med = np.full(shape, big, np.float32)
        xb = self._med_x
        xi = X[:, 0, 0] if X.shape[0] == shape[0] else np.full(shape[0], float(X.flat[0]))
        cols = np.nonzero((xi >= xb[0]) & (xi <= xb[1]))[0]
        if cols.size:
            c = slice(int(cols[0]), int(cols[-1]) + 1)
            Xc = X[c] if X.shape[0] == shape[0] else X
            Yc = Y[c] if Y.shape[0] == shape[0] else Y
            Zc = Z[c] if Z.shape[0] == shape[0] else Z
            med[c] = m.mediastinum_sd(Xc, Yc, Zc, tube_sd[c], heart[c], vb[c])
        lung_sd = m.lung_sd(X, Y, Z, cav_sd=cav, med_sd=med)
        lung = lung_sd < 0
        tid[lung] = T_LUNG
        # Heart (pericardial fat is the default mediastinal fat around it).
        above = Z > zd - F32(6.0 * s)
        myo = (heart < 0) & above
        tid[myo] = T_MYOCARD
        tid[(heart < -F32(9.0 * s)) & above] = T_CONTRAST_BLOOD if self.acq.contrast else T_MYOCARD
        tid[sd_vessels < 0] = T_BLOOD
        tid[sd_oes < 0] = T_OESOPH
        for c, ax in m.lymph_nodes:
            b = _box(self.frame, lo, hi, c - ax - 1, c + ax + 1)
            if b is not None:
                bx, by, bz = self.frame.coords(b[0], b[1])
                sub = tid[b[2]]
                sub[(_ellipsoid_sd(bx, by, bz, c, ax) < 0) & (sub == T_MEDFAT)] = T_LYMPH
        tid[sd_air < wall_air] = T_AIRWALL
        tid[sd_air < 0] = T_AIR
        # Bones.
        self._ribs(tid, _full(ell, shape), cav, X, Y, Z)
        self._sternum(tid, cav, lo, hi)
        if vbox is not None:
            self._spine(tid, vbox, lo)
        self._shoulder_girdle(tid, cav, lo, hi)
        if self.table:
            self._table(tid, X, Y, body)
        hard = np.minimum(np.minimum(heart, sd_vessels), np.minimum(sd_air - wall_air, vb))
        hard = np.minimum(hard, sd_oes)
        # HU look-up, soft-tissue/fat/marrow texture, and parenchyma.
        img = self.lut[tid]
        self._body_texture(img, tid, k0, k1)
        idx = np.nonzero(lung)
        if idx[0].size:
            gx = _full(X, shape)[idx]
            gy = _full(Y, shape)[idx]
            gz = _full(Z, shape)[idx]
            t = np.clip((gy - F32(self.lung_y0)) / F32(self.lung_y1 - self.lung_y0), 0.0, 1.0)
            add = F32(self.hu.lung_gradient) * t * t + F32(self.hu.lung_texture) * self.lung_tex.sample(gx, gy, gz)
            add += F32(self.hu.lung_heterogeneity) * self.lung_tex_coarse.sample(gx, gy, gz)
            add += self._fissures(gx, gy, gz) * (F32(self.hu.airway_wall) - (img[idx] + add))
            img[idx] += add
        # Vessel and airway trees (partial volume).
        occ = np.zeros(shape, np.float32)
        pv = self.vessels
        raster_segments(self.frame, lo, occ, pv[0], pv[1], pv[2], pv[3], mode="occ", weight=pv[4], width=pv[5])
        img += occ * (F32(self.hu.vessel) - img)
        for tubes, val in ((self.aw_wall, self.hu.airway_wall), (self.aw_lumen, self.hu.air)):
            occ.fill(0)
            raster_segments(self.frame, lo, occ, tubes[0], tubes[1], tubes[2], tubes[3], mode="occ", weight=tubes[4],
                            width=tubes[5])
            img += occ * (F32(val) - img)
        # Tumours.
        tumour = np.zeros(shape, bool)
        ctx = {"cav": cav, "zd": zd, "hard": hard, "med": med, "lung": lung}
        for i, t in enumerate(self.tumours):
            self._tumour(i, t, img, tumour, ctx, lo, hi)
        label = lung.astype(np.uint8)
        label[tumour] = 2
        lungs = (lung | tumour).astype(np.uint8)
        return lo, hi, img, label, lungs, tid

    # ------------------------------------------------------------------ parts
    def _abdomen(self, tid: np.ndarray, abd: np.ndarray, lo, hi) -> None:
        m, s = self.m, self.s
        organs = [(m.liver, T_LIVER), (m.spleen, T_SPLEEN)] + [(k, T_KIDNEY) for k in m.kidneys]
        for (c, ax), tissue in organs:
            b = _box(self.frame, lo, hi, c - ax, c + ax)
            if b is None:
                continue
            x, y, z = self.frame.coords(b[0], b[1])
            sub = tid[b[2]]
            sub[(_ellipsoid_sd(x, y, z, c, ax) < 0) & abd[b[2]]] = tissue
        c, ax = m.stomach
        b = _box(self.frame, lo, hi, c - ax, c + ax)
        if b is not None:
            x, y, z = self.frame.coords(b[0], b[1])
            sd = _ellipsoid_sd(x, y, z, c, ax)
            sub = tid[b[2]]
            a = abd[b[2]]
            sub[(sd < 0) & a] = T_MUSCLE
            inner = (sd < -F32(3.5 * s)) & a
            sub[inner] = T_STOMACH
            if m.p.gas_bubble > 2:
                zt = float(c[2] + ax[2]) - m.p.gas_bubble - 3.5 * s
                sub[inner & np.broadcast_to(z > F32(zt), inner.shape)] = T_AIR

    def _ribs(self, tid, ell, cav, X, Y, Z) -> None:
        """Twelve pairs of ribs in the shell just outside the pleura, descending anteriorly.

        Rib n leaves the spine at ``z_post(n)`` and drops by ``D_n`` towards its anterior end
        (upper ribs drop less), so an axial slice cuts each side's ribs into several short ovals,
        as in real CT. The bony part ends at the costochondral junction; costal cartilage
        continues to the sternum for ribs 1–10.
        """
        m, p, s = self.m, self.m.p, self.s
        hr, hz = 3.4 * s, 6.0 * s
        gap = 1.0
        # The shell follows the rib cage ellipse; it stops at the spine block (rib heads).
        band = (ell > 0) & (ell < F32(gap + 2 * hr + 0.6)) & (ell >= cav - F32(2.0))
        idx = np.nonzero(band)
        if idx[0].size == 0:
            return
        shape = ell.shape
        x = _full(X, shape)[idx]
        y = _full(Y, shape)[idx]
        z = _full(Z, shape)[idx]
        rho = ell[idx] - F32(gap + hr)
        phi = np.arctan2(np.abs(x), y - F32(m.yc))  # 0 posterior midline, pi anterior
        # Ribs run nearly level beside the spine and near the sternum and descend steeply along
        # the lateral wall (the "bucket handle").
        g = np.clip((phi - 0.45) / (2.4 - 0.45), 0.0, 1.0)
        g = g * g * (3 - 2 * g)
        n_all = np.arange(1, 13, dtype=np.float32)
        z_post = F32(p.z_apex - 8.0 * s) - (n_all - 1) * F32(p.rib_pitch)
        drop = F32(p.rib_drop) * (0.4 + 0.6 * np.clip((n_all - 1) / 4.0, 0.0, 1.0))
        dz_all = z[None, :] - (z_post[:, None] - drop[:, None] * g[None, :])
        best = np.argmin(np.abs(dz_all), axis=0)
        dz = np.take_along_axis(dz_all, best[None, :], axis=0)[0]
        ni = best + 1
        q = np.sqrt((rho / F32(hr)) ** 2 + (dz / F32(hz)) ** 2)
        valid = q < 1.0
        bone_end = np.array([0, 0.72, 0.76, 0.77, 0.76, 0.75, 0.74, 0.73, 0.70, 0.68, 0.64, 0.52, 0.42]) * np.pi
        cart_end = np.array([0, 0.93, 0.94, 0.94, 0.94, 0.94, 0.93, 0.92, 0.88, 0.84, 0.78, 0, 0]) * np.pi
        bone = valid & (phi <= bone_end[ni])
        cart = valid & ~bone & (phi <= cart_end[ni])
        cortex = bone & (q > 1.0 - 0.9 / min(hr, hz))
        sub = tid[idx]
        sub[cart] = T_CARTILAGE
        sub[bone] = T_MARROW
        sub[cortex] = T_CORTEX
        tid[idx] = sub

    def _sternum(self, tid, cav, lo, hi) -> None:
        m, p, s = self.m, self.m.p, self.s
        z_top = p.z_apex - 52 * s
        z_man = z_top - 48 * s
        z_bot = p.z_dome_r + 5 * s
        b = _box(self.frame, lo, hi, [-32 * s, -p.cav_ba - 40 * s, z_bot], [32 * s, -0.3 * p.cav_ba, z_top])
        if b is None:
            return
        x, y, z = self.frame.coords(b[0], b[1])
        c = cav[b[2]]
        hs = 6.0 * s
        rho = c - F32(1.0 + hs)
        ws = np.where(z > F32(z_man), F32(25 * s), F32(14 * s))
        ws = np.where(z < F32(z_bot + 25 * s), ws * (0.5 + 0.5 * np.clip((z - F32(z_bot)) / F32(25 * s), 0, 1)), ws)
        q = np.sqrt((x / ws) ** 2 + (rho / F32(hs)) ** 2)
        joint = np.abs(z - F32(z_man)) < F32(1.5 * s)
        sub = tid[b[2]]
        ant = np.broadcast_to(y < F32(-0.3 * p.cav_ba), q.shape)
        inside = (q < 1) & ant & ~joint
        sub[inside] = T_MARROW
        sub[inside & (q > 1 - 1.4 / hs)] = T_CORTEX
        sub[(q < 1) & ant & joint] = T_CARTILAGE

    def _spine(self, tid, vbox, lo) -> None:
        m, p, s = self.m, self.m.p, self.s
        blo, bhi, sl = vbox
        x, y, z = self.frame.coords(blo, bhi)
        shape = tuple(b - a for a, b in zip(blo, bhi))
        yv = m.y_vb(z)
        dy = y - yv
        phase = np.mod(z / F32(p.vert_period) + F32(p.vert_phase), 1.0)
        disc = phase < 0.2
        endplate = (phase < 0.235) | (phase > 0.975)
        vsd = m.vb_sd(x, y, z)
        sub = tid[sl]
        body = _full(vsd < 0, shape).astype(bool)
        sub[body] = T_MARROW
        sub[body & _full((vsd > -1.2) | endplate, shape).astype(bool)] = T_CORTEX
        sub[body & np.broadcast_to(disc, shape)] = T_DISC
        r_c = F32(7.5 * s)
        yc = F32(p.vb_b) + r_c + F32(1.5 * s)
        cy = dy - yc
        dc = np.sqrt(x * x + cy * cy)
        # Posterior elements (arch, spinous and transverse processes): cancellous bone in a ~1 mm cortex.
        ring_w = F32(4.5 * s)
        ring = (dc >= r_c) & (dc < r_c + ring_w) & (cy > -r_c * 0.9)
        arch_z = np.broadcast_to(~disc | (phase > 0.1), shape)
        ring_c = ring & ((dc < r_c + 1.0) | (dc > r_c + ring_w - 1.0))
        sub[np.broadcast_to(ring, shape) & arch_z] = T_MARROW
        sub[np.broadcast_to(ring_c, shape) & arch_z] = T_CORTEX
        sub[np.broadcast_to(dc < r_c, shape)] = T_CANAL
        # Spinous process: posterior, in the lower part of each vertebra.
        tsp = (cy - r_c - F32(3.0 * s)) / F32(30.0 * s)
        half = F32(3.2 * s) * (1 - 0.4 * tsp)
        spin = (tsp > 0) & (tsp < 1) & (np.abs(x) < half)
        spin_z = np.broadcast_to(phase > 0.35, shape)
        sub[np.broadcast_to(spin, shape) & spin_z] = T_MARROW
        sub[np.broadcast_to(spin & (np.abs(x) > half - 1.0), shape) & spin_z] = T_CORTEX
        # Transverse processes: lateral and slightly posterior, in the upper part of each vertebra.
        ang = np.deg2rad(22.0)
        ux, uy = np.cos(ang), np.sin(ang)
        px = np.abs(x) - F32(r_c + 3.0 * s)
        py = cy + F32(2.0 * s)
        tt = np.clip((px * ux + py * uy) / F32(30.0 * s), 0.0, 1.0)
        dd = np.sqrt((px - tt * F32(30.0 * s * ux)) ** 2 + (py - tt * F32(30.0 * s * uy)) ** 2)
        tp = (dd < F32(4.5 * s)) & (px > 0)
        tp_z = np.broadcast_to((phase > 0.45) & (phase < 0.9), shape)
        sub[np.broadcast_to(tp, shape) & tp_z] = T_MARROW
        sub[np.broadcast_to(tp & (dd > F32(4.5 * s - 1.0)), shape) & tp_z] = T_CORTEX

    def _shoulder_girdle(self, tid, cav, lo, hi) -> None:
        m, p, s = self.m, self.m.p, self.s
        z_man_top = p.z_apex - 52 * s
        # Clavicles: manubrium → acromion, curving posteriorly.
        for side in (-1.0, 1.0):
            front = -float(m.Ba(np.float32(z_man_top + 10 * s))) - 10 * s
            pts = np.array([[side * 22 * s, front - 4 * s, z_man_top + 4 * s],
                            [side * 0.45 * p.cav_a, front - 10 * s, z_man_top + 14 * s],
                            [side * 0.8 * p.cav_a, front + 8 * s, z_man_top + 26 * s],
                            [side * (0.95 * p.cav_a + 14 * s), -0.15 * p.cav_ba, z_man_top + 30 * s]])
            t = Tubes.from_polyline(pts, 6.5 * s, T_CORTEX)
            b = _box(self.frame, lo, hi, pts.min(0) - 8 * s, pts.max(0) + 8 * s)
            if b is None:
                continue
            sd = np.full(tuple(bb - aa for aa, bb in zip(b[0], b[1])), 1e3, np.float32)
            raster_segments(self.frame, b[0], sd, t.p0, t.p1, t.r0, t.r1, mode="sd", margin=2.0)
            sub = tid[b[2]]
            sub[sd < 0] = T_CORTEX
            sub[sd < -1.2] = T_MARROW
        # Scapulae: thin posterolateral plates outside the ribs, triangular (narrow at the inferior angle).
        z_top, z_inf = p.z_apex + 5 * s, p.z_apex - 150 * s
        b = _box(self.frame, lo, hi, [-p.cav_a - 80 * s, 0.0, z_inf], [p.cav_a + 80 * s, p.cav_bp + 80 * s, z_top])
        if b is None:
            return
        x, y, z = self.frame.coords(b[0], b[1])
        c = cav[b[2]]
        phi = np.arctan2(np.abs(x), y)
        frac = np.clip((z - F32(z_inf)) / F32(z_top - z_inf), 0, 1)
        phi_lo = F32(0.45) + F32(0.1) * (1 - frac)
        phi_hi = phi_lo + F32(0.08) + F32(0.55) * np.sqrt(frac)
        rho = c - F32(p.rib_layer + 9 * s)
        plate = (np.abs(rho) < F32(2.2 * s)) & (phi > phi_lo) & (phi < phi_hi)
        border = (np.abs(rho - F32(2 * s)) < F32(4.0 * s)) & (np.abs(phi - phi_hi) < F32(0.06))
        sub = tid[b[2]]
        soft = sub == T_MUSCLE
        sub[(plate | border) & soft] = T_MARROW
        sub[((plate & (np.abs(rho) > F32(2.2 * s - 0.9))) | (border & (np.abs(rho - F32(2 * s)) > F32(4.0 * s - 1.0))))
            & soft] = T_CORTEX

    def _table(self, tid, X, Y, body) -> None:
        m = self.m
        yb = F32(m.y_back + 1.0)
        ax = np.abs(X)
        inside_w = ax < F32(230.0)
        dy = Y - yb
        board = inside_w & (dy > 0) & (dy < F32(10.0))
        shell = board & ((dy < F32(1.6)) | (dy > F32(8.4)))
        yc = F32(m.y_back + 48.0) - F32(0.0009) * X * X
        cy = Y - yc
        couch_w = ax < F32(200.0)
        couch_shell = couch_w & (cy > 0) & (cy < F32(2.2))
        couch_foam = couch_w & (cy >= F32(2.2)) & (cy < F32(24.0))
        for mask, tissue in ((board, T_TABLE_FOAM), (shell, T_TABLE_SHELL), (couch_foam, T_TABLE_FOAM),
                             (couch_shell, T_TABLE_SHELL)):
            mm = np.broadcast_to(mask, tid.shape) & (body > 0)
            tid[mm] = tissue

    def _fissures(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Occupancy of the oblique fissures (thin ~0.2 mm membranes, partial volume) at lung voxels."""
        m = self.m
        planes = fissure_planes(m)
        thick = 0.2
        occ = np.zeros(x.shape, np.float32)
        for side in ("right", "left"):
            a, b, c, kx, x0 = planes[f"oblique_{side}"]
            xs = x if side == "left" else -x
            d = F32(a) * (y + F32(kx) * (xs - F32(x0))) + F32(b) * z + F32(c)
            w = max(float(np.hypot(a * self.sxy, b * self.sz)), self.sxy)
            o = np.clip(1.0 - np.abs(d) / F32(w), 0.0, 1.0) * F32(min(1.0, thick / w))
            occ += o * (xs > F32(3.0 * m.p.scale))
        return occ

    def _body_texture(self, img: np.ndarray, tid: np.ndarray, k0: int, k1: int) -> None:
        """Tissue texture (intramuscular fat, fat septa, trabecular bone, organ heterogeneity).

        A per-slice seeded Gaussian field with ~2.5 mm correlation, scaled per tissue; seeded by
        slice index so the result does not depend on the slab size.
        """
        amp = self.tex_amp[tid]
        # Generated at half resolution (when voxels are small) and upsampled: 4× fewer samples.
        f = 2 if self.sxy < 1.25 else 1
        sig = 2.5 / (self.sxy * f)
        gain = _kernel_gain(sig) ** 2
        shp = amp.shape[:2]
        small = tuple(-(-n // f) for n in shp)
        for k in range(k0, k1):
            rng = case_rng(self.seed, STREAM_BODYTEX, k)
            t = rng.standard_normal(small, dtype=np.float32)
            t = ndimage.gaussian_filter(t, sig, mode="wrap") * F32(1.0 / gain)
            if f > 1:  # 2×2 blocks; the PSF applied afterwards smooths them (amplitude ≤ noise)
                t = np.repeat(np.repeat(t, f, axis=0), f, axis=1)[:shp[0], :shp[1]]
            img[:, :, k - k0] += amp[:, :, k - k0] * t

    def _tumour(self, i: int, t: TumourShape, img, tumour, ctx, lo, hi) -> None:
        """Paint tumour ``i`` into the slab and accumulate its mask statistics.

        The tumour body is clipped to the space a lung tumour can occupy: inside the pleural
        cavity, above the diaphragm, outside the heart, great vessels, central airways,
        oesophagus and spine (so a juxta-pleural tumour flattens against the chest wall and a
        mediastinal one spreads into mediastinal fat).
        """
        m, s = self.m, self.s
        e = t.extent + self.edge
        b = _box(self.frame, lo, hi, t.centre - e, t.centre + e)
        if b is None:
            return
        blo, bhi, sl = b
        shape = tuple(bb - aa for aa, bb in zip(blo, bhi))
        x, y, z = self.frame.coords(blo, bhi)
        sd = _full(t.body_sd(x, y, z), shape)
        if t.border > 0:  # irregular, infiltrative border
            xs, ys, zs = (_full(c, shape).ravel() for c in (x, y, z))
            sd += F32(t.border * t.radius) * self.tumour_border[i].sample(xs, ys, zs).reshape(shape)
        if len(t.spicule_len):
            p0, p1, r0, r1 = t.spicule_segments()
            raster_segments(self.frame, blo, sd, p0, p1, r0, r1, mode="sd", margin=self.edge)
        cav = ctx["cav"][sl]
        zd = np.broadcast_to(ctx["zd"], ctx["cav"].shape)[sl]
        allowed = np.maximum(cav + F32(1.0), zd + F32(4.0 * s) - z)
        allowed = np.maximum(allowed, -ctx["hard"][sl])
        cap = None
        if np.any(z > m.z_cap):
            cap = _full(m.cap_sd(x, y, z), shape)
            allowed = np.maximum(allowed, cap)
        sd = np.maximum(sd, allowed)
        occ = np.clip(F32(0.5) - sd / F32(self.edge), 0.0, 1.0)
        mask = sd < 0
        sub = img[sl]
        tex = np.zeros(shape, np.float32)
        near = occ > 0
        if near.any():
            gx, gy, gz = (_full(c, shape)[near] for c in (x, y, z))
            tex[near] = self.tumour_tex[i].sample(gx, gy, gz)
        if t.kind == "ground_glass":
            val = F32(t.hu_ggo) + F32(t.texture_hu) * tex
            sub += occ * np.maximum(val - sub, 0.0)
        elif t.kind == "part_solid":
            val = F32(t.hu_ggo) + F32(t.texture_hu * 1.5) * tex
            sub += occ * np.maximum(val - sub, 0.0)
            core = np.maximum(t.body_sd(x, y, z, scale=t.core_scale, offset=t.core_offset), allowed)
            oc = np.clip(F32(0.5) - core / F32(self.edge), 0.0, 1.0)
            sub += oc * (F32(t.hu_solid) + F32(t.texture_hu) * tex - sub)
        else:
            val = F32(t.hu_solid) + F32(t.texture_hu) * tex
            if t.necrosis > 0:
                inner = t.body_sd(x, y, z, scale=t.necrosis)
                wgt = np.clip(F32(0.5) - inner / F32(max(3.0, self.edge)), 0.0, 1.0)
                val = val + wgt * F32(t.hu_necrosis - t.hu_solid)
            sub += occ * (val - sub)
            if t.cavity_r > 0:
                c = t.centre + t.cavity_offset
                dc = np.sqrt((x - F32(c[0])) ** 2 + (y - F32(c[1])) ** 2 + (z - F32(c[2])) ** 2) - F32(t.cavity_r)
                oc = np.clip(F32(0.5) - dc / F32(self.edge), 0.0, 1.0) * occ
                sub += oc * (F32(self.hu.air) - sub)
        tumour[sl] |= mask
        st = self.stats[i]
        n = int(mask.sum())
        if n == 0:
            return
        ii = np.nonzero(mask)
        st.n_voxels += n
        st.n_in_lung += int(np.count_nonzero(ctx["lung"][sl][mask]))
        st.sum_ijk += np.array([float(np.sum(ii[a] + blo[a])) for a in range(3)])
        st.lo = np.minimum(st.lo, [int(ii[a].min() + blo[a]) for a in range(3)])
        st.hi = np.maximum(st.hi, [int(ii[a].max() + blo[a]) for a in range(3)])
        # Contact with the pleura (costal, apical, diaphragmatic) or the mediastinum: a tumour voxel
        # within about one voxel of that boundary.
        tol_xy = F32(self.sxy + 0.5)
        tol_z = F32(self.sz + 0.5)
        touches = bool(np.any(-(cav[mask] + F32(1.0)) <= tol_xy))
        diaph_gap = np.broadcast_to(z, shape)[mask] - (zd[mask] + F32(4.0 * s))
        touches = touches or bool(np.any(diaph_gap <= tol_z))
        if cap is not None:
            touches = touches or bool(np.any(-cap[mask] <= tol_xy))
        st.touches_wall = st.touches_wall or touches
        st.touches_mediastinum = st.touches_mediastinum or bool(np.any(ctx["med"][sl][mask] <= tol_xy))

    # ------------------------------------------------------------------ run
    def run(self) -> Rendered:
        g = self.acq.geometry
        nx, ny, nz = g.shape
        out = np.empty((nx, ny, nz), np.float32)
        label = np.zeros((nx, ny, nz), np.uint8)
        lungs = np.zeros((nx, ny, nz), np.uint8)
        tissues = np.zeros((nx, ny, nz), np.uint8)
        sig_psf = self.acq.psf_fwhm_mm * FWHM_TO_SIGMA
        sig_vox = (sig_psf / g.spacing[0], sig_psf / g.spacing[1])
        sig_z = SLICE_PROFILE_FWHM_VOXELS * FWHM_TO_SIGMA
        # Noise is added before the PSF, so the reconstruction kernel shapes its texture as in real
        # CT; its amplitude is pre-compensated for the PSF and slice-profile filters.
        gain = _kernel_gain(sig_vox[0]) * _kernel_gain(sig_vox[1]) * _kernel_gain(sig_z)
        amp = F32(self.acq.noise_std_hu / gain)
        (i0, j0, _), (i1, j1, _) = self._crop
        for k0 in range(0, nz, self.slab):
            k1 = min(nz, k0 + self.slab)
            lo, hi, img, lab, lng, tid = self._slab(k0, k1)
            full = np.full((nx, ny, k1 - k0), F32(self.hu.air), np.float32)
            full[i0:i1, j0:j1] = img
            for k in range(k0, k1):
                rng = case_rng(self.seed, STREAM_NOISE, k)
                full[:, :, k - k0] += amp * rng.standard_normal((nx, ny), dtype=np.float32)
            out[:, :, k0:k1] = ndimage.gaussian_filter(full, (sig_vox[0], sig_vox[1], 0), mode="nearest")
            if self.acq.kernel_sharpening > 0:
                # a sharp reconstruction kernel: unsharp mask in-plane (edge overshoot, rougher noise)
                part = out[:, :, k0:k1]
                part += F32(self.acq.kernel_sharpening) * (part - ndimage.gaussian_filter(part, (1.0, 1.0, 0),
                                                                                          mode="nearest"))
            label[i0:i1, j0:j1, k0:k1] = lab
            lungs[i0:i1, j0:j1, k0:k1] = lng
            tissues[i0:i1, j0:j1, k0:k1] = tid
        # Slice profile along z (also correlates the noise between slices).
        ndimage.gaussian_filter1d(out, sig_z, axis=2, mode="nearest", output=out)  # in place (line buffers)
        if self.acq.fov_padding:
            ii = np.arange(nx) - (nx - 1) / 2.0
            jj = np.arange(ny) - (ny - 1) / 2.0
            outside = (ii[:, None] * g.spacing[0]) ** 2 + (jj[None, :] * g.spacing[1]) ** 2 > (
                0.5 * min(nx * g.spacing[0], ny * g.spacing[1])) ** 2
            out[outside] = self.acq.padding_value
        np.clip(out, -1024, 3071, out=out)
        if self.acq.fov_padding:
            out[outside] = self.acq.padding_value
        np.rint(out, out=out)
        image = out.astype(np.int16)
        del out
        return Rendered(image=image, label=label, lungs=lungs, tissues=tissues, stats=self.stats)
