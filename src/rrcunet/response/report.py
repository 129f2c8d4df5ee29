"""The HTML page of ``rrcunet compare``: the response, the lesion table, side-by-side axial slices of
every lesion (baseline | follow-up carried onto the baseline grid) and a plot of the volumes.

Owns :func:`write_response_html`. Slices are in the radiological convention (patient right on
the image left, anterior up), in a lung window, at one physical scale; the baseline outline is
sky blue, the follow-up orange (Okabe–Ito, colour-blind safe).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.io.atomic import atomic_write_text
from rrcunet.preprocessing.orientation import orientation_step
from rrcunet.tasks import TUMOUR_LABEL
from rrcunet.visualization._render import new_figure, save_png

BASE_COLOUR, FOLLOW_COLOUR = "#56B4E9", "#E69F00"
WINDOW = (-1200.0, 300.0)


def _lesion_panels(ct: np.ndarray, follow_ct: np.ndarray, base_mask: np.ndarray, follow_mask: np.ndarray,
                   centre: np.ndarray, spacing: tuple[float, float, float], out_png: Path, title: str,
                   half_mm: float = 45.0) -> Path:
    k = int(np.clip(round(centre[2]), 0, ct.shape[2] - 1))
    hx, hy = int(half_mm / spacing[0]), int(half_mm / spacing[1])
    cx, cy = int(round(centre[0])), int(round(centre[1]))
    xs = slice(max(0, cx - hx), min(ct.shape[0], cx + hx + 1))
    ys = slice(max(0, cy - hy), min(ct.shape[1], cy + hy + 1))
    extent = (0, (xs.stop - xs.start) * spacing[0], (ys.stop - ys.start) * spacing[1], 0)
    fig = new_figure(7.0, 3.6)
    for i, (img, mask, colour, name) in enumerate(((ct, base_mask, BASE_COLOUR, "baseline"),
                                                   (follow_ct, follow_mask, FOLLOW_COLOUR, "follow-up (registered)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(img[xs, ys, k].T, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], extent=extent,
                  interpolation="nearest")
        m = mask[xs, ys, k].T.astype(float)
        if m.any():
            yy = (np.arange(m.shape[0]) + 0.5) * spacing[1]
            xx = (np.arange(m.shape[1]) + 0.5) * spacing[0]
            ax.contour(xx, yy, m, levels=[0.5], colors=[colour], linewidths=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_png(fig, out_png, dpi=90)


def _volume_plot(lesions: list[dict[str, Any]], out_png: Path) -> Path:
    fig = new_figure(max(4.0, 0.6 * len(lesions) + 2.0), 3.0)
    ax = fig.add_subplot(1, 1, 1)
    n = np.arange(len(lesions))
    ax.bar(n - 0.2, [les["volume_baseline_ml"] for les in lesions], 0.4, color=BASE_COLOUR, label="baseline")
    ax.bar(n + 0.2, [les["volume_followup_ml"] for les in lesions], 0.4, color=FOLLOW_COLOUR, label="follow-up")
    ax.set_xticks(n, [str(les["lesion"]) for les in lesions])
    ax.set_xlabel("lesion")
    ax.set_ylabel("volume (mL)")
    ax.legend(fontsize=8)
    return save_png(fig, out_png, dpi=90)


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def write_response_html(out: Path, doc: dict[str, Any], base: Any, follow_ct: np.ndarray,
                        follow_labels: np.ndarray) -> Path:
    """Write ``out/response.html`` and its figures under ``out/figures/`` for a ``response.json`` document
    ``doc``; ``base`` is the baseline :class:`~rrcunet.response.compare.TimePoint`, ``follow_ct`` and
    ``follow_labels`` the follow-up carried onto its grid."""
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    orient = orientation_step(base.ct.geometry)
    spacing = orient.output_geometry.spacing
    ct = orient.apply(np.asarray(base.ct.array))
    fct = orient.apply(follow_ct)
    bmask = orient.apply(np.asarray(base.labels.array) == TUMOUR_LABEL)
    fmask = orient.apply(follow_labels == TUMOUR_LABEL)
    geo = orient.output_geometry
    rows, figures = [], []
    for les in doc["lesions"]:
        centre = geo.physical_to_index(np.asarray(les["centroid_baseline_mm_lps"], float))
        title = (f"lesion {les['lesion']} ({les['status']}): {les['volume_baseline_ml']:.1f} → "
                 f"{les['volume_followup_ml']:.1f} mL")
        png = _lesion_panels(ct, fct, bmask, fmask, centre, spacing, fig_dir / f"lesion_{les['lesion']}.png", title)
        figures.append(png)
        rows.append(
            f"<tr><td>{les['lesion']}</td><td>{html.escape(les['status'])}</td><td>{'yes' if les['target'] else ''}</td>"
            f"<td>{les['volume_baseline_ml']:.2f}</td><td>{les['volume_followup_ml']:.2f}</td>"
            f"<td>{_fmt(les['volume_change_pct'], '+.1f')}</td><td>{les['diameter_baseline_mm']:.1f}</td>"
            f"<td>{les['diameter_followup_mm']:.1f}</td><td>{_fmt(les['diameter_change_pct'], '+.1f')}</td></tr>")
    plot = _volume_plot(doc["lesions"], fig_dir / "volumes.png") if doc["lesions"] else None
    r, v = doc["recist"], doc["volumetric"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"])
    flags = ", ".join(f"{tp}: {', '.join(doc[tp]['quality_flags']) or 'none'}" for tp in ("baseline", "followup"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rrcunet response</title>
<style>body {{ font: 14px system-ui, sans-serif; margin: 20px; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }} img {{ max-width: 100%; }}
.cat {{ font-size: 20px; font-weight: bold; }}</style></head><body>
<h1>Tumour response</h1>
<p>Baseline <code>{html.escape(doc['baseline']['ct'])}</code> → follow-up <code>{html.escape(doc['followup']['ct'])}</code></p>
<p class="cat">RECIST 1.1: {html.escape(r['category'])} &nbsp; · &nbsp; volumetric: {html.escape(v['category'])}</p>
<p>Sum of target diameters {r['sum_diameters_baseline_mm']:.1f} → {r['sum_diameters_followup_mm']:.1f} mm
({_fmt(r['change_pct'], '+.1f')} %); total tumour volume {v['volume_baseline_ml']:.1f} → {v['volume_followup_ml']:.1f} mL
({_fmt(v['change_pct'], '+.1f')} %); new lesions: {len(r['new_lesions'])}.
Registration: lung Dice {doc['registration']['lung_dice_after']:.3f} after. Quality flags: {html.escape(flags)}.</p>
<table><tr><th>lesion</th><th>status</th><th>target</th><th>baseline mL</th><th>follow-up mL</th><th>Δ volume %</th>
<th>baseline mm</th><th>follow-up mm</th><th>Δ diameter %</th></tr>
{''.join(rows)}</table>
{f'<h2>Volumes</h2><img src="figures/{plot.name}" alt="lesion volumes">' if plot else ''}
<h2>Lesions</h2>
{''.join(f'<img src="figures/{p.name}" alt="lesion slices">' for p in figures) or '<p>No lesion at either time point.</p>'}
<h2>Notes</h2><ul>{notes}</ul>
<p>Baseline outline sky blue, follow-up orange; axial slices through each lesion's baseline centroid,
radiological view. Definitions and thresholds: docs/response.md.</p>
</body></html>
"""
    return atomic_write_text(out / "response.html", page)
