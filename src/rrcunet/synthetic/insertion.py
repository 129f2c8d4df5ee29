"""Synthetic lesions inserted into a real chest CT: :func:`insert_lesions` and
:func:`write_insertion_dataset` (the ``rrcunet insert-lesions`` command).

Why. Phantoms teach the network tumour shapes but not real anatomy: a model trained on them alone
calls the real mediastinum, hilum and heart tumour. A real chest with lesions painted in keeps
every real structure around the lesion and gives exact labels (``docs/phantoms.md``,
"Lesions in real chests"; ``../shared/notes/real-ct-transfer.md``: lesion insertion /
"copy-paste" augmentation). The same chest with nothing inserted is a negative case.

How one lesion is made:

* **Shape and appearance** come from the phantom tumour model
  (:func:`rrcunet.synthetic.tumours.make_shape`): solid (round, lobulated), spiculated,
  part-solid and ground-glass; necrosis in large solid ones.
* **Place** (``location``), chosen on the lung region's distance map (on a grid of about 3 mm):
  ``intrapulmonary`` (clear of the pleura by its radius), ``juxtavascular`` (centred on a vessel,
  a voxel above −300 HU deep in the lung), ``juxtapleural`` (touching the costal pleura),
  ``chest_wall`` (a large mass flattened broadly against the costal wall), ``hilar`` (against the
  mediastinal pleura in the middle of the lung's height and depth). Costal and mediastinal pleura
  are told apart by the nearest non-lung voxel: inside the axial convex hull of both lungs it is
  mediastinum (or the hilum's vessels), outside it the chest wall.
* **Where it may grow**: the lesion is clipped to the lung region grown by ``invade_mm`` (2 mm),
  so against the wall or the mediastinum it flattens, as real tumours and the phantoms' do.
* **Partial volume matching the slice thickness**: the lesion's occupancy of a voxel is averaged
  over sub-slice positions across the slice (a box slice profile, as thick as the spacing), and
  over one voxel's width in-plane; the change it makes to the image is then blurred in-plane by
  the scanner's point spread (σ 0.6 voxel). A voxel is labelled tumour when the lesion occupies
  at least half of it.
* **Image**: solid tissue replaces what was there (``img + occ · (value − img)``); ground glass
  only raises it (``img + occ · max(value − img, 0)``), so vessels inside stay visible. Noise of
  the scan's own level (estimated from soft tissue) is added where the lesion replaced tissue.

Labels: 2 tumour, 1 lung (the given lung region minus tumour), 0 elsewhere; the lung region
written is lung ∪ tumour, as for phantoms. Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from rrcunet.data.manifest import MANIFEST_NAME, CaseEntry, DatasetManifest, make_split
from rrcunet.errors import ConfigError, InputError
from rrcunet.io import Volume, read_image
from rrcunet.lungmask import ClassicalLungExtractor
from rrcunet.synthetic.config import TumourSpec
from rrcunet.synthetic.dataset import write_case_volumes
from rrcunet.synthetic.raster import GridFrame, raster_segments
from rrcunet.synthetic.tumours import TumourShape, make_shape

log = logging.getLogger(__name__)

INSERT_LOCATIONS: tuple[str, ...] = ("intrapulmonary", "juxtavascular", "juxtapleural", "chest_wall", "hilar")
INSERT_KINDS: tuple[str, ...] = ("round", "lobulated", "spiculated", "part_solid", "ground_glass")
# diameter ranges (mm) per location: chest-wall masses are large, the rest span nodules to masses
DIAMETER_MM: dict[str, tuple[float, float]] = {
    "intrapulmonary": (6.0, 45.0), "juxtavascular": (6.0, 30.0), "juxtapleural": (6.0, 35.0),
    "chest_wall": (30.0, 80.0), "hilar": (15.0, 60.0),
}
SUBSOLID_MAX_MM = 35.0
F32 = np.float32


@dataclass(frozen=True)
class InsertedLesion:
    """What was inserted: the facts :mod:`rrcunet.experiments.lesions` reads, plus appearance."""

    index: int
    kind: str
    location: str
    diameter_mm: float
    n_voxels: int
    volume_ml: float
    centre_voxel: list[int]
    bbox_voxel: list[list[int]]
    touches_chest_wall: bool
    touches_mediastinum: bool
    hu_solid: float


@dataclass(frozen=True)
class InsertionResult:
    image: Volume   # int16 HU
    label: Volume   # uint8 0/1/2
    lungs: Volume   # uint8 lung ∪ tumour
    lesions: list[InsertedLesion]


def noise_sigma(hu: np.ndarray) -> float:
    """Robust estimate of the scan's noise (HU): neighbour differences in soft tissue (−150..150 HU)."""
    a = hu.astype(np.float32)
    d = a[1:, :, :] - a[:-1, :, :]
    soft = (np.abs(a[1:]) < 150) & (np.abs(a[:-1]) < 150)
    if soft.sum() < 1000:
        return 10.0
    v = d[soft]
    return float(np.clip(1.4826 * np.median(np.abs(v - np.median(v))) / math.sqrt(2.0), 3.0, 80.0))


