"""Static HTML evaluation report: one page, one folder, no network, no JavaScript.

Owns :func:`write_html_report`. The page gathers the summary table (mean of per-case metrics and
voxel-pooled metrics), the per-case table with a thumbnail of each case's first figure linking to
all its figures, and the Dice histogram. Every link is relative to the report folder, so the folder
can be zipped, copied or opened straight from disk; the CSS is inline. All text is HTML-escaped
and every path is URL-quoted, so case names such as ``<script>`` or ``a&b #1`` are shown verbatim.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from urllib.parse import quote

from rrcunet import __version__
from rrcunet.errors import InputError
from rrcunet.formatting import number
from rrcunet.io.atomic import atomic_write_text

__all__ = ["write_html_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
iframe.viewer { width: 100%; height: 620px; border: 1px solid #ccc; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #d8d8d8; padding: 0.3em 0.6em; text-align: right; vertical-align: middle; }
th { background: #f2f4f7; text-align: center; }
td.text { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
img.thumb { height: 90px; display: block; background: #000; }
img.hist { max-width: 560px; width: 100%; }
.links a { margin-right: 0.6em; font-size: 0.85em; }
.note { color: #666; font-size: 0.85em; }
dl.details { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 0.9em; }
dl.details dt { font-weight: bold; } dl.details dd { margin: 0; }
"""


