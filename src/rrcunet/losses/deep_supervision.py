"""Deep supervision (not in the paper; nnU-Net's default): one loss over a network's logits at
several scales, for a :class:`~rrcunet.models.unet3d.UNet3D` built with ``deep_supervision > 0``.

Owns :class:`DeepSupervision`, a thin subclass of MONAI's
:class:`monai.losses.DeepSupervisionLoss` (which sums ``weight_k × loss(logits_k, target_k)`` with
weights 1, 1/2, 1/4, ... for ``weight_mode="exp"``). The only change: MONAI shrinks the target with
``F.interpolate``, which PyTorch does not implement for integer tensors, so the label map is
shrunk as floats (nearest neighbour, exact for integers) and cast back to its dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss

__all__ = ["DeepSupervision"]


class DeepSupervision(DeepSupervisionLoss):
    """Weighted sum of ``loss`` over the logits of every scale a deeply supervised network returns.

    Args:
        loss: the per-scale loss (e.g. :class:`~rrcunet.losses.FocalGeneralizedDiceLoss`).
        weight_mode: MONAI's ``"exp"`` (1, 1/2, 1/4, ...; default), ``"same"`` or ``"two"``.

    Inputs:
        logits: one tensor (then this is ``loss``) or the list ``[full size, 1/2, 1/4, ...]``.
        target: integer label map at full size, ``(B, 1, X, Y, Z)``.

    Example::

        >>> from rrcunet.losses import DeepSupervision, FocalGeneralizedDiceLoss
        >>> ds = DeepSupervision(FocalGeneralizedDiceLoss())
        >>> logits = [torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)]
        >>> float(ds(logits, torch.randint(0, 3, (1, 1, 8, 8, 8)))) > 0
        True
    """

    def __init__(self, loss: torch.nn.Module, weight_mode: str = "exp") -> None:
        super().__init__(loss, weight_mode=weight_mode)  # type: ignore[arg-type]

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 - MONAI's name
        if input.shape[2:] != target.shape[2:]:
            target = F.interpolate(target.float(), size=input.shape[2:], mode=self.interp_mode).to(target.dtype)
        return self.loss(input, target)
