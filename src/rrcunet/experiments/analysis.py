"""The analysis the paper began (§4.4, Figure 8): tumour Dice by size and by location, plus the
analogues of Tables 3 and 4 and of Figure 7 for one model.

Owns :func:`collect_lesions` (per-lesion scores of a folder of predictions, with the phantom facts
of the manifest), :func:`write_lesion_tables` (CSV, Markdown), :func:`size_location_figure`
(PNG), :func:`analyse_predictions` (all of it for a prediction folder) and :func:`analyse` (a run
folder or model file is first predicted on a split). Lesion definitions:
:mod:`rrcunet.experiments.lesions`.

Output folder::

    OUT/analysis.md          Tables 3 and 4 (both aggregations), Figure 7 counts, Dice by size,
                             by location, size × location, with the definitions
    OUT/lesions.csv          one row per ground-truth lesion
    OUT/cases.csv            per case: lesions, false-positive components and volume
    OUT/by_size.csv, OUT/by_location.csv
    OUT/size_location.png    lesion Dice by size bin and by location class
    OUT/report/              rrcunet evaluate's report (Tables 3/4 in summary.md, Figure 7 in
                             dice_histogram.png), unless an existing report is reused
    OUT/predictions/         (analyse on a model) the predicted label maps
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rrcunet.data.manifest import MANIFEST_NAME, DatasetManifest
from rrcunet.errors import InputError
from rrcunet.evaluation.evaluate import csv_text, evaluate_folder, pair_cases
from rrcunet.experiments.config import DEFAULT_SIZE_BINS_ML, EvaluationConfig, check_size_bins
from rrcunet.experiments.data import tumour_facts
from rrcunet.experiments.lesions import (
    LOCATION_CLASSES,
    CaseLesions,
    GroupStats,
    LesionScore,
    cross_table,
    group_lesions,
    lesion_scores,
    size_bin,
    size_bin_labels,
)
from rrcunet.experiments.scoring import predict_split, split_case_ids
from rrcunet.formatting import MISSING, table
from rrcunet.io import read_image
from rrcunet.io.atomic import atomic_write_text
from rrcunet.tasks import TUMOUR_LABEL

logger = logging.getLogger(__name__)

_LOCATION_COLORS = {"chest wall": "#D55E00", "mediastinum": "#0072B2", "chest wall + mediastinum": "#CC79A7",
                    "neither": "#009E73", "unknown": "#999999"}


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`analyse_predictions` computed and wrote.

    Args:
        out_dir: the output folder.
        cases: per-case lesion scores.
        by_size, by_location: group statistics.
        summary: the evaluation report's ``summary.json`` (Tables 3/4, histogram).
        files: name → path of every written file.
    """

    out_dir: Path
    cases: list[CaseLesions]
    by_size: list[GroupStats]
    by_location: list[GroupStats]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def lesions(self) -> list[LesionScore]:
        return [s for c in self.cases for s in c.lesions]


# ---------------------------------------------------------------------------------------------
# lesions of a prediction folder


def collect_lesions(pred_dir: str | Path, dataset_dir: str | Path, *, progress: bool = False) -> list[CaseLesions]:
    """Per-lesion scores of every prediction in ``pred_dir`` that has ground truth in ``dataset_dir``.

    Pairing as :func:`rrcunet.evaluation.evaluate.pair_cases`; tumour facts from the manifest
    case ``source["tumours"]`` when the dataset has a manifest (phantoms), else none.

    Raises:
        InputError: no pairs; a prediction on another grid than its ground truth.
    """
    pairs, _, _ = pair_cases(pred_dir, dataset_dir)
    facts: dict[str, Any] = {}
    if (Path(dataset_dir) / MANIFEST_NAME).is_file():
        facts = {c.case_id: tumour_facts(c.source) for c in DatasetManifest.load(dataset_dir).cases}
    out = []
    for pair in tqdm(pairs, desc="lesions", unit="case", disable=None if progress else True):
        pred = read_image(pair.prediction, kind="label")
        gt = read_image(pair.ground_truth, kind="label")
        if not gt.geometry.same_grid(pred.geometry):
            raise InputError(f"case {pair.case_id}: prediction {pair.prediction} ({pred.geometry.describe()}) is not on "
                             f"the grid of its ground truth {pair.ground_truth} ({gt.geometry.describe()}); predict "
                             "from the CT the ground truth was drawn on")
        out.append(lesion_scores(np.asarray(pred.array) == TUMOUR_LABEL, np.asarray(gt.array) == TUMOUR_LABEL, gt.geometry.spacing,
                                 case_id=pair.case_id, facts=facts.get(pair.case_id)))
    return out