def _columns(rows: Sequence[Mapping[str, object]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def _table(rows: Sequence[Mapping[str, object]], extra: Mapping[int, str] | None = None,
           extra_header: str | None = None) -> str:
    """An HTML table of ``rows`` (columns = keys in order of first appearance).

    ``extra`` maps a row index to already-escaped HTML for an additional last column.
    """
    cols = _columns(rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    if extra_header is not None:
        head += f"<th>{html.escape(extra_header)}</th>"
    body = []
    for i, row in enumerate(rows):
        cells = []
        for c in cols:
            value = row.get(c)
            cls = "" if isinstance(value, Real) and not isinstance(value, bool) else ' class="text"'
            cells.append(f"<td{cls}>{html.escape(number(value))}</td>")
        if extra_header is not None:
            cells.append(f'<td class="text">{(extra or {}).get(i, "")}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _relative_link(out_dir: Path, path: str | os.PathLike[str], what: str) -> str:
    """URL-quoted POSIX path of ``path`` relative to ``out_dir``; it must exist inside ``out_dir``."""
    p = Path(path)
    full = p if p.is_absolute() else out_dir / p
    root = out_dir.resolve()
    resolved = full.resolve()
    try:
        rel = resolved.relative_to(root)
    except ValueError:
        raise InputError(
            f"{what} {p} is outside the report folder {out_dir}; write figures inside that folder so the "
            f"report's relative links work when the folder is copied"
        ) from None
    if not resolved.is_file():
        raise InputError(f"{what} {full} does not exist; render it before writing the report")
    return quote(rel.as_posix())


def write_html_report(out_dir: str | os.PathLike[str], *, summary_rows: Sequence[Mapping[str, object]],
                      per_case_rows: Sequence[Mapping[str, object]],
                      figures: Mapping[str, Sequence[str | os.PathLike[str]]] | None = None,
                      histogram_png: str | os.PathLike[str] | None = None,
                      title: str = "rrcunet evaluation report",
                      details: Mapping[str, object] | None = None,
                      case_key: str = "case", filename: str = "index.html",
                      viewer: str | os.PathLike[str] | None = None) -> Path:
    """Write a static HTML page summarising an evaluation, with relative links to its figures.

    Args:
        out_dir: report folder (created if missing); every figure must already be inside it.
        summary_rows: rows of the summary table, e.g.
            ``[{"metric": "tumour Dice", "mean per case": 0.77, "voxel-pooled": 0.80}, ...]``;
            columns are the keys in order of first appearance.
        per_case_rows: one row per case; the ``case_key`` column identifies the case.
        figures: ``{case: [png, ...]}``: paths (absolute, or relative to ``out_dir``) of each case's
            figures. The first is shown as the thumbnail; each is linked by its file name.
        histogram_png: the Dice histogram (:func:`~rrcunet.visualization.histogram.dice_histogram`).
        title: page title.
        details: optional run information shown as a list (model, checkpoint, dataset, …).
        case_key: name of the case-id column in ``per_case_rows``.
        filename: page name inside ``out_dir``.
        viewer: an interactive viewer page (:func:`~rrcunet.visualization.viewer.write_viewer_page`)
            inside ``out_dir`` to show at the top of the report (each case's own page is linked
            from its row when it is one of the case's ``figures``).

    Returns:
        Path of the written page (atomic write).

    Raises:
        InputError: a figure is missing or lies outside ``out_dir``; a figure's case has no row.

    Example::

        write_html_report("eval/report", summary_rows=summary, per_case_rows=rows,
                          figures={"LUNG1-001": ["LUNG1-001_slices.png", "LUNG1-001_3d.png"]},
                          histogram_png="dice_histogram.png", title="RRc-UNet 3D on Lung1")
    """
    out = Path(out_dir)
    if Path(filename).name != filename or not filename.endswith((".html", ".htm")):
        raise InputError(f"report filename must be a plain name ending in .html, not {filename!r}")
    out.mkdir(parents=True, exist_ok=True)
    figures = dict(figures or {})
    case_ids = [str(r.get(case_key, "")) for r in per_case_rows]
    unknown = [c for c in figures if str(c) not in case_ids]
    if unknown:
        raise InputError(
            f"figures given for case(s) {unknown[:5]} that have no row in per_case_rows "
            f"(column {case_key!r}); check the case ids"
        )

    extra: dict[int, str] = {}
    for i, case in enumerate(case_ids):
        pngs = figures.get(case)
        if not pngs:
            continue
        links = [(_relative_link(out, p, f"figure for case {case!r}"), Path(p).name) for p in pngs]
        alt = html.escape(f"figure of case {case}", quote=True)
        thumb_href = html.escape(links[0][0], quote=True)
        parts = [f'<a href="{thumb_href}"><img class="thumb" src="{thumb_href}" alt="{alt}" loading="lazy"></a>']
        parts.append('<div class="links">' + "".join(
            f'<a href="{html.escape(href, quote=True)}">{html.escape(name)}</a>' for href, name in links) + "</div>")
        extra[i] = "".join(parts)

    sections = [f"<h1>{html.escape(title)}</h1>"]
    if details:
        items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(number(v))}</dd>"
                        for k, v in details.items())
        sections.append(f'<dl class="details">{items}</dl>')
    if viewer is not None:
        href = html.escape(_relative_link(out, viewer, "viewer page"), quote=True)
        sections.append(f'<h2>Viewer</h2><iframe class="viewer" src="{href}" title="interactive viewer"></iframe>'
                        f'<p class="note">Interactive viewer of one case (<a href="{href}">open it alone</a>); '
                        "every case's viewer is linked from its row below.</p>")
    sections.append("<h2>Summary</h2>")
    sections.append(_table(summary_rows) if summary_rows else '<p class="note">No summary rows.</p>')
    sections.append(
        '<p class="note">Mean per case: each metric computed on each case, then averaged over cases '
        '(cases where it is undefined, shown n/a, are left out). Voxel-pooled: computed once over all '
        'voxels of all cases together, so large tumours weigh more.</p>')
    if histogram_png is not None:
        href = html.escape(_relative_link(out, histogram_png, "Dice histogram"), quote=True)
        sections.append("<h2>Per-case tumour Dice</h2>")
        sections.append(f'<img class="hist" src="{href}" alt="histogram of per-case tumour Dice">')
        sections.append(
            '<p class="note">Bins as in the paper\'s Figure 7: [0, 0.5), [0.5, 0.75), [0.75, 0.8], (0.8, 1]; '
            'undefined Dice (no tumour in ground truth or prediction) counted apart.</p>')
    sections.append(f"<h2>Cases ({len(per_case_rows)})</h2>")
    if per_case_rows:
        sections.append(_table(per_case_rows, extra, "figures" if figures else None))
        if figures:
            sections.append('<p class="note">Slice figures: radiological view (patient right on the image '
                            'left); ground truth in blue, prediction in orange; thin = lung, bold = tumour.</p>')
    else:
        sections.append('<p class="note">No cases.</p>')
    sections.append(f'<p class="note">Generated by rrcunet {html.escape(str(__version__))}.</p>')

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections) + "\n</body>\n</html>\n"
    )
    return atomic_write_text(out / filename, page)
