"""Evaluation (paper §4.3–4.4): per-case metrics, their two aggregations and the Figure 7 histogram.

See :mod:`rrcunet.evaluation.metrics` and ``docs/metrics.md`` for definitions and conventions.
"""

from rrcunet.evaluation.metrics import (
    CLASS_NAMES,
    DICE_HISTOGRAM_EDGES,
    TUMOUR_LABEL,
    CaseMetrics,
    DiceHistogram,
    EvaluationSummary,
    MeanOfCases,
    VoxelPooled,
    aggregate_mean_of_cases,
    aggregate_voxel_pooled,
    confusion_counts,
    dice_histogram,
    evaluate_case,
    evaluate_volumes,
    hd95,
    overlap_scores,
    summarize,
    surface_dice,
    surface_distances,
)

__all__ = [
    "CLASS_NAMES",
    "DICE_HISTOGRAM_EDGES",
    "TUMOUR_LABEL",
    "CaseMetrics",
    "DiceHistogram",
    "EvaluationSummary",
    "MeanOfCases",
    "VoxelPooled",
    "aggregate_mean_of_cases",
    "aggregate_voxel_pooled",
    "confusion_counts",
    "dice_histogram",
    "evaluate_case",
    "evaluate_volumes",
    "hd95",
    "overlap_scores",
    "summarize",
    "surface_dice",
    "surface_distances",
]
