"""Experiments: reproducing and extending the paper's §4.4–4.5 results.

* :mod:`.config` — :class:`ExperimentConfig` (variants, seeds, data, the shared training config,
  evaluation and analysis options), JSON files and ``key=value`` overrides.
* :mod:`.data` — the fixed synthetic benchmark (phantoms with a held-out test list).
* :mod:`.ablation` — :func:`run_ablation`: the block ablation of Table 5 (train every variant ×
  seed with the same budget, score each best model, tabulate), resumable.
* :mod:`.scoring` — predict a split with a model file and evaluate it, cached.
* :mod:`.lesions` / :mod:`.analysis` — per-lesion tumour Dice by size and location, and the
  analogues of Tables 3–4 and Figure 7 for one model (:func:`analyse`).
* :mod:`.merge` — :func:`merge_datasets`: several prepared datasets → one, with a new seeded
  patient-level split (the paper's 494-scan training pool).
* :mod:`.postprocessing` — :func:`select_postprocessing`: a model's smallest-tumour volume chosen
  on its validation cases (not in the paper; nnU-Net's practice), optionally written into a copy
  of the model file.

The CLI is ``rrcunet experiment {ablation,analyse,postprocess,merge-datasets}``; docs/reproduction.md
describes the recipes.

Example::

    from rrcunet.experiments import load_experiment_config, run_ablation
    result = run_ablation(load_experiment_config("configs/benchmark/ablation_cpu.json"), "experiments/cpu")
"""

from rrcunet.experiments.ablation import AblationResult, RunRecord, run_ablation
from rrcunet.experiments.analysis import AnalysisResult, analyse, analyse_predictions
from rrcunet.experiments.config import (
    AnalysisConfig,
    EvaluationConfig,
    ExperimentConfig,
    PhantomBenchmarkConfig,
    load_experiment_config,
)
from rrcunet.experiments.data import ensure_phantom_benchmark
from rrcunet.experiments.lesions import CaseLesions, LesionScore, group_lesions, lesion_scores
from rrcunet.experiments.merge import merge_datasets
from rrcunet.experiments.postprocessing import PostprocessSelection, select_postprocessing
from rrcunet.experiments.scoring import ModelScore, predict_split, score_model

__all__ = [
    "AblationResult",
    "AnalysisConfig",
    "AnalysisResult",
    "CaseLesions",
    "EvaluationConfig",
    "ExperimentConfig",
    "LesionScore",
    "ModelScore",
    "PhantomBenchmarkConfig",
    "PostprocessSelection",
    "RunRecord",
    "analyse",
    "analyse_predictions",
    "ensure_phantom_benchmark",
    "group_lesions",
    "lesion_scores",
    "load_experiment_config",
    "merge_datasets",
    "predict_split",
    "run_ablation",
    "score_model",
    "select_postprocessing",
]
