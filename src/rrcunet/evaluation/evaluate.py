"""The evaluation pipeline behind ``rrcunet evaluate``: pair predictions with ground truth, score
them with :mod:`rrcunet.evaluation.metrics`, and write the report folder.

Owns :func:`pair_cases` (which files belong together), :func:`evaluate_folder` (score, aggregate,
draw and write) and the table layout of the paper's Tables 3 and 4 (:func:`summary_rows`). The
metric definitions and both aggregations are those of :mod:`rrcunet.evaluation.metrics`
(docs/metrics.md); nothing is computed here that is not computed there.

Report folder (every file written atomically)::

    REPORT_DIR/per_case.csv         one row per case: every CaseMetrics field
    REPORT_DIR/summary.csv          Table 3 / Table 4 metrics + HD95 + surface Dice, mean of cases and voxel-pooled
    REPORT_DIR/summary.json         the same plus both aggregations in full, the histogram, the pairing
    REPORT_DIR/summary.md           the summary table in Markdown
    REPORT_DIR/dice_histogram.png   Figure 7: per-case tumour Dice in the paper's bins
    REPORT_DIR/figures/<case>_slices.png   CT slices with GT/prediction outlines (when the CT is found)
    REPORT_DIR/figures/<case>_3d.png       3D surfaces, ground truth beside prediction
    REPORT_DIR/index.html           one static page gathering all of it

Example::

    from rrcunet.evaluation.evaluate import evaluate_folder
    report = evaluate_folder("predictions/", "data/phantoms", "report/")
    report.summary.mean_of_cases.tumour_dice, report.files["html"]
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rrcunet import __version__
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError
from rrcunet.evaluation.metrics import CaseMetrics, EvaluationSummary, evaluate_volumes, summarize
from rrcunet.evaluation.metrics import dice_histogram as histogram_counts
from rrcunet.formatting import table
from rrcunet.inference.measure import measure_lesions
from rrcunet.io import read_image, validate_label
from rrcunet.io.atomic import atomic_write_text, json_safe, remove_stale_temporaries
from rrcunet.io.image import ITK_SUFFIXES, image_suffix
from rrcunet.tasks import TUMOUR_LABEL

logger = logging.getLogger(__name__)

PRED_SUFFIX = "_seg"

#: The summary table: (table, metric, CaseMetrics/aggregate field, pooled too?). Names follow
#: docs/metrics.md §5 ("our names for the paper's columns").
SUMMARY_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("Table 3 (3 labels)", "Dice (macro over 3 labels)", "dice_macro", True),
    ("Table 3 (3 labels)", "IoU (micro over 3 labels)", "iou_micro", True),
    ("Table 3 (3 labels)", "F1 (micro over 3 labels)", "f1_micro", True),
    ("Table 3 (3 labels)", "Dice background", "dice_background", True),
    ("Table 3 (3 labels)", "Dice lung", "dice_lung", True),
    ("Table 4 (tumour)", "Dice tumour", "tumour_dice", True),
    ("Table 4 (tumour)", "IoU tumour", "tumour_iou", True),
    ("Table 4 (tumour)", "F1 tumour", "tumour_f1", True),
    ("Surface (tumour)", "HD95 tumour (mm)", "tumour_hd95_mm", False),
    ("Surface (tumour)", "Surface Dice tumour", "tumour_surface_dice", False),
)

#: What the values of a reference label map mean (``--reference-labels``): ``"lung+tumour"`` 0 background,
#: 1 lung, 2 tumour (rrcunet's labels, every prepared dataset); ``"tumour"`` any non-zero value is tumour (a
#: single contour such as ``rrcunet convert --rtstruct``'s GTV-1); ``"auto"`` decides per run (see
#: :func:`reference_mode`).
REFERENCE_LABELS = ("auto", "lung+tumour", "tumour")

# Columns first in per_case.csv (the rest follow in CaseMetrics.as_dict order).
_CASE_COLUMNS = ("case_id", "tumour_dice", "tumour_iou", "tumour_f1", "tumour_hd95_mm", "tumour_surface_dice",
                 "dice_macro", "iou_micro", "f1_micro", "tumour_volume_gt_ml", "tumour_volume_pred_ml")


@dataclass(frozen=True)
class EvaluationPair:
    """One case to score: prediction, ground truth, and the CT when it was found."""

    case_id: str
    prediction: Path
    ground_truth: Path
    image: Path | None = None


@dataclass(frozen=True)
class FolderEvaluation:
    """What :func:`evaluate_folder` computed and wrote.

    Args:
        out_dir: the report folder.
        pairs: the scored cases.
        cases: per-case metrics, in ``pairs`` order.
        summary: both aggregations (:func:`rrcunet.evaluation.metrics.summarize`).
        files: ``{"per_case_csv", "summary_csv", "summary_json", "summary_md", "histogram", "html"}`` → path.
        figures: case id → figure paths.
        unmatched_predictions: predictions without ground truth (not scored).
        n_ground_truth_without_prediction: ground-truth cases with no prediction (not scored).
    """

    out_dir: Path
    pairs: list[EvaluationPair]
    cases: list[CaseMetrics]
    summary: EvaluationSummary
    files: dict[str, Path]
    figures: dict[str, list[Path]] = field(default_factory=dict)
    unmatched_predictions: list[str] = field(default_factory=list)
    n_ground_truth_without_prediction: int = 0

    def summary_markdown(self) -> str:
        return table(summary_rows(self.summary))


# ---------------------------------------------------------------------------------------------
# pairing


def _strip_suffix(name: str) -> tuple[str, str] | None:
    s = image_suffix(name)
    return (name[: len(name) - len(s)], s) if s else None


def _strip_suffix_or_none(path: Path) -> tuple[str, str] | tuple[None, None]:
    return (_strip_suffix(path.name) or (None, None)) if path.is_file() else (None, None)


def _find(folder: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for s in ITK_SUFFIXES:
            p = folder / f"{stem}{s}"
            if p.is_file():
                return p
    return None


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: prediction folder not found; expected a folder of <case>_seg.nii.gz files "
                         "(the output of `rrcunet predict`)")
    preds: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        split = _strip_suffix(p.name)
        if p.is_file() and split and split[0].endswith(PRED_SUFFIX) and not p.name.startswith("."):
            preds.setdefault(split[0][: -len(PRED_SUFFIX)], p)
    if not preds:
        raise InputError(f"{pred_dir}: no prediction found; expected files named <case>_seg.nii.gz "
                         "(the output of `rrcunet predict`)")
    return preds


def _input_from_prediction_json(pred_dir: Path, case: str) -> Path | None:
    js = pred_dir / f"{case}.json"
    if not js.is_file():
        return None
    try:
        path = json.loads(js.read_text(encoding="utf-8"))["input"]["path"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    p = Path(path)
    if not p.is_absolute():  # recorded as given on the command line; try the cwd
        p = Path.cwd() / p
    return p if p.exists() else None


def prediction_flags(pred_dir: Path, case: str) -> str | None:
    """The quality flags ``rrcunet predict`` recorded for ``case`` (codes joined by ``; ``, ``""`` for
    none), or ``None`` when the folder holds no readable ``<case>.json`` with a quality section."""
    try:
        doc = json.loads((pred_dir / f"{case}.json").read_text(encoding="utf-8"))
        flags = doc["quality"]["flags"]
        return "; ".join(str(f["code"]) for f in flags)
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def pair_cases(pred_dir: str | os.PathLike[str], gt_dir: str | os.PathLike[str], *,
               images_dir: str | os.PathLike[str] | None = None) -> tuple[list[EvaluationPair], list[str], int]:
    """Pair ``<case>_seg.nii.gz`` predictions with ground truth (and the CT, for figures).

    Ground truth of ``<case>`` in ``gt_dir``: a prepared dataset's label (``manifest.json``), else the
    first of ``labels/<case>.*``, ``<case>.*``, ``<case>_seg.*`` (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
    The CT: ``images_dir/<case>.*``, ``images_dir/<case>_0000.*`` or a DICOM folder ``images_dir/<case>``;
    else the dataset's image (``manifest.json`` or ``images/<case>.*``); else the input path recorded in
    the prediction's ``<case>.json``. Without a CT the case still gets scores and a 3D figure.

    Returns:
        ``(pairs, unmatched_prediction_ids, n_gt_without_prediction)``.

    Raises:
        InputError: a folder is missing, there are no predictions, or no prediction has ground truth.
    """
    pred_p, gt_p = Path(pred_dir), Path(gt_dir)
    preds = _prediction_files(pred_p)
    if not gt_p.is_dir():
        raise InputError(f"{gt_p}: ground-truth folder not found; expected <case>.nii.gz label maps or a prepared "
                         "dataset folder (manifest.json, labels/)")
    img_p = None if images_dir is None else Path(images_dir)
    if img_p is not None and not img_p.is_dir():
        raise InputError(f"--images {img_p}: folder not found")
    manifest = None
    if (gt_p / "manifest.json").is_file():
        manifest = DatasetManifest.load(gt_p)
    by_id = {c.case_id: c for c in manifest.cases} if manifest is not None else {}
    pairs: list[EvaluationPair] = []
    unmatched: list[str] = []
    for case, pred in preds.items():
        gt = image = None
        entry = by_id.get(case)
        if entry is not None and entry.label is not None:
            gt = manifest.resolve(gt_p, entry.label)  # type: ignore[union-attr]
        if gt is None:
            gt = _find(gt_p / "labels", [case]) or _find(gt_p, [case, f"{case}{PRED_SUFFIX}"])
        if gt is None or gt.resolve() == pred.resolve():
            unmatched.append(case)
            continue
        if img_p is not None:
            image = _find(img_p, [case, f"{case}_0000"])
            if image is None and (img_p / case).is_dir():
                image = img_p / case
        if image is None and entry is not None:
            image = manifest.resolve(gt_p, entry.image)  # type: ignore[union-attr]
        if image is None:
            image = _find(gt_p / "images", [case, f"{case}_0000"])
        if image is None:
            image = _input_from_prediction_json(pred_p, case)
        pairs.append(EvaluationPair(case, pred, gt, image))
    if not pairs:
        found = sorted(by_id) if manifest is not None else sorted(
            {n for d in (gt_p, gt_p / "labels") if d.is_dir() for n, _ in map(_strip_suffix_or_none, d.iterdir()) if n})
        raise InputError(
            f"none of the {len(preds)} prediction(s) in {pred_p} has ground truth in {gt_p}: prediction case ids "
            f"{', '.join(list(preds)[:8])}{' …' if len(preds) > 8 else ''}; ground-truth case ids "
            f"{', '.join(found[:8]) or 'none'}{' …' if len(found) > 8 else ''}. Expected {gt_p}/<case>.nii.gz, "
            "<case>_seg.nii.gz, labels/<case>.nii.gz or a manifest.json listing the case; rename one side so the "
            "ids match"
        )
    if unmatched:
        logger.warning("%d prediction(s) without ground truth are not scored: %s", len(unmatched),
                       ", ".join(unmatched[:10]))
    if manifest is not None:
        n_gt = sum(1 for c in manifest.cases if c.label is not None)
    else:
        n_gt = len({(_strip_suffix(p.name) or ("",))[0] for d in (gt_p, gt_p / "labels") if d.is_dir()
                    for p in d.iterdir() if p.is_file() and _strip_suffix(p.name)})
    return pairs, unmatched, max(0, n_gt - len(pairs))


# ---------------------------------------------------------------------------------------------
# tables


def _value(obj: Any, name: str) -> float:
    data = obj.as_dict() if hasattr(obj, "as_dict") else dict(obj)
    return float(data[name]) if name in data and data[name] is not None else math.nan


def summary_rows(summary: EvaluationSummary) -> list[dict[str, Any]]:
    """Rows of the summary table: table, metric, mean of cases, voxel-pooled (NaN where it does not exist)."""
    mc, vp = summary.mean_of_cases, summary.voxel_pooled
    rows = []
    for table, label, name, pooled in SUMMARY_METRICS:
        rows.append({"table": table, "metric": label, "mean of cases": _value(mc, name),
                     "voxel-pooled": _value(vp, name) if pooled else math.nan})
    rows.append({"table": "Surface (tumour)", "metric": "HD95 tumour, median (mm)",
                 "mean of cases": mc.tumour_hd95_mm_median, "voxel-pooled": math.nan})
    return rows


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows``: the ``columns`` given (other keys ignored; a header even with no rows),
    else the keys of the first row (no rows: empty text). NaN and ±inf are written as ``nan``/``inf``,
    ``None`` as an empty cell."""
    if columns is None and not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns if columns is not None else rows[0]),
                            extrasaction="ignore" if columns is not None else "raise", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _case_row(m: CaseMetrics) -> dict[str, Any]:
    d = m.as_dict()
    d["spacing"] = " ".join(f"{s:g}" for s in d["spacing"])
    ordered = {k: d[k] for k in _CASE_COLUMNS if k in d}
    ordered.update({k: v for k, v in d.items() if k not in ordered})
    return ordered


