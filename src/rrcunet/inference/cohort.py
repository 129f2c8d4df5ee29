"""One table of a cohort's predictions: every case's JSON in a ``predict`` output folder, gathered.

Owns :func:`gather_cohort` (read the folder: finished predictions, cases still being written,
failed cases with their reason) and :func:`write_cohort` (``cohort.csv`` and ``cohort.html``),
behind ``rrcunet cohort OUT_DIR``. It only reads what ``rrcunet predict`` writes, so it can run
while the parts of a split prediction (``--num-parts`` / torchrun) are still going: a case is done
exactly when its finished JSON exists.
"""

from __future__ import annotations

import csv
import html
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrcunet.errors import InputError
from rrcunet.inference.batch import FAILED_SUFFIX, discover_cases, read_prediction_json
from rrcunet.io.atomic import atomic_write_text

#: CSV columns, in order.
COLUMNS = ("case", "status", "tumour_ml", "n_lesions", "largest_diameter_mm", "lung_region_ml", "flags",
           "bf16", "model_sha256", "read_s", "lungmask_s", "model_s", "write_s", "total_s", "input", "error")


@dataclass
class Cohort:
    """What :func:`gather_cohort` found: one row per case (``COLUMNS``) and the counts."""

    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    expected: int | None = None  # cases discovered in the inputs, when given

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    def headline(self) -> str:
        done, started, failed = self.count("done"), self.count("started"), self.count("failed")
        of = f" of {self.expected}" if self.expected is not None else ""
        text = f"{self.folder}: {done}{of} case(s) done, {failed} failed, {started} being written or interrupted"
        if self.expected is not None:
            text += f", {max(0, self.expected - done - failed - started)} not started"
        return text


def _flags(doc: dict[str, Any]) -> list[str]:
    flags = [str(f.get("code", f.get("flag", f))) if isinstance(f, dict) else str(f)
             for f in (doc.get("quality") or {}).get("flags", [])]
    removed = (doc.get("postprocessing") or {}).get("removed") or []
    if removed:
        flags.append(f"{len(removed)} component(s) removed")
    if doc.get("output_errors"):
        flags.append("missing output: " + ", ".join(sorted(doc["output_errors"])))
    return flags


def _row(case: str, doc: dict[str, Any]) -> dict[str, Any]:
    tumour, lung = doc.get("tumour") or {}, doc.get("lung") or {}
    runtime, inference, model = doc.get("runtime_s") or {}, doc.get("inference") or {}, doc.get("model") or {}
    diameters = [les.get("longest_axial_diameter_mm") or 0.0 for les in tumour.get("lesions", [])]
    return {
        "case": case, "status": "done", "tumour_ml": tumour.get("volume_ml"), "n_lesions": tumour.get("n_lesions"),
        "largest_diameter_mm": max(diameters) if diameters else None, "lung_region_ml": lung.get("region_volume_ml"),
        "flags": "; ".join(_flags(doc)), "bf16": inference.get("bf16"),
        "model_sha256": str(model.get("sha256") or "")[:12],
        **{f"{k}_s": runtime.get(k) for k in ("read", "lungmask", "model", "write", "total")},
        "input": (doc.get("input") or {}).get("path", ""), "error": "",
    }


def gather_cohort(folder: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = ()) -> Cohort:
    """Every case of a ``predict`` output folder: done (finished JSON), started (a JSON marked
    "started": being written now, or a crashed run's; a rerun redoes it) or failed (the part's
    ``<case>.failed.json`` with the reason). ``inputs``: the cohort's inputs, to count the cases
    not started yet.

    Raises:
        InputError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; pass the -o folder of `rrcunet predict`")
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*.json")):
        if path.name.endswith(FAILED_SUFFIX):
            continue
        doc = read_prediction_json(path)
        if doc is None:
            continue
        case = str(doc.get("case") or path.stem)
        if doc.get("status") == "started":
            rows[case] = {**dict.fromkeys(COLUMNS, None), "case": case, "status": "started", "flags": "", "error": ""}
        else:
            rows[case] = _row(case, doc)
    for path in sorted(root.glob(f"*{FAILED_SUFFIX}")):
        doc = read_prediction_json(path)
        if doc is None:
            continue
        case = str(doc.get("case") or path.name[: -len(FAILED_SUFFIX)])
        if case in rows and rows[case]["status"] == "done":
            continue  # an older failure, predicted since
        rows[case] = {**dict.fromkeys(COLUMNS, None), "case": case, "status": "failed", "flags": "",
                      "input": doc.get("input", ""), "error": doc.get("error", "")}
    expected = None
    if inputs:
        out = root.resolve()
        expected = sum(1 for c in discover_cases(inputs) if Path(c.path).resolve().parent != out)
    return Cohort(root, [rows[k] for k in sorted(rows)], expected)


def _csv(cohort: Cohort) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in cohort.rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _html(cohort: Cohort) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "\n".join(
        f'<tr class="{html.escape(r["status"])}">' + "".join(f"<td>{_cell(r.get(c))}</td>" for c in COLUMNS) + "</tr>"
        for r in cohort.rows)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>rrcunet cohort: {html.escape(str(cohort.folder))}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
tr.failed{{background:#fdd}} tr.started{{background:#ffd}}</style></head>
<body><h1>Cohort</h1><p>{html.escape(cohort.headline())}. Written {time.strftime("%Y-%m-%d %H:%M:%S")}
by <code>rrcunet cohort</code>; rerun it to refresh while parts are still predicting.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></body></html>
"""


def write_cohort(cohort: Cohort, out_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write ``cohort.csv`` and ``cohort.html`` (default: into the prediction folder); return both paths."""
    out = Path(out_dir) if out_dir is not None else cohort.folder
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "cohort.csv", out / "cohort.html")
    atomic_write_text(paths[0], _csv(cohort))
    atomic_write_text(paths[1], _html(cohort))
    return paths
