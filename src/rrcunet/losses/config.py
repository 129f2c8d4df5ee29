"""Typed loss configuration and the factory the trainer calls: :class:`LossConfig`, :func:`build_loss`.

A :class:`LossConfig` is plain data (saved with every checkpoint as ``config.to_dict()``); the loss is
rebuilt from it with :func:`build_loss`. ``LOSSES`` is the one registry of loss names shared by the
trainer, the configs and the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rrcunet.config import config_to_dict
from rrcunet.errors import ConfigError
from rrcunet.losses.focal_gdl import FocalGeneralizedDiceLoss

__all__ = ["LOSSES", "LossConfig", "build_loss"]

LOSSES: dict[str, type] = {"focal_gdl": FocalGeneralizedDiceLoss}
"""Loss name → class. ``"focal_gdl"`` is the paper's Focal + Generalized Dice loss (Eq. 4)."""


@dataclass(frozen=True)
class LossConfig:
    """Every option of the training loss; the defaults are the paper's (§3.2).

    Attributes mirror the keyword arguments of :class:`~rrcunet.losses.FocalGeneralizedDiceLoss`
    (see there for their meaning), plus ``name``, a key of :data:`LOSSES`.
    """

    name: str = "focal_gdl"
    gamma: float = 2.0
    alpha: float | tuple[float, ...] = 1.0
    lambda_focal: float = 1.0
    lambda_gdl: float = 1.0
    include_background: bool = True
    gdl_w_type: str = "square"
    gdl_weight_basis: str = "frequency"
    smooth_nr: float = 1e-5
    smooth_dr: float = 1e-5
    gdl_batch: bool = False

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ConfigError(f"unknown loss name {self.name!r}; expected one of {sorted(LOSSES)}")
        if isinstance(self.alpha, Sequence) and not isinstance(self.alpha, str):
            object.__setattr__(self, "alpha", tuple(self.alpha))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LossConfig":
        """Build from a mapping (e.g. a JSON config); unknown keys are an error that lists the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"loss configuration must be a mapping of options, not {type(data).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown loss option(s) {unknown}; valid options are {valid}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (alpha as a list when per class)."""
        return config_to_dict(self)


def build_loss(config: LossConfig | Mapping[str, Any] | None = None, /, **overrides: Any) -> FocalGeneralizedDiceLoss:
    """Build the training loss from a :class:`LossConfig`, a mapping, keyword options, or nothing (paper defaults).

    Keyword ``overrides`` replace the matching entries of ``config``.

    Example::

        >>> from rrcunet.losses import build_loss
        >>> loss_fn = build_loss({"gamma": 2.0, "alpha": [1.0, 1.0, 2.0]}, lambda_gdl=0.5)
        >>> loss_fn.lambda_gdl
        0.5
    """
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, LossConfig):
        data = config.to_dict()
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ConfigError(f"build_loss takes a LossConfig or a mapping of options, not {type(config).__name__}")
    data.update(overrides)
    cfg = LossConfig.from_dict(data)
    kwargs = cfg.to_dict()
    cls = LOSSES[kwargs.pop("name")]
    return cls(**kwargs)