@dataclass
class _Sites:
    """Candidate centres on a coarse grid: their distance to the pleura and the pleura's kind."""

    ijk: np.ndarray        # (N, 3) full-grid voxel indices
    depth: np.ndarray      # (N,) mm to the nearest non-lung voxel
    medial: np.ndarray     # (N,) nearest non-lung voxel is mediastinal (inside the lungs' hull), mid-depth
    costal: np.ndarray     # (N,) nearest non-lung voxel is lateral/anterior/posterior, not below
    vessel: np.ndarray     # (N,) the voxel is a vessel (> −300 HU)
    zfrac: np.ndarray      # (N,) height in the lung, 0 bottom .. 1 top (array z)


def _sites(hu: np.ndarray, lung: np.ndarray, spacing: Sequence[float], step_mm: float = 3.0) -> _Sites:
    f = [max(1, int(round(step_mm / s))) for s in spacing]
    sub = lung[:: f[0], :: f[1], :: f[2]]
    sp = np.array([spacing[a] * f[a] for a in range(3)])
    dist, idx = ndimage.distance_transform_edt(sub, sampling=sp, return_indices=True)
    pts = np.argwhere(sub)
    if len(pts) == 0:
        raise InputError("the lung region is empty: no place to insert a lesion")
    near = idx[:, pts[:, 0], pts[:, 1], pts[:, 2]].T
    normal = (near - pts) * sp
    n = normal / (np.linalg.norm(normal, axis=1) + 1e-6)[:, None]
    # Non-lung voxels inside the axial convex hull of both lungs are mediastinum, hilum, heart (and
    # vessels in the lung); those outside it are the chest wall.
    hull = np.zeros(sub.shape, bool)
    for k in range(sub.shape[2]):
        if sub[:, :, k].any():
            hull[:, :, k] = convex_hull_image(sub[:, :, k])
    medial = hull[near[:, 0], near[:, 1], near[:, 2]] & ~sub[near[:, 0], near[:, 1], near[:, 2]]
    costal = ~medial & (np.abs(n[:, 2]) < 0.7)
    ys = pts[:, 1]
    yfrac = (ys - ys.min()) / max(1, ys.max() - ys.min())
    medial = medial & (yfrac > 0.25) & (yfrac < 0.75)  # the hilum: not the paravertebral or retrosternal gutter
    full = pts * np.array(f)
    full = np.minimum(full, np.array(hu.shape) - 1)
    vessel = hu[full[:, 0], full[:, 1], full[:, 2]] > -300
    z = pts[:, 2]
    zfrac = (z - z.min()) / max(1, z.max() - z.min())
    return _Sites(full, dist[pts[:, 0], pts[:, 1], pts[:, 2]], medial, costal, vessel, zfrac)


def _choose_centre(sites: _Sites, location: str, radius: float, rng: np.random.Generator) -> np.ndarray | None:
    d = sites.depth
    if location == "intrapulmonary":
        ok = (d >= radius + 3.0) & ~sites.vessel
    elif location == "juxtavascular":
        ok = (d >= radius * 0.6 + 5.0) & sites.vessel
    elif location == "juxtapleural":
        ok = sites.costal & (d >= 0.4 * radius) & (d <= 0.9 * radius + 1.5)
    elif location == "chest_wall":
        ok = sites.costal & (d >= 0.15 * radius) & (d <= 0.45 * radius + 2.0)
    elif location == "hilar":
        ok = sites.medial & (d >= 0.2 * radius) & (d <= 0.7 * radius + 2.0) & (sites.zfrac > 0.3) & (sites.zfrac < 0.75)
    else:
        raise ConfigError(f"unknown lesion location {location!r}; choose one of {INSERT_LOCATIONS}")
    cand = np.flatnonzero(ok)
    if len(cand) == 0:
        return None
    return sites.ijk[int(rng.choice(cand))]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: Sequence[float]) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    sd = float(n.std())
    return n / sd if sd > 0 else n


