"""The training loss of RRc-UNet 3D (paper §3.2, Eq. 4): Focal loss + Generalized Dice loss.

This module owns :class:`FocalGeneralizedDiceLoss` and the GDL variant it uses,
:class:`FrequencyGeneralizedDiceLoss`. Both terms are computed by MONAI
(:class:`monai.losses.FocalLoss` and :class:`monai.losses.GeneralizedDiceLoss`); this module only
fixes the semantics the paper needs where MONAI's defaults differ from it:

* **alpha.** The paper's Eq. 1 is ``FL = -α_t (1 - p_t)^γ log p_t`` with α = 1 ("α_t = 1 for every
  class"). MONAI's *scalar* ``alpha`` with ``use_softmax=True`` means ``1 - α`` for the background
  channel and ``α`` for the others, so ``FocalLoss(alpha=1.0, use_softmax=True)`` would silently give
  the background a weight of **zero**. We therefore call MONAI with ``alpha=None`` and apply α_t
  ourselves as a per-class factor on the per-voxel loss (``reduction="none"``).
* **reduction.** MONAI's ``reduction="mean"`` divides by ``B × C × voxels``, i.e. it reports
  ``1/C`` of the usual multi-class focal loss. We sum over classes and average over batch and voxels,
  so that with γ = 0 and α = 1 the focal term equals :func:`torch.nn.functional.cross_entropy`.
* **include_background=False.** MONAI's FocalLoss drops channel 0 *before* its softmax, which
  renormalises the probabilities over the foreground classes only. We keep the softmax over all
  classes (the model's real probabilities) and drop only the background *term*.
* **GDL weights.** The paper weights each class by 1 / frequency² (Sudre et al. 2017). MONAI (like
  NiftyNet) uses 1 / voxel-count². The two differ by the constant N² (N = voxels per sample), which
  cancels in the ratio *except against the smoothing constants*: with counts, the weighted sums of a
  256×256×48 sample are ~1e-4, so the default ``smooth_nr = smooth_dr = 1e-5`` shrinks the loss
  (measured on a fairly good prediction: by 0.2 % with a 2,048-voxel tumour, by 11 % with a
  32,000-voxel one). With frequencies the sums are O(N) and the smoothing constants are negligible,
  as they are meant to be. ``gdl_weight_basis``
  chooses; ``"frequency"`` (the paper) is the default.
* **absent classes (MONAI's rule, kept).** A class absent from a sample's ground truth has an
  infinite weight; MONAI replaces it with the largest finite weight of that sample, so predicting a
  tumour where there is none is penalised as much as missing the rarest present class. If no class is
  present (only possible with ``include_background=False`` on an all-background patch), all weights
  are 0 and the GDL is ``1 - smooth_nr / smooth_dr`` (0 with the defaults) with zero gradient.

MONAI's own :class:`monai.losses.GeneralizedDiceFocalLoss` is not used: its focal term is the
*sigmoid* (per-channel binary) focal loss, not the softmax multi-class loss of Eq. 1, and it does not
expose the two terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from monai.losses import FocalLoss, GeneralizedDiceLoss
from monai.networks import one_hot
from torch import nn

from rrcunet.errors import ConfigError, InputError

__all__ = ["FocalGeneralizedDiceLoss", "FrequencyGeneralizedDiceLoss", "GDL_WEIGHT_BASES", "GDL_WEIGHT_TYPES"]

GDL_WEIGHT_TYPES: tuple[str, ...] = ("square", "simple", "uniform")
"""``w_type`` of the GDL: 1/f², 1/f or no weighting (MONAI's names)."""

GDL_WEIGHT_BASES: tuple[str, ...] = ("frequency", "count")
"""What the GDL class weight is computed from: label frequency (paper) or voxel count (MONAI)."""


def _check_non_negative(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"loss option {name} must be a number, not {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"loss option {name} must be a finite number >= 0, not {value}")
    return value


class FrequencyGeneralizedDiceLoss(GeneralizedDiceLoss):
    """MONAI's :class:`~monai.losses.GeneralizedDiceLoss`, with class weights from label *frequencies*.

    Only :meth:`w_func` is replaced; everything else (soft TP/FP/FN, MONAI's rule for absent classes,
    smoothing, reductions) is MONAI's. ``weight_basis="count"`` gives MONAI's behaviour exactly.

    Args:
        weight_basis: ``"frequency"`` (weights from ``count / total``, the paper's 1/frequency²) or
            ``"count"`` (weights from raw voxel counts, MONAI/NiftyNet). The total is the sum of the
            ground-truth counts over the channels that take part (all voxels of the sample when the
            background is included), or over the batch too when ``batch=True``.
        kwargs: passed to :class:`monai.losses.GeneralizedDiceLoss` (``include_background``,
            ``softmax``, ``w_type``, ``smooth_nr``, ``smooth_dr``, ``batch``, ``reduction``...).
    """

    def __init__(self, *, weight_basis: Literal["frequency", "count"] = "frequency", **kwargs) -> None:
        super().__init__(**kwargs)
        if weight_basis not in GDL_WEIGHT_BASES:
            raise ConfigError(f"gdl_weight_basis must be one of {GDL_WEIGHT_BASES}, not {weight_basis!r}")
        self.weight_basis = weight_basis

    def w_func(self, grnd: torch.Tensor) -> torch.Tensor:  # noqa: D102 - MONAI hook
        if self.weight_basis == "frequency":
            # grnd is (B, C) or (C,) with batch=True; the channel axis is the last one.
            # clamp(min=1): an all-absent sample gives 0/1 = 0 → infinite weight → MONAI's rule.
            total = grnd.sum(dim=-1, keepdim=True).clamp(min=1.0)
            grnd = grnd / total
        return super().w_func(grnd)


class FocalGeneralizedDiceLoss(nn.Module):
    """Focal loss + Generalized Dice loss on softmax probabilities (paper Eq. 4), terms exposed.

    ``loss = lambda_focal * focal + lambda_gdl * gdl`` where

    * ``focal = mean over batch and voxels of  Σ_c  a_c · t_c · -(1 - p_c)^γ · log p_c``
      (``t`` one-hot target, ``p = softmax(logits)``, ``a_c`` = α for class c, 0 for the background
      when ``include_background=False``), i.e. ``-α_t (1 - p_t)^γ log p_t`` averaged over voxels;
    * ``gdl = 1 - (2 Σ_c w_c Σ_v p_cv t_cv + smooth_nr) / (Σ_c w_c Σ_v (p_cv + t_cv) + smooth_dr)``,
      ``w_c = 1 / f_c²`` (f_c = frequency of class c in the sample's ground truth), computed per
      sample and averaged over the batch (``gdl_batch=False``) — MONAI's GeneralizedDiceLoss.

    With ``gamma=0`` and ``alpha=1`` the focal term is the cross-entropy. See the module docstring
    for where and why the semantics differ from MONAI's defaults.

    Args:
        gamma: focusing exponent γ >= 0 (paper: 2).
        alpha: α_t of Eq. 1, a weight >= 0 for each class's voxels: one number for every class
            (paper: 1) or one per class (length = number of logit channels, background first).
        lambda_focal: weight of the focal term (>= 0).
        lambda_gdl: weight of the GDL term (>= 0). Not both 0.
        include_background: if False, channel 0 takes no part in either term (the softmax is still
            over all channels). Then an all-background patch gives a loss of 0 and no gradient (no
            foreground voxel for the focal term, no present class for the GDL), and tumour predicted on
            background voxels is penalised only through the GDL of patches that hold a foreground class.
        gdl_w_type: ``"square"`` (1/f², paper), ``"simple"`` (1/f) or ``"uniform"`` (no weights).
        gdl_weight_basis: ``"frequency"`` (paper) or ``"count"`` (MONAI); see
            :class:`FrequencyGeneralizedDiceLoss`.
        smooth_nr: constant added to the GDL numerator (>= 0).
        smooth_dr: constant added to the GDL denominator (>= 0).
        gdl_batch: sum the GDL areas over the batch before the ratio (MONAI's ``batch``).
        validate_target: check that the label map holds integers in ``[0, C-1]`` (costs one
            device synchronisation per call).

    Inputs:
        logits: ``(B, C, *spatial)`` raw network outputs, C >= 2 (RRc-UNet 3D: C = 3, ``(B, 3, X, Y, Z)``).
        target: integer label map ``(B, 1, *spatial)`` or ``(B, *spatial)``, values in ``[0, C-1]``.

    Returns:
        a scalar tensor. The unweighted terms of the last call are kept, detached, in
        :attr:`last_terms` (``{"focal", "gdl", "loss"}``); :meth:`forward_terms` returns them with
        their graphs.

    Example::

        >>> import torch
        >>> from rrcunet.losses import FocalGeneralizedDiceLoss
        >>> loss_fn = FocalGeneralizedDiceLoss(gamma=2.0, alpha=1.0)
        >>> logits = torch.randn(2, 3, 16, 16, 8, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 16, 16, 8))
        >>> loss = loss_fn(logits, labels)
        >>> loss.backward()
        >>> sorted(loss_fn.last_terms)
        ['focal', 'gdl', 'loss']
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] = 1.0,
        lambda_focal: float = 1.0,
        lambda_gdl: float = 1.0,
        include_background: bool = True,
        gdl_w_type: Literal["square", "simple", "uniform"] = "square",
        gdl_weight_basis: Literal["frequency", "count"] = "frequency",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        gdl_batch: bool = False,
        validate_target: bool = True,
    ) -> None:
        super().__init__()
        self.gamma = _check_non_negative("gamma", gamma)
        self.lambda_focal = _check_non_negative("lambda_focal", lambda_focal)
        self.lambda_gdl = _check_non_negative("lambda_gdl", lambda_gdl)
        if self.lambda_focal == 0 and self.lambda_gdl == 0:
            raise ConfigError("loss options lambda_focal and lambda_gdl are both 0: the loss would be constant; "
                              "set at least one of them > 0")
        if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
            self.alpha: float | tuple[float, ...] = _check_non_negative("alpha", alpha)
        elif isinstance(alpha, Sequence) and not isinstance(alpha, str) and len(alpha) > 0:
            self.alpha = tuple(_check_non_negative(f"alpha[{i}]", a) for i, a in enumerate(alpha))
        else:
            raise ConfigError(f"loss option alpha must be a number or a non-empty list of numbers (one per class), "
                              f"not {alpha!r}")
        if gdl_w_type not in GDL_WEIGHT_TYPES:
            raise ConfigError(f"loss option gdl_w_type must be one of {GDL_WEIGHT_TYPES}, not {gdl_w_type!r}")
        smooth_nr = _check_non_negative("smooth_nr", smooth_nr)
        smooth_dr = _check_non_negative("smooth_dr", smooth_dr)
        self.include_background = bool(include_background)
        self.validate_target = bool(validate_target)

        # reduction="none": we reduce ourselves (sum over classes, mean over voxels), see module doc.
        # alpha=None and include_background=True: α and the background are applied in forward_terms.
        self.focal = FocalLoss(include_background=True, to_onehot_y=False, gamma=self.gamma, alpha=None,
                               weight=None, use_softmax=True, reduction="none")
        self.gdl = FrequencyGeneralizedDiceLoss(
            weight_basis=gdl_weight_basis, include_background=self.include_background, to_onehot_y=False,
            softmax=True, w_type=gdl_w_type, reduction="mean", smooth_nr=smooth_nr, smooth_dr=smooth_dr,
            batch=bool(gdl_batch),
        )
        self.last_terms: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, alpha={self.alpha}, lambda_focal={self.lambda_focal}, "
                f"lambda_gdl={self.lambda_gdl}, include_background={self.include_background}, "
                f"gdl_w_type={self.gdl.w_type!s}, gdl_weight_basis={self.gdl.weight_basis!r}, "
                f"smooth_nr={self.gdl.smooth_nr}, smooth_dr={self.gdl.smooth_dr}, gdl_batch={self.gdl.batch}")

    def _check_inputs(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validate shapes/values and return the target as ``(B, 1, *spatial)``."""
        if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise InputError(f"loss inputs must be torch tensors, got logits {type(logits).__name__} and "
                             f"target {type(target).__name__}")
        if logits.ndim < 3:
            raise InputError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
        n_classes = logits.shape[1]
        if n_classes < 2:
            raise InputError(f"logits have {n_classes} channel (shape {tuple(logits.shape)}); this softmax loss needs "
                             "one channel per class (C >= 2: background, lung, tumour)")
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[0] != logits.shape[0] \
                or target.shape[2:] != logits.shape[2:]:
            raise InputError(f"target shape {tuple(target.shape)} does not fit logits shape {tuple(logits.shape)}: "
                             f"expected an integer label map of shape {(logits.shape[0], 1, *logits.shape[2:])} "
                             f"or {(logits.shape[0], *logits.shape[2:])} (not one-hot)")
        if isinstance(self.alpha, tuple) and len(self.alpha) != n_classes:
            raise ConfigError(f"loss option alpha has {len(self.alpha)} values {self.alpha} but the logits "
                              f"(shape {tuple(logits.shape)}) have {n_classes} classes; give one alpha per class")
        if target.dtype.is_complex:
            raise InputError(f"target must be an integer label map, got dtype {target.dtype}")
        if self.validate_target and target.numel() > 0:
            lo, hi = torch.aminmax(target.detach())
            lo, hi = float(lo), float(hi)
            if lo < 0 or hi > n_classes - 1:
                raise InputError(f"target holds labels in [{lo:g}, {hi:g}] but the logits have {n_classes} classes: "
                                 f"expected labels 0..{n_classes - 1}")
            if target.is_floating_point() and bool((target != torch.round(target)).any()):
                raise InputError("target holds non-integer values; expected an integer label map "
                                 "(e.g. resample labels with nearest neighbour)")
        return target

    def forward_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the terms with their graphs.

        Returns:
            ``{"focal": unweighted focal term, "gdl": unweighted GDL term,
            "loss": lambda_focal * focal + lambda_gdl * gdl}``, all scalar tensors.
        """
        target = self._check_inputs(logits, target)
        logits = logits.float()  # GDL sums can exceed float16 range; softmax in float32.
        n_classes = logits.shape[1]
        target_1h = one_hot(target, num_classes=n_classes, dim=1)

        per_element = self.focal(logits, target_1h)  # (B, C, *spatial), zero off the true class
        if isinstance(self.alpha, tuple):
            class_factor = torch.tensor(self.alpha, dtype=per_element.dtype, device=per_element.device)
        else:
            class_factor = torch.full((n_classes,), self.alpha, dtype=per_element.dtype, device=per_element.device)
        if not self.include_background:
            class_factor[0] = 0.0
        class_factor = class_factor.view(1, n_classes, *([1] * (logits.ndim - 2)))
        focal = (per_element * class_factor).sum(dim=1).mean()

        gdl = self.gdl(logits, target_1h)
        total = self.lambda_focal * focal + self.lambda_gdl * gdl
        terms = {"focal": focal, "gdl": gdl, "loss": total}
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return terms

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return ``lambda_focal * focal + lambda_gdl * gdl`` (see the class docstring)."""
        return self.forward_terms(logits, target)["loss"]
