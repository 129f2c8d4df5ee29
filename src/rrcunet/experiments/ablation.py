"""The block ablation of §4.5 (Table 5): :func:`run_ablation`.

Every variant (RRc, CGPD, residual, recurrent blocks, and the plain U-Net) is trained with the
same training config — same data, same budget (``schedule.epochs`` and/or
``schedule.max_minutes``), same seeds — through :func:`rrcunet.training.train`, then its best
model is scored on one split (:func:`rrcunet.experiments.scoring.score_model`), and the results
are tabulated in the form of Table 5, with both aggregations and the spread over seeds.

Experiment folder::

    OUT/experiment.json              the resolved experiment config of the last invocation
    OUT/data/                        the generated phantom benchmark (when the config has ``phantoms``)
    OUT/runs/<variant>-seed<S>/      one training run each (docs/training.md layout)
      experiment_done.json           written when train() returned: the run is finished
    OUT/eval/<variant>-seed<S>/      predictions/ and report/ (cached, see scoring.py)
    OUT/analysis/<variant>-seed<S>/  size / location analysis + Tables 3–4, Figure 7 (analysis.py)
    OUT/ablation.md                  Table 5 (mean of cases; voxel-pooled), cost table, paper reference
    OUT/ablation.json                everything, machine-readable
    OUT/ablation.csv                 one row per variant: mean and SD over seeds of every column
    OUT/ablation_runs.csv            one row per run (variant × seed)

Resume (``resume=True``, ``--resume``): finished runs (``experiment_done.json`` whose config
matches) are skipped; an interrupted run continues from its last epoch (``train(resume=True)``);
scores whose model and options did not change are read back. A finished run whose schedule was
changed (more epochs, a larger ``max_minutes``) is continued. Any other change of the training
config is refused, as ``rrcunet train --resume`` refuses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.config import config_from_dict, config_to_dict
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError
from rrcunet.evaluation.evaluate import csv_text
from rrcunet.experiments.analysis import analyse_predictions
from rrcunet.experiments.config import ExperimentConfig, train_data_for_run
from rrcunet.experiments.data import benchmark_composition, ensure_phantom_benchmark
from rrcunet.experiments.scoring import score_model
from rrcunet.formatting import MISSING, number, table
from rrcunet.io.atomic import atomic_write_text, json_safe

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "experiment.json"
DONE_NAME = "experiment_done.json"

#: Table 5 columns: (paper's column, summary.json field). Mapping: docs/metrics.md §5.
TABLE5_COLUMNS: tuple[tuple[str, str], ...] = (
    ("IoU 3 labels", "iou_micro"),
    ("F1 3 labels", "f1_micro"),
    ("Dice tumour", "tumour_dice"),
    ("IoU tumour", "tumour_iou"),
)
#: (heading, summary.json section).
AGGREGATIONS: tuple[tuple[str, str], ...] = (("mean of cases", "mean_of_cases"), ("voxel-pooled", "voxel_pooled"))

VARIANT_LABELS: dict[str, str] = {
    "rrcunet": "RRc block (RRc-UNet 3D)",
    "cgpd": "CGPD block",
    "residual": "Residual block",
    "recurrent": "Recurrent block",
    "unet": "plain U-Net (2 × Conv-GN-PReLU)",
}

#: The paper's Table 5, verbatim ("-" where it gives no value), for reference in the report.
PAPER_TABLE5: dict[str, tuple[float | None, ...]] = {
    "cgpd": (0.9955, 0.9974, 0.7837, None),
    "residual": (0.9955, 0.9973, 0.1737, 0.5843),
    "recurrent": (0.9957, 0.9973, 0.1992, 0.5825),
    "rrcunet": (0.9971, 0.9982, 0.8777, 0.7274),
}

# Options that never change what a finished run computed (cf. trainer.RESUME_MUTABLE, schedule excepted).
_IGNORED_FOR_DONE = frozenset({"data.num_workers", "data.cache_dir", "runtime.device", "runtime.num_threads",
                               "runtime.progress", "runtime.tensorboard"})


@dataclass(frozen=True)
class RunRecord:
    """One trained and scored run.

    Args:
        variant: model registry name.
        seed: ``runtime.seed``.
        run_dir: the training run folder.
        parameters: trainable parameters of the network (:func:`rrcunet.models.count_parameters`).
        wall_time_s: training wall time (``elapsed_s`` of the last epoch in ``metrics.csv``; resumes add up,
            the data cache and the scoring are not included).
        epochs_completed: epochs trained.
        best_epoch: the epoch of ``best.safetensors``.
        stopped_by: ``"epochs"``, ``"time budget"`` or ``"early stopping"``.
        trained_now: False when the finished run was skipped (resume).
        metrics: ``"<aggregation>/<field>"`` → value for every field of :data:`TABLE5_COLUMNS` and more.
        report_dir: the evaluation report.
    """

    variant: str
    seed: int
    run_dir: Path
    parameters: int
    wall_time_s: float
    epochs_completed: int
    best_epoch: int
    stopped_by: str
    trained_now: bool
    metrics: dict[str, float]
    report_dir: Path

    @property
    def name(self) -> str:
        return run_name(self.variant, self.seed)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["run_dir"], d["report_dir"] = str(self.run_dir), str(self.report_dir)
        return d


@dataclass(frozen=True)
class AblationResult:
    """What :func:`run_ablation` produced: the runs, the per-variant rows and the written files."""

    out_dir: Path
    config: ExperimentConfig
    dataset: Path
    runs: list[RunRecord]
    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    analysis: Any = None


def run_name(variant: str, seed: int) -> str:
    """The folder name of a run: ``<variant>-seed<S>``."""
    return f"{variant}-seed{seed}"


# ---------------------------------------------------------------------------------------------
# helpers


def count_model_parameters(name: str, kwargs: dict[str, Any]) -> int:
    """Trainable parameters of ``build_model(name, **kwargs)`` (built on the meta device: no memory)."""
    # lazy: torch and rrcunet.models cost ~2 s at start-up; only counting parameters needs them
    import torch

    from rrcunet.models import build_model, count_parameters

    with torch.device("meta"):
        model = build_model(name, **kwargs)
    return int(count_parameters(model)["total"])


def _check_data_unchanged(saved: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    for key in ("dataset", "phantoms"):
        if saved.get(key) != new.get(key):
            raise ConfigError(
                f"{out}: the experiment there was made with {key}={saved.get(key)!r}, this config has "
                f"{new.get(key)!r}; the runs would not be comparable. Use another output folder"
            )


def check_experiment_dir(config: ExperimentConfig, out_dir: str | Path, *, resume: bool) -> Path:
    """Create ``OUT``; refuse an existing experiment without ``resume``, or one whose data differ."""
    out = Path(out_dir)
    path = out / EXPERIMENT_NAME
    if path.is_file():
        if not resume:
            raise InputError(f"{out} already holds an experiment ({EXPERIMENT_NAME}); continue it with --resume "
                             "(finished runs are skipped), or choose another -o folder")
        _check_data_unchanged(json.loads(path.read_text(encoding="utf-8")), config_to_dict(config), out)
    elif out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_dataset(config: ExperimentConfig, out: Path, *, progress: bool = False) -> Path:
    """The experiment's dataset folder: ``dataset``, else the phantom benchmark in ``OUT/data``
    (generated if absent), else the training config's ``data.dataset``."""
    if config.dataset is not None:
        path = Path(config.dataset).expanduser()
    elif config.phantoms is not None:
        path = ensure_phantom_benchmark(out / "data", config.phantoms, progress=progress)
    else:
        path = Path(config.train["data"]["dataset"]).expanduser()
    DatasetManifest.load(path)  # a clear error now if it is not a prepared dataset
    return path.resolve()


