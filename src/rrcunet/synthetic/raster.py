"""Rasterisation primitives of the phantom renderer: the voxel grid in anatomy coordinates
(:class:`GridFrame`), batched tapered-capsule rasterisation (:func:`raster_segments`) and smooth
random fields defined in millimetres (:class:`SmoothField`).

Everything here works on continuous millimetre coordinates, so the same anatomy renders at any
spacing and orientation. The helpers are written for speed on a few cores: coordinates are built
as broadcastable 1-D/2-D arrays, and thousands of small capsules are rasterised in a handful of
vectorised batches (grouped by bounding-box size) instead of a Python loop per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

F32 = np.float32


@dataclass(frozen=True)
class GridFrame:
    """A voxel grid expressed in the phantom's anatomy frame (mm).

    ``physical = origin + matrix @ ijk`` where ``matrix = direction @ diag(spacing)``; the anatomy
    frame is the LPS patient frame shifted so the carina is at z = 0 and the rib cage is centred
    on x = y = 0.
    """

    shape: tuple[int, int, int]
    origin: np.ndarray
    matrix: np.ndarray

    def coords(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable float32 (X, Y, Z) of the voxel centres in the box ``[lo, hi)``.

        Each array only spans the index axes it depends on (an axis-aligned grid gives shapes
        ``(n,1,1)``, ``(1,n,1)``, ``(1,1,n)``), so fields of one coordinate stay cheap.
        """
        axes = [np.arange(lo[a], hi[a], dtype=np.float64) for a in range(3)]
        out = []
        for p in range(3):
            val: np.ndarray | float = float(self.origin[p])
            for a in range(3):
                c = float(self.matrix[p, a])
                if c != 0.0:
                    shape = [1, 1, 1]
                    shape[a] = axes[a].size
                    val = val + c * axes[a].reshape(shape)
            if np.isscalar(val):
                val = np.full((1, 1, 1), val)
            out.append(np.asarray(val, dtype=F32))
        return out[0], out[1], out[2]

    def index_box(self, pmin: np.ndarray, pmax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index bounding boxes (inclusive lo, exclusive hi, clipped to the grid) of physical boxes.

        ``pmin``/``pmax`` are ``(N, 3)``; returns two ``(N, 3)`` int arrays.
        """
        pmin = np.atleast_2d(pmin)
        pmax = np.atleast_2d(pmax)
        inv = np.linalg.inv(self.matrix)
        centre = (pmin + pmax) / 2.0 - self.origin
        half = (pmax - pmin) / 2.0
        c_idx = centre @ inv.T
        h_idx = half @ np.abs(inv).T
        lo = np.floor(c_idx - h_idx).astype(np.int64)
        hi = np.ceil(c_idx + h_idx).astype(np.int64) + 1
        shape = np.asarray(self.shape)
        return np.clip(lo, 0, shape), np.clip(hi, 0, shape)

    def perpendicular_spacing(self, u: np.ndarray) -> np.ndarray:
        """Effective voxel size (mm) across a line with unit direction(s) ``u`` (N, 3).

        It is the area of the voxel's cross-section seen along ``u``, as a length: for a line
        along the slice axis it is the in-plane spacing, along a row it is sqrt(in-plane × slice).
        """
        spacing = np.linalg.norm(self.matrix, axis=0)
        d = self.matrix / spacing  # direction columns
        u_idx = np.atleast_2d(u) @ d  # components along the grid axes
        s_u = np.sqrt(np.sum((u_idx * spacing) ** 2, axis=1))
        return np.sqrt(np.prod(spacing) / np.maximum(s_u, 1e-6))


def raster_segments(frame: GridFrame, lo: tuple[int, int, int], out: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                    r0: np.ndarray, r1: np.ndarray, *, mode: str, margin: float = 0.0,
                    weight: np.ndarray | None = None, width: float | np.ndarray = 1.0,
                    max_batch: int = 3_000_000) -> None:
    """Rasterise tapered capsules (p0→p1, radius r0→r1, mm) into ``out`` (a sub-box at ``lo``).

    Args:
        frame: the whole volume's grid; ``out`` covers indices ``[lo, lo + out.shape)``.
        out: float32 array updated in place.
        p0, p1: ``(N, 3)`` end points (anatomy mm); r0, r1: ``(N,)`` radii at the ends.
        mode: ``"sd"`` keeps the minimum signed distance ``|p − axis| − r`` (negative inside),
            evaluated up to ``margin`` mm outside each capsule; ``"occ"`` keeps the maximum of
            ``weight · clip(0.5 − sd / width, 0, 1)``, a partial-volume occupancy.
        weight: ``(N,)`` occupancy weights (``"occ"`` only; default 1).
        width: edge width(s) in mm for ``"occ"`` (scalar or ``(N,)``).
    """
    n = len(p0)
    if n == 0:
        return
    p0 = np.asarray(p0, np.float64)
    p1 = np.asarray(p1, np.float64)
    r0 = np.broadcast_to(np.asarray(r0, np.float64), (n,))
    r1 = np.broadcast_to(np.asarray(r1, np.float64), (n,))
    width_a = np.broadcast_to(np.asarray(width, np.float64), (n,))
    weight_a = np.ones(n) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), (n,))
    reach = np.maximum(r0, r1) + (margin if mode == "sd" else 0.5 * width_a)
    pmin = np.minimum(p0, p1) - reach[:, None]
    pmax = np.maximum(p0, p1) + reach[:, None]
    blo, bhi = frame.index_box(pmin, pmax)
    sub_lo = np.asarray(lo)
    sub_hi = sub_lo + np.asarray(out.shape)
    blo = np.maximum(blo, sub_lo)
    bhi = np.minimum(bhi, sub_hi)
    size = bhi - blo
    keep = np.all(size > 0, axis=1)
    if not keep.any():
        return
    idx = np.nonzero(keep)[0]
    size = size[idx]
    # Group by bounding-box size rounded up to powers of two so padding wastes < 8× per batch.
    key = np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)
    order = np.lexsort((key[:, 2], key[:, 1], key[:, 0]))
    idx, key = idx[order], key[order]
    flat_out = out.reshape(-1)
    strides = np.array([out.shape[1] * out.shape[2], out.shape[2], 1], dtype=np.int64)
    m = frame.matrix
    starts = np.nonzero(np.any(np.diff(key, axis=0) != 0, axis=1))[0] + 1
    for group, gkey in zip(np.split(idx, starts), np.split(key, starts)):
        box = (2 ** gkey[0]).astype(np.int64)
        cells = int(np.prod(box))
        per = max(1, max_batch // cells)
        for s in range(0, len(group), per):
            g = group[s:s + per]
            b0 = blo[g]
            bsz = bhi[g] - b0
            ii = b0[:, 0, None] + np.arange(box[0])[None, :]  # (G, bx)
            jj = b0[:, 1, None] + np.arange(box[1])[None, :]
            kk = b0[:, 2, None] + np.arange(box[2])[None, :]
            I = ii[:, :, None, None].astype(np.float32)
            J = jj[:, None, :, None].astype(np.float32)
            K = kk[:, None, None, :].astype(np.float32)
            a = p0[g]
            ax = (p1[g] - a)
            length = np.linalg.norm(ax, axis=1)
            u = ax / np.maximum(length, 1e-9)[:, None]
            v = []
            for c in range(3):
                base = (frame.origin[c] - a[:, c]).astype(np.float32)[:, None, None, None]
                v.append(base + F32(m[c, 0]) * I + F32(m[c, 1]) * J + F32(m[c, 2]) * K)
            uu = u.astype(np.float32)
            proj = v[0] * uu[:, 0, None, None, None] + v[1] * uu[:, 1, None, None, None] \
                + v[2] * uu[:, 2, None, None, None]
            L = length.astype(np.float32)[:, None, None, None]
            t = np.clip(proj / np.maximum(L, F32(1e-6)), 0.0, 1.0)
            tl = t * L
            d2 = (v[0] - tl * uu[:, 0, None, None, None]) ** 2 + (v[1] - tl * uu[:, 1, None, None, None]) ** 2 \
                + (v[2] - tl * uu[:, 2, None, None, None]) ** 2
            rr = (r0[g].astype(np.float32)[:, None, None, None]
                  + t * (r1[g] - r0[g]).astype(np.float32)[:, None, None, None])
            sd = np.sqrt(d2) - rr
            valid = ((np.arange(box[0])[None, :] < bsz[:, 0, None])[:, :, None, None]
                     & (np.arange(box[1])[None, :] < bsz[:, 1, None])[:, None, :, None]
                     & (np.arange(box[2])[None, :] < bsz[:, 2, None])[:, None, None, :])
            flat = ((ii - sub_lo[0])[:, :, None, None] * strides[0] + (jj - sub_lo[1])[:, None, :, None] * strides[1]
                    + (kk - sub_lo[2])[:, None, None, :] * strides[2])
            if mode == "sd":
                sel = valid & (sd < margin)
                np.minimum.at(flat_out, np.broadcast_to(flat, sd.shape)[sel], sd[sel])
            elif mode == "occ":
                w = width_a[g].astype(np.float32)[:, None, None, None]
                occ = np.clip(F32(0.5) - sd / w, 0.0, 1.0) * weight_a[g].astype(np.float32)[:, None, None, None]
                sel = valid & (occ > 0)
                np.maximum.at(flat_out, np.broadcast_to(flat, occ.shape)[sel], occ[sel])
            else:
                raise ValueError(f"mode must be 'sd' or 'occ', not {mode!r}")


def segment_sd_points(points: np.ndarray, p0: np.ndarray, p1: np.ndarray, r0: np.ndarray, r1: np.ndarray,
                      chunk: int = 4096) -> np.ndarray:
    """Minimum signed distance from ``points`` (P, 3) to a set of tapered capsules (brute force)."""
    points = np.asarray(points, np.float64)
    out = np.full(len(points), np.inf)
    if len(p0) == 0:
        return out
    ax = p1 - p0
    L2 = np.maximum(np.sum(ax * ax, axis=1), 1e-12)
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk, None, :]
        v = p - p0[None]
        t = np.clip(np.sum(v * ax[None], axis=2) / L2[None], 0.0, 1.0)
        d = np.linalg.norm(v - t[..., None] * ax[None], axis=2) - (r0[None] + t * (r1 - r0)[None])
        out[s:s + chunk] = d.min(axis=1)
    return out


class SmoothField:
    """A smooth, zero-mean, unit-variance random field defined in mm, sampled anywhere.

    The field lives on a coarse lattice (``cell`` mm) over a box in anatomy space, smoothed with
    a Gaussian of ``corr`` mm and read back with trilinear interpolation, so it does not depend
    on the voxel grid it is sampled on. Used for lung parenchyma and tumour texture.
    """

    def __init__(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, *, cell: float, corr: float):
        self.lo = np.asarray(lo, np.float64) - 2 * cell
        self.cell = float(cell)
        shape = np.ceil((np.asarray(hi, np.float64) + 2 * cell - self.lo) / cell).astype(int) + 1
        white = rng.standard_normal(tuple(int(s) for s in shape), dtype=np.float32)
        sm = ndimage.gaussian_filter(white, corr / cell, mode="wrap")
        sm -= sm.mean()
        sm /= max(float(sm.std()), 1e-6)
        self.data = sm.astype(np.float32)

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field values at the points (x, y, z) (1-D arrays of equal length)."""
        coords = np.stack([(np.asarray(c, np.float32) - F32(self.lo[a])) / F32(self.cell)
                           for a, c in enumerate((x, y, z))])
        return ndimage.map_coordinates(self.data, coords, order=1, mode="nearest", prefilter=False)