# ---------------------------------------------------------------------------------------------
# tables


def group_rows(groups: Sequence[GroupStats], first: str) -> list[dict[str, Any]]:
    """Table rows of group statistics (``first`` names the group column)."""
    return [{first: g.group, "lesions": g.n, "detected": g.n_detected, "Dice mean": g.dice_mean,
             "Dice SD": g.dice_sd, "Dice median": g.dice_median, "Dice pooled": g.dice_pooled,
             "median volume (mL)": g.volume_ml_median} for g in groups]


def cross_rows(lesions: Sequence[LesionScore], size_bins_ml: Sequence[float]) -> list[dict[str, Any]]:
    """Rows of the size × location table: mean lesion Dice (number of lesions) per cell."""
    grid = cross_table(lesions, size_bins_ml=size_bins_ml)
    rows = []
    for loc, cells in grid.items():
        row: dict[str, Any] = {"location": loc}
        for b, g in cells.items():
            row[b] = MISSING if g.n == 0 else f"{g.dice_mean:.3f} ({g.n})"
        rows.append(row)
    return rows


def write_lesion_tables(cases: Sequence[CaseLesions], out_dir: str | Path, *,
                        size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML) -> dict[str, Path]:
    """Write ``lesions.csv``, ``cases.csv``, ``by_size.csv`` and ``by_location.csv`` (atomically)."""
    out = Path(out_dir)
    lesions = [s for c in cases for s in c.lesions]
    rows = [{**s.as_dict(), "size_bin": size_bin(s.volume_ml, size_bins_ml)} for s in lesions]
    files = {
        "lesions_csv": atomic_write_text(out / "lesions.csv", csv_text(rows) if rows else "case_id,lesion\n"),
        "cases_csv": atomic_write_text(out / "cases.csv", csv_text([
            {"case_id": c.case_id, "lesions": len(c.lesions), "detected": sum(s.detected for s in c.lesions),
             "false_positive_components": c.n_false_positive_components,
             "false_positive_ml": c.false_positive_ml} for c in cases])),
        "by_size_csv": atomic_write_text(out / "by_size.csv", csv_text(group_rows(
            group_lesions(lesions, by="size", size_bins_ml=size_bins_ml), "size"))),
        "by_location_csv": atomic_write_text(out / "by_location.csv", csv_text(group_rows(
            group_lesions(lesions, by="location", size_bins_ml=size_bins_ml), "location"))),
    }
    return files


# ---------------------------------------------------------------------------------------------
# figure