# ---------------------------------------------------------------------------------------------
# the pipeline


def _check_grids(pair: EvaluationPair, gt: Any, pred: Any) -> None:
    """Refuse a prediction that is not on its ground truth's voxel grid, naming every differing field."""
    if gt.same_grid(pred):
        return
    diffs = [f"{name} {a} vs {b}" for name, a, b in (
        ("shape", gt.shape, pred.shape), ("spacing", gt.spacing, pred.spacing), ("origin", gt.origin, pred.origin),
        ("direction", gt.direction, pred.direction)) if not np.allclose(a, b, atol=1e-3)] or ["within tolerance"]
    raise InputError(
        f"case {pair.case_id}: ground truth {pair.ground_truth} and prediction {pair.prediction} are on different voxel "
        f"grids (ground truth vs prediction: {'; '.join(diffs)}); expected the prediction on the ground truth's CT "
        "grid. Predict from the CT the ground truth was drawn on (`rrcunet predict` keeps the input grid exactly)"
    )


def reference_mode(pairs: Sequence[EvaluationPair], gt_dir: Path, requested: str) -> str:
    """The meaning of the references' labels (:data:`REFERENCE_LABELS`) for this run.

    ``"auto"``: a prepared dataset (``manifest.json``) is ``"lung+tumour"``; otherwise, when no reference
    holds a label 2, the references are tumour-only masks and that is said in a warning; else
    ``"lung+tumour"`` (the scan stops at the first reference with a tumour label).
    """
    if requested not in REFERENCE_LABELS:
        raise ConfigError(f"--reference-labels must be one of {', '.join(REFERENCE_LABELS)}, not {requested!r}")
    if requested != "auto" or (gt_dir / "manifest.json").is_file():
        return "lung+tumour" if requested == "auto" else requested
    if any(int(np.max(read_image(p.ground_truth, kind="label").array)) >= TUMOUR_LABEL for p in pairs):
        return "lung+tumour"
    logger.warning("no reference in %s has label 2 (tumour): read as tumour-only masks (non-zero = tumour, lung "
                   "not scored); pass --reference-labels lung+tumour if their label 1 means lung", gt_dir)
    return "tumour"


