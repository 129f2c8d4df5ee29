"""Training losses (paper §3.2): Focal + Generalized Dice loss, built on MONAI's loss terms.

* :class:`FocalGeneralizedDiceLoss` — the paper's Eq. 4, with the two terms exposed.
* :class:`FrequencyGeneralizedDiceLoss` — MONAI's GDL with 1/frequency² class weights.
* :class:`DeepSupervision` — the loss over every scale of a deeply supervised network (not in the paper).
* :class:`LossConfig`, :func:`build_loss`, :data:`LOSSES` — typed options and the factory.
"""

from rrcunet.losses.config import LOSSES, LossConfig, build_loss
from rrcunet.losses.deep_supervision import DeepSupervision
from rrcunet.losses.focal_gdl import (
    GDL_WEIGHT_BASES,
    GDL_WEIGHT_TYPES,
    FocalGeneralizedDiceLoss,
    FrequencyGeneralizedDiceLoss,
)

__all__ = [
    "GDL_WEIGHT_BASES",
    "GDL_WEIGHT_TYPES",
    "LOSSES",
    "DeepSupervision",
    "FocalGeneralizedDiceLoss",
    "FrequencyGeneralizedDiceLoss",
    "LossConfig",
    "build_loss",
]
