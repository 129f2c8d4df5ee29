"""Make docs/img/phantom_vs_real.png and print the HU comparison table of docs/phantoms.md.

Shows phantom slices (axial at the hilum, axial at the heart, coronal; lung window −1350..150 and
mediastinal window −160..240) beside the same views of a real NSCLC CT (NSCLC-Radiomics LUNG1-001,
read in place from the shared real-data folder; it is never copied into the repository), plus the
HU histograms of both, and prints per-tissue HU statistics. Tissue classes are defined the same way
on both scans: lung = the lung label (phantom) / the RTSTRUCT lung contours (real); fat, soft
tissue and bone = HU bands inside the body (largest connected region above −500 HU, holes filled).

Usage::

    python docs/make_phantom_figure.py [--real ../shared/realdata/nsclc-radiomics-lung1-001]
                                       [--seed 11] [--out docs/img/phantom_vs_real.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "realdata" / "nsclc-radiomics-lung1-001"
LUNG_WINDOW = (-1350, 150)
MEDIASTINAL_WINDOW = (-160, 240)
BANDS = {"fat": (-200, -30), "soft tissue": (-30, 100), "bone": (200, 3100)}


def body_mask(ct: np.ndarray) -> np.ndarray:
    """Largest connected region above −500 HU, with holes (lungs, airways) filled per slice."""
    m = ct > -500
    lab, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return body


def tissue_stats(ct: np.ndarray, lung: np.ndarray) -> dict[str, dict[str, float]]:
    body = body_mask(ct) & ~lung
    out = {}
    v = ct[lung]
    out["lung"] = {"frac": float(lung.sum() / max(1, (body | lung).sum())), "p5": np.percentile(v, 5),
                   "p25": np.percentile(v, 25), "median": np.median(v), "p75": np.percentile(v, 75),
                   "p95": np.percentile(v, 95)}
    inner = ct[body]
    for name, (lo, hi) in BANDS.items():
        vv = inner[(inner >= lo) & (inner < hi)]
        out[name] = {"frac": float(vv.size / max(1, (body | lung).sum())), "p5": np.percentile(vv, 5),
                     "p25": np.percentile(vv, 25), "median": np.median(vv), "p75": np.percentile(vv, 75),
                     "p95": np.percentile(vv, 95)}
    return out


def air_noise(ct: np.ndarray) -> float:
    """Robust std of the air around the patient (inside the reconstruction circle), a noise proxy."""
    body = ndimage.binary_dilation(body_mask(ct[:, :, ::4]), iterations=8)
    air = ct[:, :, ::4][~body]
    air = air[(air > -1015) & (air < -900)]  # exclude padding/clipped values
    mad = np.median(np.abs(air - np.median(air)))
    return float(1.4826 * mad)


def read_real(folder: Path):
    from rrcunet.io import read_image, read_rtstruct

    ct = read_image(folder / "image")
    rois = read_rtstruct(folder / "mask_rtstruct" / "1-1.dcm", ct, rois=["Lung*"])
    lung = np.zeros(ct.shape, bool)
    for v in rois.values():
        lung |= v.array > 0
    return ct, lung


def make_phantom(seed: int):
    from rrcunet.synthetic import PhantomConfig, generate_phantom

    # The clinical preset at the real scan's slice spacing, so both are seen at the same resolution.
    cfg = PhantomConfig.preset("full", slice_spacing_mm=(3.0, 3.0), contrast_probability=0.0)
    return generate_phantom(seed, config=cfg)


def slice_at(vol, z_mm: float) -> int:
    """Index of the slice nearest to patient z (identity/flipped direction grids)."""
    g = vol.geometry
    k = (z_mm - g.origin[2]) / (g.spacing[2] * g.direction[8])
    return int(np.clip(round(k), 0, g.shape[2] - 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="NSCLC-Radiomics LUNG1-001 folder")
    ap.add_argument("--seed", type=int, default=11, help="phantom seed")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "phantom_vs_real.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (args.real / "image").is_dir():
        print(f"real scan not found: {args.real}/image is absent (see ../shared/realdata/README.md)", file=sys.stderr)
        return 1
    real, real_lung = read_real(args.real)
    ph = make_phantom(args.seed)
    pa, pl = ph.image.array, ph.label.array
    ra = real.array

    # Levels: the real scan at its hilum (tumour) and heart; the phantom at the same levels relative
    # to its carina (anatomy z = 0 ↔ patient z = offset[2]).
    z_carina = ph.facts.acquisition["anatomy_to_patient_offset_mm"][2]
    p_levels = [slice_at(ph.image, z_carina - 25.0), slice_at(ph.image, z_carina - 95.0)]
    if ph.facts.tumours:  # show the largest tumour in the first axial view
        big = max(ph.facts.tumours, key=lambda t: t.n_voxels)
        p_levels[0] = int(round(big.centre_voxel[2]))
    r_levels = [72, 46]
    p_cor = int(np.clip(round(pa.shape[1] * 0.5), 0, pa.shape[1] - 1))
    lung_cols = np.nonzero(pl.any(axis=(0, 2)))[0]
    if lung_cols.size:
        p_cor = int(lung_cols.mean())
    r_cor = int(np.nonzero(real_lung.any(axis=(0, 2)))[0].mean())

    fig, ax = plt.subplots(3, 5, figsize=(25, 15.5))
    views = ((ph.image, f"phantom (full preset, seed {args.seed})", p_levels, p_cor),
             (real, "real: NSCLC-Radiomics LUNG1-001", r_levels, r_cor))
    for row, (vol, name, levels, cor) in enumerate(views):
        a = vol.array
        sp = vol.spacing
        for c, (k, win) in enumerate(((levels[0], LUNG_WINDOW), (levels[0], MEDIASTINAL_WINDOW),
                                      (levels[1], LUNG_WINDOW), (levels[1], MEDIASTINAL_WINDOW))):
            ax[row, c].imshow(a[:, :, k].T, cmap="gray", vmin=win[0], vmax=win[1])
            ax[row, c].set_title(f"{name}\naxial k={k}, window {win[0]}..{win[1]}", fontsize=10)
        ax[row, 4].imshow(a[:, cor, :].T, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], origin="lower",
                          aspect=sp[2] / sp[0])
        ax[row, 4].set_title(f"{name}\ncoronal j={cor}", fontsize=10)
    # Small preset, and histograms.
    from rrcunet.synthetic import PhantomConfig, generate_phantom

    small = generate_phantom(args.seed, config=PhantomConfig.preset("small", contrast_probability=0.0))
    sa = small.image.array
    zc = small.facts.acquisition["anatomy_to_patient_offset_mm"][2]
    ks = slice_at(small.image, zc - 25.0)
    ax[2, 0].imshow(sa[:, :, ks].T, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
    ax[2, 0].contour(small.label.array[:, :, ks].T, [0.5, 1.5], colors=["y", "r"], linewidths=0.7)
    ax[2, 0].set_title(f"small preset (seed {args.seed}), labels: lung yellow, tumour red", fontsize=10)
    ax[2, 1].imshow(sa[:, :, ks].T, cmap="gray", vmin=MEDIASTINAL_WINDOW[0], vmax=MEDIASTINAL_WINDOW[1])
    ax[2, 1].set_title("small preset, mediastinal window", fontsize=10)
    cs = int(np.nonzero(small.label.array.any(axis=(0, 2)))[0].mean())
    ax[2, 2].imshow(sa[:, cs, :].T, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], origin="lower",
                    aspect=small.image.spacing[2] / small.image.spacing[0])
    ax[2, 2].set_title("small preset, coronal", fontsize=10)
    bins = np.arange(-1100, 1300, 10)
    for vol, lab, name in ((pa, None, "phantom"), (ra, None, "real")):
        body = body_mask(vol[:, :, ::2])
        ax[2, 3].hist(vol[:, :, ::2][body], bins=bins, histtype="step", density=True, label=name)
    ax[2, 3].set_yscale("log")
    ax[2, 3].set_title("HU histogram inside the body (lungs included)", fontsize=10)
    ax[2, 3].legend()
    ax[2, 4].hist(pa[pl == 1], bins=np.arange(-1024, -300, 5), histtype="step", density=True,
                  label="phantom lung label")
    ax[2, 4].hist(ra[real_lung], bins=np.arange(-1024, -300, 5), histtype="step", density=True,
                  label="real RTSTRUCT lungs")
    ax[2, 4].set_title("lung HU histogram", fontsize=10)
    ax[2, 4].legend()
    for a_ in ax[:2].ravel():
        a_.axis("off")
    for a_ in ax[2, :3]:
        a_.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=55)
    print(f"wrote {args.out}")

    sp_ = tissue_stats(pa, pl == 1)
    sr_ = tissue_stats(ra, real_lung)
    print("\n| tissue | scan | fraction of body | p5 | p25 | median | p75 | p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for t in ("lung", "fat", "soft tissue", "bone"):
        for name, st in (("phantom", sp_), ("real", sr_)):
            s = st[t]
            print(f"| {t} | {name} | {s['frac']:.3f} | {s['p5']:.0f} | {s['p25']:.0f} | {s['median']:.0f} | "
                  f"{s['p75']:.0f} | {s['p95']:.0f} |")
    print(f"\nair noise (robust std, HU): phantom {air_noise(pa):.1f} (sampled noise std "
          f"{ph.facts.acquisition['noise_std_hu']:.1f}), real {air_noise(ra):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