def size_location_figure(lesions: Sequence[LesionScore], out_png: str | Path, *,
                         size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML, title: str = "Lesion Dice",
                         dpi: int = 100) -> Path:
    """Two panels: lesion Dice per size bin (points coloured by location) and per location class
    (points coloured the same); the black bar is each group's mean, ``n`` is in the tick label.
    Headless (Agg), written atomically."""
    # lazy: rrcunet.visualization imports matplotlib (~0.4 s); only the figure needs it
    from rrcunet.visualization._render import new_figure, save_png

    bins = size_bin_labels(size_bins_ml)
    locs = [c for c in LOCATION_CLASSES if c != "unknown" or any(s.location == "unknown" for s in lesions)]
    fig = new_figure(11.0, 4.2)
    axes = [fig.add_axes((0.06, 0.26, 0.42, 0.6)), fig.add_axes((0.56, 0.26, 0.42, 0.6))]
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for ax, names, key in ((axes[0], bins, lambda s: size_bin(s.volume_ml, size_bins_ml)),
                           (axes[1], locs, lambda s: s.location)):
        counts = []
        for i, name in enumerate(names):
            members = [s for s in lesions if key(s) == name]
            counts.append(len(members))
            if members:
                xs = i + rng.uniform(-0.18, 0.18, len(members))
                ax.scatter(xs, [s.dice for s in members], s=22, alpha=0.85, edgecolors="none",
                           c=[_LOCATION_COLORS[s.location] for s in members])
                mean = float(np.mean([s.dice for s in members]))
                ax.plot([i - 0.3, i + 0.3], [mean, mean], color="black", linewidth=2)
        ax.set_xticks(range(len(names)), [f"{n.replace(' + ', ' +' + chr(10))}\nn = {c}" for n, c in zip(names, counts)],
                      fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("lesion Dice")
        ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_title("by ground-truth volume", fontsize=10)
    axes[1].set_title("by location (contact)", fontsize=10)
    handles = [axes[1].scatter([], [], s=22, c=_LOCATION_COLORS[c], label=c) for c in locs]
    fig.legend(handles=handles, loc="lower center", ncol=len(locs), fontsize=8, frameon=False)
    fig.suptitle(f"{title} ({len(lesions)} lesions; bar = mean)", fontsize=11, fontweight="bold", y=0.97)
    return save_png(fig, out_png, dpi=dpi)


# ---------------------------------------------------------------------------------------------
# the whole analysis


def _tables_3_4_markdown(summary: dict[str, Any]) -> str:
    rows = [{"table": r["table"], "metric": r["metric"], "mean of cases": r.get("mean of cases"),
             "voxel-pooled": r.get("voxel-pooled")} for r in summary.get("summary", [])
            if str(r.get("table", "")).startswith(("Table 3", "Table 4"))]
    for r in rows:
        for k in ("mean of cases", "voxel-pooled"):
            r[k] = math.nan if r[k] is None else float(r[k])
    return table(rows, digits=3) if rows else "(no summary)\n"


def analysis_markdown(result_cases: Sequence[CaseLesions], summary: dict[str, Any], *, title: str,
                      size_bins_ml: Sequence[float], report_rel: str | None, png_rel: str) -> str:
    """The text of ``analysis.md``."""
    lesions = [s for c in result_cases for s in c.lesions]
    mc = summary.get("mean_of_cases", {})
    hist = summary.get("dice_histogram", {})
    n_fp = sum(c.n_false_positive_components for c in result_cases)
    parts = [
        f"# {title}\n",
        f"{len(result_cases)} case(s), {len(lesions)} ground-truth lesion(s), {n_fp} false-positive predicted "
        "component(s). Definitions: docs/reproduction.md (\"Tumour Dice by size and location\") and "
        "docs/metrics.md.\n",
        "## Tables 3 and 4 (analogues)\n",
        "Column names as docs/metrics.md §5 maps the paper's: IoU and F1 over the 3 labels are micro "
        "averages (≈ voxel accuracy), the 3-label Dice is the macro mean over the classes. Tumour scores "
        f"over {mc.get('n_tumour_scored', MISSING)} case(s) with tumour in the truth or the prediction.\n",
        _tables_3_4_markdown(summary),
        "## Figure 7 (analogue): per-case tumour Dice\n",
        table([{"bin": k, "cases": v} for k, v in hist.items()]) if hist else "(no histogram)\n",
    ]
    if report_rel:
        parts.append(f"Plot: `{report_rel}/dice_histogram.png`; full report: `{report_rel}/index.html`.\n")
    parts += [
        "## Tumour Dice by size (ground-truth lesion volume)\n",
        "Lesion Dice = 2|P∩G|/(|P|+|G|) per ground-truth lesion; *detected* = the prediction overlaps it; "
        "*pooled* = 2Σ|P∩G|/Σ(|P|+|G|) over the group; SD is the population SD. Bins hold their lower edge.\n",
        table(group_rows(group_lesions(lesions, by="size", size_bins_ml=size_bins_ml), "size"), digits=3),
        "## Tumour Dice by location\n",
        "Contact with the chest wall (costal, apical or diaphragmatic pleura) and with the mediastinum, as "
        "recorded by the phantom generator on its masks; `unknown` = no facts (real data).\n",
        table(group_rows(group_lesions(lesions, by="location", size_bins_ml=size_bins_ml), "location"), digits=3),
        "## Size × location: mean lesion Dice (lesions)\n",
        table(cross_rows(lesions, size_bins_ml), digits=3) if lesions else "(no lesion)\n",
        f"![lesion Dice by size and location]({png_rel})\n",
    ]
    return "\n".join(parts)


def analyse_predictions(pred_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, *,
                        size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML, report_dir: str | Path | None = None,
                        figures: bool = False, tolerance_mm: float = 2.0, progress: bool = False,
                        title: str = "Tumour Dice by size and location") -> AnalysisResult:
    """Analyse a folder of ``<case>_seg.nii.gz`` predictions against a dataset (layout: module docstring).

    Args:
        pred_dir: predictions (``rrcunet predict`` output, or :func:`~rrcunet.experiments.scoring.predict_split`).
        dataset_dir: ground truth: a prepared dataset (with phantom facts for the location classes)
            or a folder of label maps (size analysis only; location ``unknown``).
        out_dir: output folder (created; its files are replaced).
        size_bins_ml: inner edges of the size bins (mL).
        report_dir: an existing ``rrcunet evaluate`` report of the same predictions to take Tables
            3/4 and Figure 7 from; ``None`` writes one to ``OUT/report``.
        figures: per-case figures in that report.
        tolerance_mm: surface-Dice tolerance of the report.
        progress: progress bars.
        title: heading of ``analysis.md``.

    Returns:
        an :class:`AnalysisResult`.
    """
    edges = check_size_bins(size_bins_ml)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if report_dir is None:
        report = out / "report"
        evaluate_folder(pred_dir, dataset_dir, report, tolerance_mm=tolerance_mm, figures=figures, overwrite=True,
                        progress=progress, title=title)
    else:
        report = Path(report_dir)
    summary_path = report / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{report}: no summary.json; expected an `rrcunet evaluate` report folder")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    cases = collect_lesions(pred_dir, dataset_dir, progress=progress)
    lesions = [s for c in cases for s in c.lesions]
    files = write_lesion_tables(cases, out, size_bins_ml=edges)
    files["figure"] = size_location_figure(lesions, out / "size_location.png", size_bins_ml=edges, title=title)
    try:
        report_rel = report.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        report_rel = str(report.resolve())
    md = analysis_markdown(cases, summary, title=title, size_bins_ml=edges, report_rel=report_rel,
                           png_rel="size_location.png")
    files["markdown"] = atomic_write_text(out / "analysis.md", md)
    files["report"] = report
    return AnalysisResult(out_dir=out, cases=cases, by_size=group_lesions(lesions, by="size", size_bins_ml=edges),
                          by_location=group_lesions(lesions, by="location", size_bins_ml=edges), summary=summary,
                          files=files)


def analyse(source: str | Path, dataset_dir: str | Path, out_dir: str | Path, *, subset: str = "test",
            evaluation: EvaluationConfig = EvaluationConfig(), size_bins_ml: Sequence[float] = DEFAULT_SIZE_BINS_ML,
            figures: bool = False, progress: bool = False) -> AnalysisResult:
    """``rrcunet experiment analyse``: analyse a run folder, a model file or a prediction folder.

    A run folder (``best.safetensors`` inside) or a model file is first predicted on the dataset's
    ``subset`` split into ``OUT/predictions`` (cached); a folder of ``<case>_seg.*`` files is
    analysed as it is (``subset`` is then not used: every prediction with ground truth counts).

    Raises:
        InputError: ``source`` is none of these.
    """
    src = Path(source)
    model = src / "best.safetensors" if src.is_dir() else src
    out = Path(out_dir)
    if model.is_file() and model.name.endswith(".safetensors"):
        pred_dir = predict_split(model, dataset_dir, split_case_ids(dataset_dir, subset), out / "predictions",
                                 evaluation=evaluation, progress=progress)
        title = f"{src.name if src.is_dir() else src.stem}: tumour Dice by size and location ({subset} split)"
    elif src.is_dir() and any(p.name.split(".")[0].endswith("_seg") for p in src.iterdir()):
        pred_dir = src
        title = f"{src.name}: tumour Dice by size and location"
    else:
        raise InputError(f"{src}: expected a run folder (with best.safetensors), a model file (.safetensors) or a "
                         "folder of <case>_seg.nii.gz predictions")
    return analyse_predictions(pred_dir, dataset_dir, out, size_bins_ml=size_bins_ml, figures=figures,
                               tolerance_mm=evaluation.tolerance_mm, progress=progress, title=title)