def _render_lesion(shape: TumourShape, centre_ijk: np.ndarray, img: np.ndarray, allowed_sd: Callable[..., np.ndarray],
                   spacing: np.ndarray, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Paint one lesion into ``img`` (float32, in place); return its mask in its box and the box."""
    ext = shape.extent + 2.0 * float(spacing.max())
    lo = np.maximum(0, np.floor(centre_ijk - ext / spacing).astype(int))
    hi = np.minimum(np.array(img.shape), np.ceil(centre_ijk + ext / spacing).astype(int) + 1)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    bshape = tuple(int(b - a) for a, b in zip(lo, hi))
    shape.centre = np.asarray(centre_ijk, float) * spacing
    allowed = allowed_sd(box)
    sxy, sz = float(min(spacing[0], spacing[1])), float(spacing[2])
    nsub = int(min(5, max(1, round(sz / sxy))))
    border = _smooth_noise(rng, bshape, [max(0.5, 0.25 * shape.radius / s) for s in spacing]) if shape.border else None
    occ = np.zeros(bshape, np.float32)
    core_occ = np.zeros(bshape, np.float32)
    nec_w = np.zeros(bshape, np.float32)
    for m in range(nsub):
        dz = ((m + 0.5) / nsub - 0.5) * sz
        frame = GridFrame(shape=tuple(img.shape), origin=np.array([0.0, 0.0, dz]), matrix=np.diag(spacing))
        x, y, z = frame.coords(tuple(lo), tuple(hi))
        sd = np.broadcast_to(shape.body_sd(x, y, z), bshape).astype(np.float32)
        if border is not None:
            sd = sd + F32(shape.border * shape.radius) * border
        if len(shape.spicule_len):
            sd = np.array(sd)
            p0, p1, r0, r1 = shape.spicule_segments()
            raster_segments(frame, tuple(lo), sd, p0, p1, r0, r1, mode="sd", margin=sxy)
        sd = np.maximum(sd, allowed)
        occ += np.clip(F32(0.5) - sd / F32(sxy), 0.0, 1.0)
        if shape.kind == "part_solid":
            core = np.maximum(shape.body_sd(x, y, z, scale=shape.core_scale, offset=shape.core_offset), allowed)
            core_occ += np.clip(F32(0.5) - core / F32(sxy), 0.0, 1.0)
        if shape.necrosis > 0:
            inner = shape.body_sd(x, y, z, scale=shape.necrosis)
            nec_w += np.clip(F32(0.5) - inner / F32(max(3.0, sxy)), 0.0, 1.0)
    occ /= nsub
    core_occ /= nsub
    nec_w /= nsub
    sub = img[box]
    tex = _smooth_noise(rng, bshape, [max(0.5, 1.5 / s) for s in spacing])
    if shape.kind in ("ground_glass", "part_solid"):
        val = F32(shape.hu_ggo) + F32(shape.texture_hu * (1.5 if shape.kind == "part_solid" else 1.0)) * tex
        new = sub + occ * np.maximum(val - sub, 0.0)
        if shape.kind == "part_solid":
            new = new + core_occ * (F32(shape.hu_solid) + F32(shape.texture_hu) * tex - new)
        replaced = core_occ
    else:
        val = F32(shape.hu_solid) + F32(shape.texture_hu) * tex + nec_w * F32(shape.hu_necrosis - shape.hu_solid)
        new = sub + occ * (val - sub)
        replaced = occ
    noise = _smooth_noise(rng, bshape, [0.6, 0.6, 0.3])
    new = new + replaced * F32(sigma) * noise
    delta = ndimage.gaussian_filter(new - sub, (0.6, 0.6, 0.0))
    img[box] = sub + delta
    return occ >= 0.5, box


def insert_lesions(ct: Volume, lung: Volume, *, seed: int, n_lesions: int = 1,
                   specs: Sequence[TumourSpec | dict[str, Any]] | None = None,
                   location_weights: Sequence[float] = (0.25, 0.15, 0.25, 0.15, 0.2),
                   kind_weights: Sequence[float] = (0.2, 0.25, 0.2, 0.15, 0.2),
                   invade_mm: float = 2.0, max_diameter_mm: float | None = None) -> InsertionResult:
    """Insert ``n_lesions`` synthetic lung lesions into a real CT (method in the module docstring).

    Args:
        ct: the real chest CT (HU).
        lung: its lung region (0/1) on the same grid (e.g. from
            :class:`rrcunet.lungmask.ClassicalLungExtractor`).
        seed: all randomness (places, shapes, texture, noise).
        n_lesions: how many lesions, when ``specs`` is not given (0: a negative case, the CT unchanged).
        specs: explicit requests (``TumourSpec`` or dicts with ``kind``, ``location`` among
            :data:`INSERT_LOCATIONS`, ``diameter_mm``); ``None`` fields are drawn.
        location_weights, kind_weights: draw probabilities over :data:`INSERT_LOCATIONS` and
            :data:`INSERT_KINDS`.
        invade_mm: how far (mm) a lesion may extend beyond the lung region.
        max_diameter_mm: cap on the drawn diameters (each location's range of :data:`DIAMETER_MM`
            is cut there; a range entirely above it becomes that one value): small nodules only.

    Returns:
        an :class:`InsertionResult` on ``ct``'s grid. A lesion that finds no place of its
        location class is skipped (logged); its absence shows in ``lesions``.
    """
    if not lung.geometry.same_grid(ct.geometry):
        raise InputError(f"lung mask grid {lung.geometry.describe()} differs from the CT's {ct.geometry.describe()}; "
                         "pass the lung mask made on this CT")
    lung_arr = np.asarray(lung.array) > 0
    if not lung_arr.any():
        raise InputError("the lung mask is empty: no place to insert a lesion; check the CT is a chest")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 17]))
    spacing = np.array(ct.spacing, float)
    hu = np.asarray(ct.array)
    img = hu.astype(np.float32)
    requests: list[dict[str, Any]] = []
    for s in (specs if specs is not None else [{}] * int(n_lesions)):
        requests.append(asdict(s) if isinstance(s, TumourSpec) else dict(s))
    tumour = np.zeros(hu.shape, bool)
    lesions: list[InsertedLesion] = []
    if requests:
        sites = _sites(hu, lung_arr, spacing)
        sigma = noise_sigma(hu[:, :, :: max(1, hu.shape[2] // 16)])
        lw = np.asarray(location_weights, float)
        kw = np.asarray(kind_weights, float)

        def allowed_sd(box: tuple[slice, ...]) -> np.ndarray:
            pad = tuple(slice(max(0, b.start - 8), min(n, b.stop + 8)) for b, n in zip(box, hu.shape))
            region = lung_arr[pad]
            inside = ndimage.distance_transform_edt(region, sampling=spacing)
            outside = ndimage.distance_transform_edt(~region, sampling=spacing)
            sd = (outside - inside).astype(np.float32) - F32(invade_mm)
            inner = tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(box, pad))
            return sd[inner]

        for i, req in enumerate(requests):
            location = req.get("location") or INSERT_LOCATIONS[int(rng.choice(len(lw), p=lw / lw.sum()))]
            if location not in INSERT_LOCATIONS:
                raise ConfigError(f"lesion location {location!r} is not one of {INSERT_LOCATIONS}")
            lo_d, hi_d = DIAMETER_MM[location]
            if max_diameter_mm is not None:
                hi_d = min(hi_d, float(max_diameter_mm))
                lo_d = min(lo_d, hi_d)
            diameter = float(req.get("diameter_mm") or np.exp(rng.uniform(np.log(lo_d), np.log(hi_d))))
            kind = req.get("kind")
            if kind is None:
                probs = kw.copy()
                if diameter > SUBSOLID_MAX_MM or location in ("chest_wall", "hilar"):
                    probs[[3, 4]] = 0.0
                kind = INSERT_KINDS[int(rng.choice(len(probs), p=probs / probs.sum()))]
            shape = make_shape(TumourSpec(kind=kind, diameter_mm=diameter), rng)
            centre = _choose_centre(sites, location, 0.5 * diameter, rng)
            if centre is None:
                log.info("lesion %d: no %s place for a %.0f mm lesion; skipped", i, location, diameter)
                continue
            mask, box = _render_lesion(shape, centre, img, allowed_sd, spacing, sigma, rng)
            n_vox = int(mask.sum())
            if n_vox == 0:
                continue
            tumour[box] |= mask
            ii = np.argwhere(mask) + np.array([b.start for b in box])
            dil = ndimage.binary_dilation(mask, iterations=2)
            outside = dil & ~lung_arr[box]
            lesions.append(InsertedLesion(
                index=len(lesions), kind=kind, location=location, diameter_mm=round(diameter, 2), n_voxels=n_vox,
                volume_ml=round(n_vox * float(np.prod(spacing)) / 1000.0, 3),
                centre_voxel=[int(c) for c in centre],
                bbox_voxel=[ii.min(0).tolist(), (ii.max(0) + 1).tolist()],
                touches_chest_wall=bool(location in ("juxtapleural", "chest_wall") and outside.any()),
                touches_mediastinum=bool(location == "hilar" and outside.any()),
                hu_solid=round(float(shape.hu_solid), 1)))
    out = np.clip(np.rint(img), -32768, 32767).astype(np.int16)
    label = np.where(tumour, 2, np.where(lung_arr, 1, 0)).astype(np.uint8)
    region = (lung_arr | tumour).astype(np.uint8)
    return InsertionResult(image=ct.with_array(out, kind="image"), label=ct.with_array(label, kind="label"),
                           lungs=ct.with_array(region, kind="label"), lesions=lesions)


def write_insertion_dataset(out_dir: str | Path, backgrounds: Sequence[str | Path], *, n: int, negatives: int = 0,
                            seed: int = 0, lesions_per_case: Sequence[float] = (0.0, 0.45, 0.35, 0.2),
                            val_fraction: float = 0.0, overwrite: bool = False,
                            lung_extractor: Callable[[Volume], Volume] | None = None,
                            progress: Callable[[int, int, str], None] | None = None,
                            **lesion_options: Any) -> DatasetManifest:
    """Write ``n`` cases with inserted lesions (plus ``negatives`` untouched copies) per background CT.

    The layout is that of ``rrcunet phantoms`` (``images/``, ``labels/``, ``lungs/``,
    ``manifest.json``); each case's ``source`` names its background file and holds the lesions'
    facts (``tumours``). Case ``<background>_lesions_<i>`` uses seed ``(seed, background, i)``.
    ``lesions_per_case`` weighs 0, 1, 2, 3 … lesions (0 is redrawn as 1: a lesion case has one).
    The lung region comes from ``lung_extractor`` (default: the classical extractor) on the
    background CT. The backgrounds are only read. ``lesion_options`` go to :func:`insert_lesions`
    (``location_weights``, ``kind_weights``, ``invade_mm``, ``max_diameter_mm``) and into the
    manifest's description.
    """
    unknown = sorted(set(lesion_options) - {"location_weights", "kind_weights", "invade_mm", "max_diameter_mm"})
    if unknown:
        raise ConfigError(f"unknown lesion option(s) {unknown}; choose among location_weights, kind_weights, "
                          "invade_mm, max_diameter_mm")
    if n < 0 or negatives < 0 or (n + negatives) < 1:
        raise ConfigError(f"need at least one case: -n {n}, --negatives {negatives}")
    out = Path(out_dir)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise InputError(f"output {out} already holds a dataset ({MANIFEST_NAME}); pass --overwrite to replace it, "
                         "or choose another -o folder")
    extractor = lung_extractor or ClassicalLungExtractor()
    weights = np.asarray(lesions_per_case, float)
    weights[0] = 0.0
    cases: list[CaseEntry] = []
    total = len(backgrounds) * (n + negatives)
    done = 0
    for b_index, bg in enumerate(backgrounds):
        ct = read_image(bg)
        lung = extractor(ct)
        stem = Path(bg).name.split(".")[0] if Path(bg).is_file() else Path(bg).name
        base = f"{Path(bg).parent.name}_{stem}" if stem in ("ct", "image") else stem
        for i in range(n + negatives):
            negative = i >= n
            cid = f"{base}_{'negative' if negative else 'lesions'}_{i:03d}"
            case_seed = int(np.random.SeedSequence([int(seed), b_index, i]).generate_state(1)[0])
            k = 0 if negative else int(np.random.default_rng(case_seed).choice(len(weights), p=weights / weights.sum()))
            res = insert_lesions(ct, lung, seed=case_seed, n_lesions=k, **lesion_options)
            rel = write_case_volumes(out, cid, res.image, res.label, res.lungs, overwrite=overwrite)
            source = {"dataset": "rrcunet-insert-lesions", "background": str(bg), "seed": case_seed,
                      "negative": negative, "tumours": [asdict(x) for x in res.lesions]}
            cases.append(CaseEntry(case_id=cid, image=rel["images"], label=rel["labels"], lung=rel["lungs"],
                                   patient=base, source=source))
            done += 1
            log.info("%s: %d lesion(s) %s", cid, len(res.lesions), json.dumps([x.location for x in res.lesions]))
            if progress is not None:
                progress(done, total, cid)
    split = make_split(cases, val_fraction=val_fraction, seed=int(seed))
    manifest = DatasetManifest(
        name=f"inserted-lesions-seed{seed}", cases=tuple(cases), split=split,
        description=(f"synthetic lesions inserted into {len(backgrounds)} real CT(s): {n} lesion case(s) and "
                     f"{negatives} negative(s) each, seed {seed}"
                     + (f", options {json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in lesion_options.items()})}"
                        if lesion_options else "") + ". See rrcunet.synthetic.insertion."))
    manifest.save(out)
    return manifest