def check_runs_compatible(config: ExperimentConfig, *, dataset: Path, runs_dir: Path) -> None:
    """Refuse, before anything is trained, a training config that contradicts a run already in ``runs_dir``
    (the rule of ``rrcunet train --resume``: only :data:`rrcunet.training.trainer.RESUME_MUTABLE` may differ)."""
    # lazy: rrcunet.training imports torch and MONAI (~2 s); only runs that train need it
    from rrcunet.training import resolve_config
    from rrcunet.training.config import TrainConfig
    from rrcunet.training.trainer import check_resume_config

    for seed in config.seeds:
        for variant in config.variants:
            run_dir = runs_dir / run_name(variant, seed)
            if not (run_dir / "config.json").is_file():
                continue
            cfg = config_from_dict(TrainConfig, train_data_for_run(config, variant=variant, seed=seed, dataset=dataset))
            saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
            check_resume_config(saved, config_to_dict(resolve_config(cfg)), run_dir)


def train_variant(config: ExperimentConfig, *, variant: str, seed: int, dataset: Path, runs_dir: Path,
                  train_fn: Callable[..., Any] | None = None) -> tuple[Path, dict[str, Any], bool]:
    """Train (or resume, or skip) one run; return ``(run_dir, done record, trained_now)``."""
    # lazy: rrcunet.training imports torch and MONAI (~2 s); only runs that train need it
    from rrcunet.training import resolve_config, train
    from rrcunet.training.config import TrainConfig
    from rrcunet.training.trainer import check_resume_config, config_differences, stop_reason

    train_fn = train_fn or train
    run_dir = runs_dir / run_name(variant, seed)
    cfg = config_from_dict(TrainConfig, train_data_for_run(config, variant=variant, seed=seed, dataset=dataset))
    resolved = config_to_dict(resolve_config(cfg))
    done_path = run_dir / DONE_NAME
    if done_path.is_file():
        done = json.loads(done_path.read_text(encoding="utf-8"))
        diff = set(config_differences(done.get("config", {}), resolved)) - _IGNORED_FOR_DONE
        if not diff and (run_dir / "best.safetensors").is_file():
            logger.info("%s: finished run, skipped", run_dir)
            return run_dir, done, False
        check_resume_config(done.get("config", {}), resolved, run_dir)  # refuses changes beyond the schedule
        logger.info("%s: finished run with another schedule (%s): continuing it", run_dir, ", ".join(sorted(diff)))
    resume = (run_dir / "config.json").is_file()
    logger.info("%s %s (%s)", "resuming" if resume else "training", run_dir, variant)
    result = train_fn(cfg, run_dir, resume=resume)
    history = list(result.history)
    done = {
        "config": resolved,
        "epochs_completed": int(result.epochs_completed),
        "best_epoch": int(result.best_epoch),
        "stopped_by": stop_reason(cfg, history),
        "wall_time_s": float(history[-1]["elapsed_s"]) if history else 0.0,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(done_path, json.dumps(done, indent=2) + "\n")
    return run_dir, done, True


def _metrics_of(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, section in AGGREGATIONS:
        for key, value in (summary.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{section}/{key}"] = float(value)
            elif value is None:
                out[f"{section}/{key}"] = math.nan
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def summarise_runs(runs: list[RunRecord], variants: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per variant: mean and sample SD (ddof = 1; NaN for one seed) over its seeds of every
    Table 5 column in both aggregations, the parameter count, wall time and epochs."""
    rows = []
    for variant in variants:
        mine = [r for r in runs if r.variant == variant]
        if not mine:
            continue
        row: dict[str, Any] = {"variant": variant, "seeds": " ".join(str(r.seed) for r in mine), "n_seeds": len(mine),
                               "parameters": mine[0].parameters}
        for _, section in AGGREGATIONS:
            for _, key in TABLE5_COLUMNS:
                m, s = _mean_sd([r.metrics.get(f"{section}/{key}", math.nan) for r in mine])
                row[f"{section}/{key}"] = m
                row[f"{section}/{key}_sd"] = s
        for key, values in (("wall_time_min", [r.wall_time_s / 60.0 for r in mine]),
                            ("epochs", [float(r.epochs_completed) for r in mine]),
                            ("best_epoch", [float(r.best_epoch) for r in mine])):
            m, s = _mean_sd(values)
            row[key], row[f"{key}_sd"] = m, s
        row["stopped_by"] = ", ".join(sorted({r.stopped_by for r in mine}))
        rows.append(row)
    return rows


def _pm(mean: float, sd: float, digits: int = 4) -> str:
    text = number(mean, digits)
    return text if math.isnan(mean) or math.isnan(sd) else f"{text} ± {number(sd, digits)}"


def _table(header: list[str], body: list[list[Any]]) -> str:
    return table([dict(zip(header, row)) for row in body], header)


def ablation_markdown(result: AblationResult, *, composition: dict[str, int] | None = None,
                      analysis_rel: str | None = None) -> str:
    """The text of ``ablation.md``."""
    cfg = result.config
    sched = cfg.train.get("schedule", {})
    first = result.runs[0] if result.runs else None
    scored = (json.loads((first.report_dir / "summary.json").read_text(encoding="utf-8")).get("n_cases")
              if first and (first.report_dir / "summary.json").is_file() else MISSING)
    n_seeds = len(cfg.seeds)
    lines = [
        f"# Block ablation (Table 5 analogue): {cfg.name}\n",
        f"Dataset `{result.dataset}`, scored on its **{cfg.evaluation.subset}** split ({scored} cases); lung channel "
        f"from {'the dataset masks' if cfg.evaluation.lung == 'dataset' else 'the classical extractor'}. "
        f"Every variant trained with the same config, budget (schedule.epochs = {sched.get('epochs', 'default')}, "
        f"schedule.max_minutes = {sched.get('max_minutes') or 'none'}) and seeds ({', '.join(map(str, cfg.seeds))}). "
        + ("Values: mean ± sample SD (n − 1) over the seeds." if n_seeds > 1 else "One seed: single values, no spread.")
        + "\n",
    ]
    if composition:
        c = composition
        lines.append(f"Scored split: {c['cases']} cases, {c['tumours']} tumours ({c['touching_chest_wall']} touching the "
                     f"chest wall, {c['touching_mediastinum']} touching the mediastinum, {c['under_1_ml']} under 1 mL); "
                     f"{c['cases_without_tumour']} case(s) without tumour.\n")
    lines.append("Columns as docs/metrics.md §5 maps the paper's: IoU / F1 over 3 labels = micro averages "
                 "(≈ voxel accuracy, dominated by background); Dice / IoU tumour = label 2. *Mean of cases*: "
                 "per-case scores averaged (cases with no tumour in truth nor prediction left out of the tumour "
                 "columns); *voxel-pooled*: TP/FP/FN summed over cases first.\n")
    cols = ["block"] + [c for c, _ in TABLE5_COLUMNS]
    for heading, section in AGGREGATIONS:
        body = [[VARIANT_LABELS.get(row["variant"], row["variant"])]
                + [_pm(row[f"{section}/{k}"], row[f"{section}/{k}_sd"]) for _, k in TABLE5_COLUMNS]
                for row in result.rows]
        lines += [f"## Table 5, {heading}\n", _table(cols, body)]
    body = [[VARIANT_LABELS.get(r["variant"], r["variant"]), f"{r['parameters']:,}",
             _pm(r["wall_time_min"], r["wall_time_min_sd"], 1), _pm(r["epochs"], r["epochs_sd"], 1),
             _pm(r["best_epoch"], r["best_epoch_sd"], 1), r["stopped_by"]] for r in result.rows]
    lines += ["## Cost\n",
              "Training wall time = the trainer's `elapsed_s` after the last epoch (resumes add up; data caching and "
              "scoring excluded).\n",
              _table(["block", "parameters", "training wall time (min)", "epochs", "best epoch", "stopped by"], body)]
    body = [[VARIANT_LABELS[v], *("-" if x is None else x for x in vals)] for v, vals in PAPER_TABLE5.items()]
    lines += ["## The paper's Table 5 (for reference, not comparable)\n",
              "Real CTs, validation split, 1000-epoch GPU training; two of its cells contradict each other "
              "(tumour IoU above tumour Dice, docs/metrics.md §5).\n",
              _table(cols, body)]
    lines.append("## Runs\n")
    lines.append(_table(["run", "parameters", "wall time (min)", "epochs", "best epoch", "Dice tumour (cases)",
                         "Dice tumour (pooled)", "trained now"],
                        [[r.name, f"{r.parameters:,}", number(r.wall_time_s / 60, 1), r.epochs_completed,
                          r.best_epoch, r.metrics.get("mean_of_cases/tumour_dice", math.nan),
                          r.metrics.get("voxel_pooled/tumour_dice", math.nan),
                          "yes" if r.trained_now else "no (finished before)"] for r in result.runs]))
    if analysis_rel:
        lines.append(f"Tumour Dice by size and location, Tables 3–4 and Figure 7 of "
                     f"{cfg.analysis.variant}: `{analysis_rel}`.\n")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the experiment


def run_ablation(config: ExperimentConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = False,
                 train_fn: Callable[..., Any] | None = None) -> AblationResult:
    """Train every variant × seed, score each best model, write the Table 5 report (layout: module docstring).

    Args:
        config: the :class:`~rrcunet.experiments.config.ExperimentConfig`.
        out_dir: experiment folder.
        resume: continue an experiment in ``out_dir`` (finished runs skipped, scores cached).
        progress: progress bars of the scoring steps (training follows ``runtime.progress``).
        train_fn: the training function (default :func:`rrcunet.training.train`; tests pass a spy).

    Returns:
        an :class:`AblationResult`.

    Raises:
        InputError: an existing experiment without ``resume``; data problems.
        ConfigError: a training config that contradicts finished runs.

    Example::

        from rrcunet.experiments import load_experiment_config, run_ablation
        cfg = load_experiment_config("configs/benchmark/ablation_cpu.json")
        result = run_ablation(cfg, "experiments/ablation_cpu")
        print(result.files["markdown"].read_text())
    """
    out = check_experiment_dir(config, out_dir, resume=resume)
    dataset = resolve_dataset(config, out, progress=progress)
    check_runs_compatible(config, dataset=dataset, runs_dir=out / "runs")
    # written once the data and the runs are checked, so a refused config leaves experiment.json as it was
    atomic_write_text(out / EXPERIMENT_NAME, json.dumps(config_to_dict(config), indent=2) + "\n")
    runs: list[RunRecord] = []
    total = len(config.variants) * len(config.seeds)
    k = 0
    for seed in config.seeds:
        for variant in config.variants:
            k += 1
            logger.info("[%d/%d] %s, seed %d", k, total, variant, seed)
            run_dir, done, trained = train_variant(config, variant=variant, seed=seed, dataset=dataset,
                                                   runs_dir=out / "runs", train_fn=train_fn)
            analysed = config.analysis.enabled and variant == config.analysis.variant and seed == config.seeds[0]
            score = score_model(run_dir / "best.safetensors", dataset, out / "eval" / run_name(variant, seed),
                                subset=config.evaluation.subset, evaluation=config.evaluation,
                                figures=analysed and config.analysis.figures, progress=progress,
                                title=f"{run_name(variant, seed)} on the {config.evaluation.subset} split")
            kwargs = done["config"]["model"]["kwargs"]
            runs.append(RunRecord(
                variant=variant, seed=seed, run_dir=run_dir,
                parameters=count_model_parameters(variant, kwargs), wall_time_s=float(done["wall_time_s"]),
                epochs_completed=int(done["epochs_completed"]), best_epoch=int(done["best_epoch"]),
                stopped_by=str(done["stopped_by"]), trained_now=trained, metrics=_metrics_of(score.summary),
                report_dir=score.report_dir))
    order = {v: i for i, v in enumerate(config.variants)}
    runs.sort(key=lambda r: (order[r.variant], r.seed))
    rows = summarise_runs(runs, config.variants)
    result = AblationResult(out_dir=out, config=config, dataset=dataset, runs=runs, rows=rows)

    analysis = None
    analysis_rel = None
    if config.analysis.enabled and config.analysis.variant in config.variants:
        name = run_name(config.analysis.variant, config.seeds[0])
        analysis = analyse_predictions(out / "eval" / name / "predictions", dataset, out / "analysis" / name,
                                       size_bins_ml=config.analysis.size_bins_ml,
                                       report_dir=out / "eval" / name / "report", progress=progress,
                                       title=f"{name}: tumour Dice by size and location "
                                             f"({config.evaluation.subset} split)")
        analysis_rel = f"analysis/{name}/analysis.md"
    elif config.analysis.enabled:
        logger.warning("analysis.variant %r is not among the variants run; no size/location analysis",
                       config.analysis.variant)
    try:
        composition = benchmark_composition(dataset, config.evaluation.subset)
    except InputError:
        composition = None
    if composition is not None and composition["tumours"] == 0:
        composition = None  # no phantom facts (real data): nothing to say
    files = {
        "markdown": atomic_write_text(out / "ablation.md", ablation_markdown(
            result, composition=composition, analysis_rel=analysis_rel)),
        "csv": atomic_write_text(out / "ablation.csv", csv_text(rows)),
        "runs_csv": atomic_write_text(out / "ablation_runs.csv", csv_text([
            {"run": r.name, "variant": r.variant, "seed": r.seed, "parameters": r.parameters,
             "wall_time_s": r.wall_time_s, "epochs": r.epochs_completed, "best_epoch": r.best_epoch,
             "stopped_by": r.stopped_by, **{f"{s}/{k}": r.metrics.get(f"{s}/{k}", math.nan)
                                            for _, s in AGGREGATIONS for _, k in TABLE5_COLUMNS}}
            for r in runs])),
    }
    doc = {"schema": "rrcunet-ablation", "schema_version": 1, "experiment": config_to_dict(config),
           "dataset": str(dataset), "subset": config.evaluation.subset, "composition": composition,
           "columns": [{"paper": c, "field": f} for c, f in TABLE5_COLUMNS],
           "variants": rows, "runs": [r.as_dict() for r in runs],
           "analysis": None if analysis is None else str(analysis.files["markdown"])}
    files["json"] = atomic_write_text(out / "ablation.json", json.dumps(json_safe(doc), indent=2) + "\n")
    return dataclasses.replace(result, files=files, analysis=analysis)