def _tumour_only(volume: Any, tumour: np.ndarray) -> Any:
    """``volume`` with the voxels of ``tumour`` as tumour (2) and everything else background (0)."""
    return volume.with_array(np.where(tumour, TUMOUR_LABEL, 0).astype(np.uint8))


def _histogram_values(cases: Sequence[CaseMetrics]) -> list[float]:
    """Per-case tumour Dice for Figure 7; NaN (undefined) where neither mask has tumour."""
    return [math.nan if c.tumour_absent_in_both else c.tumour_dice for c in cases]


def evaluate_folder(pred_dir: str | os.PathLike[str], gt_dir: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str], *, images_dir: str | os.PathLike[str] | None = None,
                    tolerance_mm: float = 2.0, figures: bool = True, overwrite: bool = False,
                    progress: bool = True, title: str = "rrcunet evaluation",
                    reference_labels: str = "auto") -> FolderEvaluation:
    """Score every prediction that has ground truth and write the report folder.

    Args:
        pred_dir: folder of ``<case>_seg.nii.gz`` (``rrcunet predict`` output).
        gt_dir: ground truth: ``<case>.nii.gz`` / ``<case>_seg.nii.gz`` label maps (0/1/2) or a prepared
            dataset folder (see :func:`pair_cases`).
        out_dir: report folder (created). An existing report there is refused unless ``overwrite``.
        images_dir: CT images for the slice figures (see :func:`pair_cases`).
        tolerance_mm: surface-Dice tolerance.
        figures: draw the per-case slice and 3D figures (the histogram and HTML are always written).
        overwrite: replace an existing report.
        progress: tqdm progress bar (on a terminal only).
        title: page title.
        reference_labels: what the references' values mean, one of :data:`REFERENCE_LABELS`. With
            tumour-only references the prediction's lung is not scored and the 3-label rows are left out.

    Returns:
        a :class:`FolderEvaluation`.

    Raises:
        InputError: no pairs; a prediction and its ground truth on different grids (the message names
            both files and every differing field); label values outside 0/1/2; an existing report
            without ``overwrite``.
    """
    # lazy: rrcunet.visualization imports matplotlib (~0.4 s); `import rrcunet.evaluation` stays light
    from rrcunet.visualization import case_figure, dice_histogram, surface_figure, write_html_report
    from rrcunet.visualization.viewer import write_viewer_page

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {out} exists and is not a folder")
    if (out / "summary.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a report (summary.json); pass --overwrite to replace it")
    pairs, unmatched, n_missing = pair_cases(pred_dir, gt_dir, images_dir=images_dir)
    mode = reference_mode(pairs, Path(gt_dir), reference_labels)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    for folder in (out, fig_dir):
        remove_stale_temporaries(folder)  # a killed earlier evaluate's half-written tables and figures

    cases: list[CaseMetrics] = []
    case_figures: dict[str, list[Path]] = {}
    for pair in tqdm(pairs, unit="case", desc="evaluate", disable=None if progress else True, dynamic_ncols=True):
        pred = validate_label(read_image(pair.prediction, kind="label"), pair.prediction)
        gt = validate_label(read_image(pair.ground_truth, kind="label"), pair.ground_truth)
        _check_grids(pair, gt.geometry, pred.geometry)
        if mode == "tumour":
            gt = _tumour_only(gt, np.asarray(gt.array) > 0)
            pred = _tumour_only(pred, np.asarray(pred.array) == TUMOUR_LABEL)
        metrics = evaluate_volumes(pred, gt, case_id=pair.case_id, tolerance_mm=tolerance_mm)
        cases.append(metrics)
        if not figures:
            continue
        pngs: list[Path] = []
        dice = None if metrics.tumour_absent_in_both else metrics.tumour_dice
        if pair.image is not None:
            try:
                ct = read_image(pair.image)
                if ct.geometry.same_grid(gt.geometry):
                    pngs.append(case_figure(ct, gt, pred, fig_dir / f"{pair.case_id}_slices.png", title=pair.case_id,
                                            dice=dice))
                    pngs.append(write_viewer_page(
                        fig_dir / f"{pair.case_id}_view.html", ct, pred, title=f"{pair.case_id}: prediction",
                        lesions=[x.to_dict() for x in measure_lesions(np.asarray(pred.array), pred.geometry)]).path)
                else:
                    logger.warning("case %s: CT %s is not on the label grid; no slice figure", pair.case_id, pair.image)
            except InputError as exc:
                logger.warning("case %s: cannot read CT %s (%s); no slice figure", pair.case_id, pair.image, exc)
        pngs.append(surface_figure(pred, fig_dir / f"{pair.case_id}_3d.png", gt=gt, title=pair.case_id, dice=dice))
        case_figures[pair.case_id] = pngs

    no_tumour = [m.case_id for m in cases if m.tumour_volume_gt_ml == 0]
    guessed = reference_labels == "auto" and not (Path(gt_dir) / "manifest.json").is_file()
    if no_tumour and mode == "lung+tumour" and guessed:  # named from the scores, not from a second read
        logger.warning("%d of %d references hold no tumour label (2): %s; their tumour scores follow the empty-mask "
                       "convention (docs/metrics.md)", len(no_tumour), len(cases), ", ".join(no_tumour[:10]))
    summary = summarize(cases)
    rows = summary_rows(summary)
    per_case = [_case_row(m) for m in cases]
    for row, pair in zip(per_case, pairs):
        flags = prediction_flags(pair.prediction.parent, pair.case_id)
        if flags is not None:  # the prediction's own quality flags (rrcunet.inference.quality)
            row["quality_flags"] = flags
    if mode == "tumour":  # no lung in the references: only the tumour scores mean something
        rows = [r for r in rows if not r["table"].startswith("Table 3")]
        per_case = [{k: v for k, v in r.items() if k in ("case_id", "spacing", "quality_flags") or "tumour" in k}
                    for r in per_case]
    files: dict[str, Path] = {}

    columns: list[str] = []
    for r in per_case:
        columns += [k for k in r if k not in columns]
    files["per_case_csv"] = atomic_write_text(out / "per_case.csv", csv_text(per_case, columns))
    files["summary_csv"] = atomic_write_text(out / "summary.csv",
                                             csv_text(rows, ["table", "metric", "mean of cases", "voxel-pooled"]))
    hist = histogram_counts(_histogram_values(cases))
    mc = summary.mean_of_cases
    doc = {
        "schema": "rrcunet-evaluation", "schema_version": 1, "rrcunet_version": __version__,
        "n_cases": len(cases), "surface_tolerance_mm": tolerance_mm, "reference_labels": mode,
        "summary": rows,
        "mean_of_cases": summary.mean_of_cases.as_dict(),
        "voxel_pooled": summary.voxel_pooled.as_dict(),
        "dice_histogram": {**hist.as_dict(), "undefined": hist.n_nan},
        # absolute paths: the report is read from anywhere, not from where the command ran
        "pairs": [{"case": p.case_id, "prediction": str(p.prediction.resolve()),
                   "ground_truth": str(p.ground_truth.resolve()),
                   "image": None if p.image is None else str(Path(p.image).resolve())} for p in pairs],
        "unmatched_predictions": unmatched,
        "n_ground_truth_without_prediction": n_missing,
    }
    files["summary_json"] = atomic_write_text(out / "summary.json",
                                              json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    notes = [f"{len(cases)} case(s); tumour Dice/IoU/F1 mean of cases over {mc.n_tumour_scored} scored case(s) "
             f"({mc.n_tumour_absent_in_both} without tumour in either mask left out); HD95 mean over finite values "
             f"({mc.n_hd95_infinite} infinite: tumour missed or false alarm); surface Dice at {tolerance_mm:g} mm. "
             "Definitions: docs/metrics.md."]
    if mode == "tumour":
        notes.append("References read as tumour-only masks (non-zero = tumour): lung and 3-label scores left out.")
    if unmatched:
        notes.append(f"Not scored (no ground truth): {', '.join(unmatched)}.")
    md = f"# {title}\n\n" + table(rows) + "\n" + "\n\n".join(notes) + "\n"
    files["summary_md"] = atomic_write_text(out / "summary.md", md)
    files["histogram"] = dice_histogram(_histogram_values(cases), out / "dice_histogram.png")
    details = {"predictions": str(Path(pred_dir).resolve()), "ground truth": str(Path(gt_dir).resolve()),
               "cases": len(cases),
               "surface Dice tolerance (mm)": tolerance_mm, "reference labels": mode,
               "HD95 infinite (missed / false alarm)": mc.n_hd95_infinite,
               "tumour absent in both (left out of tumour means)": mc.n_tumour_absent_in_both}
    if unmatched:
        details["predictions without ground truth (not scored)"] = ", ".join(unmatched)
    html_rows = [{("case" if k == "case_id" else k): v for k, v in r.items()
                  if k in _CASE_COLUMNS or k == "quality_flags"} for r in per_case]
    files["html"] = write_html_report(out, summary_rows=rows, per_case_rows=html_rows,
                                      figures={c: [p.relative_to(out) for p in ps] for c, ps in case_figures.items()},
                                      histogram_png=files["histogram"].relative_to(out), title=title, details=details,
                                      viewer=next((p.relative_to(out) for ps in case_figures.values() for p in ps
                                                   if p.name.endswith("_view.html")), None))
    return FolderEvaluation(out_dir=out, pairs=pairs, cases=cases, summary=summary, files=files,
                            figures=case_figures, unmatched_predictions=unmatched,
                            n_ground_truth_without_prediction=n_missing)
