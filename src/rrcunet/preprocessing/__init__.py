"""Preprocessing: the paper's §4.1 steps as one invertible pipeline.

Owns the geometric and intensity steps between a CT :class:`~rrcunet.io.Volume` and the
network input, each recorded in a frozen dataclass, and their inverse for network outputs:
orientation (:mod:`.orientation`), HU clip + per-scan z-normalisation (:mod:`.intensity`), lung
crop (:mod:`.crop`), resize (:mod:`.resample`), all wired by :mod:`.pipeline`.
"""

from rrcunet.preprocessing.crop import CropStep
from rrcunet.preprocessing.intensity import IntensityStep
from rrcunet.preprocessing.orientation import CANONICAL_DIRECTION, OrientationStep, orientation_step
from rrcunet.preprocessing.pipeline import (
    PreprocessConfig,
    PreprocessedCase,
    PreprocessRecord,
    ProbabilityMap,
    ResampleStep,
    forward_label,
    invert_prediction,
    invert_map,
    invert_probabilities,
    plan,
    preprocess,
)

__all__ = [
    "CANONICAL_DIRECTION",
    "CropStep",
    "IntensityStep",
    "OrientationStep",
    "PreprocessConfig",
    "PreprocessRecord",
    "PreprocessedCase",
    "ProbabilityMap",
    "ResampleStep",
    "forward_label",
    "invert_prediction",
    "invert_map",
    "invert_probabilities",
    "orientation_step",
    "plan",
    "preprocess",
]
