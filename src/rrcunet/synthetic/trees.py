"""Space-filling pulmonary trees: bronchi with their accompanying arteries, and pulmonary veins.

The lungs are filled with a uniform cloud of territory points, split into lobes by oblique and
horizontal fissure planes. Each branch grows from its parent's end towards the centroid of its
territory; the territory is then cut in two through its centroid across its principal axis, and
each child's radius follows Murray's law with flow proportional to territory size
(r_child = r · (n_child / n)^(1/3)). This is the classical volume-filling construction of
Kitaoka et al. (J Appl Physiol 1999) reduced to a vectorised form (one numpy pass per
generation over all branches); we implement it here because no maintained library grows
airway/vessel trees inside an arbitrary implicit lung shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rrcunet.synthetic.anatomy import T_AIRWALL, T_BLOOD, ChestModel, Tubes

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")


@dataclass
class Root:
    start: np.ndarray     # where the root branch starts (its parent's end)
    radius: float
    territory: int        # territory label of the points it supplies
    artery_start: np.ndarray | None = None  # bronchial trees: where the accompanying artery starts
    parent_dir: np.ndarray | None = None


@dataclass
class TreeSegments:
    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    generation: np.ndarray


def fissure_planes(model: ChestModel) -> dict[str, tuple[float, ...]]:
    """Fissures as surfaces ``a·(y + kx·(|x| − x0)) + b·z + c = 0`` (positive above/anterior).

    Oblique fissures run from high posteriorly to the anterior diaphragm and, within an axial
    slice, from posteromedial to anterolateral (``kx``); the right horizontal fissure is level
    at about the fourth costal cartilage (``kx = 0``).
    """
    p = model.p
    s = p.scale
    out: dict[str, tuple[float, ...]] = {}
    for side, zpost in (("right", 40.0 * s), ("left", 50.0 * s)):
        y1, z1 = 0.8 * p.cav_bp, zpost
        y2 = -0.75 * p.cav_ba
        z2 = (p.z_dome_r if side == "right" else p.z_dome_l) - 5.0 * s
        a, b = -(z2 - z1), (y2 - y1)        # normal of the line through (y1,z1),(y2,z2)
        nrm = np.hypot(a, b)
        a, b = a / nrm, b / nrm
        c = -(a * y1 + b * z1)
        if b * 200.0 + c < 0:               # orient: positive for points far above
            a, b, c = -a, -b, -c
        out[f"oblique_{side}"] = (a, b, c, 0.45, 0.45 * p.cav_a)
    out["horizontal_right"] = (0.0, 1.0, 28.0 * s, 0.0, 0.0)  # z = -28 s
    return out


def _fissure_value(plane: tuple[float, ...], pts: np.ndarray) -> np.ndarray:
    a, b, c, kx, x0 = plane
    return a * (pts[:, 1] + kx * (np.abs(pts[:, 0]) - x0)) + b * pts[:, 2] + c


def assign_lobes(model: ChestModel, pts: np.ndarray) -> np.ndarray:
    """Lobe index (into :data:`LOBES`) of each point; x < septum centre is the right lung."""
    planes = fissure_planes(model)
    right = pts[:, 0] < 3.0 * model.p.scale
    lobe = np.empty(len(pts), np.int64)
    upper_r = _fissure_value(planes["oblique_right"], pts) > 0
    upper_l = _fissure_value(planes["oblique_left"], pts) > 0
    above_h = _fissure_value(planes["horizontal_right"], pts) > 0
    lobe[right & upper_r & above_h] = 0
    lobe[right & upper_r & ~above_h] = 1
    lobe[right & ~upper_r] = 2
    lobe[~right & upper_l] = 3
    lobe[~right & ~upper_l] = 4
    return lobe


def sample_lung_points(model: ChestModel, rng: np.random.Generator, n: int) -> np.ndarray:
    """About ``n`` points uniformly distributed inside both lungs (≥ 2 mm from their boundary)."""
    lo, hi = model.lung_box()
    out: list[np.ndarray] = []
    have = 0
    for _ in range(40):
        cand = rng.uniform(lo, hi, size=(max(4 * (n - have), 256), 3))
        sd = model.lung_sd_points(cand, with_hilar=False)
        keep = cand[sd < -2.0]
        out.append(keep)
        have += len(keep)
        if have >= n:
            break
    pts = np.concatenate(out)[:n]
    return pts


def _principal_split(pts: np.ndarray, lab: np.ndarray, nb: int, cen: np.ndarray, dirs: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Per branch, the unit normal of the splitting plane: principal axis of its points across ``dirs``."""
    d = pts - cen[lab]
    # Project the offsets onto the plane perpendicular to the branch direction.
    d = d - np.sum(d * dirs[lab], axis=1, keepdims=True) * dirs[lab]
    cov = np.zeros((nb, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            v = np.bincount(lab, weights=d[:, i] * d[:, j], minlength=nb)
            cov[:, i, j] = v
            cov[:, j, i] = v
    cov += np.eye(3)[None] * 1e-6
    _, vec = np.linalg.eigh(cov)
    axis = vec[:, :, -1]
    # Jitter the plane by a random rotation about the branch direction (±25°).
    ang = rng.uniform(-0.45, 0.45, size=nb)
    w = np.cross(dirs, axis)
    axis = axis * np.cos(ang)[:, None] + w * np.sin(ang)[:, None]
    return axis / np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)


def grow_tree(pts: np.ndarray, territory: np.ndarray, roots: list[Root], rng: np.random.Generator,
              lung_sd: Callable[[np.ndarray], np.ndarray], *, r_min: float, n_min: int = 2,
              artery_ratio: float | None = None,
              max_angle_deg: float = 65.0) -> tuple[TreeSegments, TreeSegments | None]:
    """Grow trees from ``roots`` into their point territories (``territory`` labels per point).

    Returns the tree segments and, when ``artery_ratio`` is given, the accompanying arteries
    (radius ``artery_ratio`` × bronchial radius, running alongside each bronchus).
    """
    nb = len(roots)
    start = np.array([r.start for r in roots], np.float64)
    radius = np.array([r.radius for r in roots], np.float64)
    lab = np.full(len(pts), -1, np.int64)
    for i, r in enumerate(roots):
        lab[territory == r.territory] = i
    pdir = np.array([r.parent_dir if r.parent_dir is not None else np.zeros(3) for r in roots], np.float64)
    art_start = np.array([r.artery_start if r.artery_start is not None else r.start for r in roots], np.float64)
    gen = np.zeros(nb, np.int64)
    segs: list[tuple[np.ndarray, ...]] = []
    arts: list[tuple[np.ndarray, ...]] = []
    cos_max = np.cos(np.deg2rad(max_angle_deg))
    for _ in range(60):
        if nb == 0:
            break
        valid = lab >= 0
        cnt = np.bincount(lab[valid], minlength=nb).astype(np.float64)
        cen = np.stack([np.bincount(lab[valid], weights=pts[valid, a], minlength=nb) for a in range(3)], axis=1)
        alive = cnt > 0
        cen[alive] /= cnt[alive, None]
        v = cen - start
        dist = np.linalg.norm(v, axis=1)
        dirs = v / np.maximum(dist, 1e-9)[:, None]
        # Limit the branching angle relative to the parent.
        has_parent = np.linalg.norm(pdir, axis=1) > 0.5
        c = np.sum(dirs * pdir, axis=1)
        bend = has_parent & (c < cos_max)
        if bend.any():
            perp = dirs[bend] - c[bend, None] * pdir[bend]
            perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), 1e-9)
            dirs[bend] = pdir[bend] * cos_max + perp * np.sqrt(1 - cos_max ** 2)
        terminal = (cnt < 2 * n_min) | (radius < r_min)
        frac = rng.uniform(0.38, 0.6, size=nb)
        length = np.where(terminal, np.maximum(dist, 2.0 * radius),
                          np.clip(frac * dist, 2.5 * radius, 14.0 * radius))
        # Keep the end inside the lung: shorten up to three times, else drop the branch.
        ok = np.zeros(nb, bool)
        end = start + length[:, None] * dirs
        for _try in range(4):
            need = alive & ~ok
            if not need.any():
                break
            sd = lung_sd(end[need])
            inside = sd < -0.5 * radius[need] - 0.3
            idx = np.nonzero(need)[0]
            ok[idx[inside]] = True
            length[idx[~inside]] *= 0.5
            end[idx[~inside]] = start[idx[~inside]] + length[idx[~inside], None] * dirs[idx[~inside]]
        emit = alive & ok
        taper = np.where(terminal, 0.7, 0.93)
        if emit.any():
            segs.append((start[emit], end[emit], radius[emit], radius[emit] * taper[emit], gen[emit]))
            if artery_ratio is not None:
                ref = np.where(np.abs(dirs[emit, 2:3]) > 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]]))
                off = np.cross(dirs[emit], ref)
                off /= np.maximum(np.linalg.norm(off, axis=1, keepdims=True), 1e-9)
                ra = artery_ratio * radius[emit]
                wall = 0.15 * radius[emit] + 0.2
                a_end = end[emit] + off * (radius[emit] + wall + ra + 0.3)[:, None]
                arts.append((art_start[emit], a_end, ra, ra * taper[emit], gen[emit]))
                a_end_full = np.zeros_like(end)
                a_end_full[emit] = a_end
        # Children of the emitted, non-terminal branches.
        split = emit & ~terminal
        if not split.any():
            break
        normal = _principal_split(pts[valid], lab[valid], nb, cen, dirs, rng)
        side = np.zeros(len(pts), np.int64)
        side[valid] = (np.sum((pts[valid] - cen[lab[valid]]) * normal[lab[valid]], axis=1) > 0).astype(np.int64)
        parent_ids = np.nonzero(split)[0]
        new_index = -np.ones(nb, np.int64)
        new_index[parent_ids] = np.arange(len(parent_ids))
        keep_pt = valid & split[np.maximum(lab, 0)]
        new_lab = -np.ones(len(pts), np.int64)
        new_lab[keep_pt] = 2 * new_index[lab[keep_pt]] + side[keep_pt]
        nb_new = 2 * len(parent_ids)
        cnt_new = np.bincount(new_lab[new_lab >= 0], minlength=nb_new).astype(np.float64)
        parent_of = np.repeat(parent_ids, 2)
        radius = radius[parent_of] * np.cbrt(cnt_new / np.maximum(cnt[parent_of], 1.0))
        start = end[parent_of]
        pdir = dirs[parent_of]
        if artery_ratio is not None:
            art_start = a_end_full[parent_of]
        gen = gen[parent_of] + 1
        lab = new_lab
        nb = nb_new
        # Children without points vanish.
        has = cnt_new > 0
        if not has.all():
            remap = -np.ones(nb, np.int64)
            remap[has] = np.arange(int(has.sum()))
            lab = np.where(lab >= 0, remap[np.maximum(lab, 0)], -1)
            radius, start, pdir, gen = radius[has], start[has], pdir[has], gen[has]
            if artery_ratio is not None:
                art_start = art_start[has]
            nb = int(has.sum())

    def _cat(items: list[tuple[np.ndarray, ...]]) -> TreeSegments:
        if not items:
            z = np.zeros((0, 3))
            return TreeSegments(z, z.copy(), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
        return TreeSegments(*(np.concatenate([it[k] for it in items]) for k in range(5)))

    return _cat(segs), (_cat(arts) if artery_ratio is not None else None)


def grow_lung_trees(model: ChestModel, rng: np.random.Generator, *, r_min: float, airway_min: float) -> None:
    """Grow bronchi + arteries and veins for both lungs and store them on ``model``.

    Sets ``model.trees`` (vessel capsules, tissue ``T_BLOOD``), ``model.airway_wall`` and
    ``model.airway_lumen`` (airways with lumen radius ≥ ``airway_min``), ``model.hilar`` (the
    lobar-level parts that belong to the hilum/mediastinum) and ``model.lobes``.
    """
    p = model.p
    s = p.scale
    r_main = 0.7 * p.trachea_r
    n_pts = int(np.clip(2.0 * 2 * (r_main / r_min) ** 3, 400, 40000))
    pts = sample_lung_points(model, rng, n_pts)
    lobe = assign_lobes(model, pts)
    model.lobes = {name: pts[lobe == i] for i, name in enumerate(LOBES)}
    n_lung = np.array([np.sum(lobe <= 2), np.sum(lobe >= 3)], np.float64)
    n_lobe = np.bincount(lobe, minlength=5).astype(np.float64)

    def r_of(n: float, lung: int) -> float:
        return r_main * (max(n, 1.0) / max(n_lung[lung], 1.0)) ** (1 / 3)

    cen = {i: (pts[lobe == i].mean(axis=0) if n_lobe[i] > 0 else model.carina) for i in range(5)}
    # Bronchus intermedius: from the right main bronchus end towards the middle/lower lobes.
    ml = pts[(lobe == 1) | (lobe == 2)]
    bi_dir = (ml.mean(axis=0) if len(ml) else model.rmb_end + [0, 0, -1]) - model.rmb_end
    bi_dir /= max(np.linalg.norm(bi_dir), 1e-9)
    bi_end = model.rmb_end + 24.0 * s * bi_dir
    r_bi = r_of(n_lobe[1] + n_lobe[2], 0)
    rmb_dir = (model.rmb_end - model.carina) / np.linalg.norm(model.rmb_end - model.carina)
    lmb_dir = (model.lmb_end - model.carina) / np.linalg.norm(model.lmb_end - model.carina)
    roots = [
        Root(model.rmb_end, r_of(n_lobe[0], 0), 0, model.hilum_r + [0, 0, 12 * s], rmb_dir),
        Root(bi_end, r_of(n_lobe[1], 0), 1, model.hilum_r + [0, -8 * s, -14 * s], bi_dir),
        Root(bi_end, r_of(n_lobe[2], 0), 2, model.hilum_r + [0, 6 * s, -16 * s], bi_dir),
        Root(model.lmb_end, r_of(n_lobe[3], 1), 3, model.hilum_l + [0, 0, 6 * s], lmb_dir),
        Root(model.lmb_end, r_of(n_lobe[4], 1), 4, model.hilum_l + [0, 6 * s, -14 * s], lmb_dir),
    ]
    roots = [r for r in roots if n_lobe[r.territory] > 0]

    def lung_sd(q: np.ndarray) -> np.ndarray:
        return model.lung_sd_points(q, with_hilar=False)

    artery_ratio = float(rng.uniform(1.0, 1.25))
    bronchi, arteries = grow_tree(pts, lobe, roots, rng, lung_sd, r_min=r_min / artery_ratio,
                                  artery_ratio=artery_ratio)
    # Veins: four roots from the left atrium's entry points; upper veins drain the upper (and
    # middle) lobes, lower veins the lower lobes.
    vein_terr = np.where(lobe == 1, 0, lobe)  # RML drains with RUL
    r_v = 6.5 * s
    vroots = [Root(model.vein_entries["right_upper"], r_v, 0), Root(model.vein_entries["right_lower"], r_v, 2),
              Root(model.vein_entries["left_upper"], r_v, 3), Root(model.vein_entries["left_lower"], r_v, 4)]
    veins, _ = grow_tree(pts, vein_terr, vroots, rng, lung_sd, r_min=r_min)
    # Scale vein radii so the root radius is r_v regardless of territory size (already), and
    # connect each vein root to the left atrium with a hilar trunk.
    la = model.left_atrium
    trunks = Tubes(np.array([la] * 4), np.array([r.start for r in vroots]), np.full(4, r_v * 1.1), np.full(4, r_v),
                   np.full(4, T_BLOOD))
    bi = Tubes(np.array([model.rmb_end]), np.array([bi_end]), np.array([r_bi * 1.05]), np.array([r_bi]),
               np.array([T_AIRWALL]))

    vessels_all = Tubes.concat([
        Tubes(arteries.p0, arteries.p1, arteries.r0, arteries.r1, np.full(len(arteries.p0), T_BLOOD)),
        Tubes(veins.p0, veins.p1, veins.r0, veins.r1, np.full(len(veins.p0), T_BLOOD)),
        trunks,
    ])
    model.trees = vessels_all
    air = bronchi.r0 >= airway_min
    lumen = Tubes(bronchi.p0[air], bronchi.p1[air], bronchi.r0[air], bronchi.r1[air],
                  np.full(int(air.sum()), T_AIRWALL))
    lumen = Tubes.concat([bi, lumen])
    wall_t0 = 0.15 * lumen.r0 + 0.2
    wall_t1 = 0.15 * lumen.r1 + 0.2
    model.airway_lumen = lumen
    model.airway_wall = Tubes(lumen.p0, lumen.p1, lumen.r0 + wall_t0, lumen.r1 + wall_t1, lumen.tissue)
    def hilar_part(t: TreeSegments, tissue: int, grow: float = 1.0, pad: float = 0.0) -> Tubes:
        sel = t.generation == 0
        return Tubes(t.p0[sel], t.p1[sel], t.r0[sel] * grow + pad, t.r1[sel] * grow + pad,
                     np.full(int(sel.sum()), tissue))

    model.hilar = Tubes.concat([
        hilar_part(arteries, T_BLOOD), hilar_part(bronchi, T_AIRWALL, 1.2, 0.5), hilar_part(veins, T_BLOOD),
        trunks, bi.inflate(1.0),
    ])
