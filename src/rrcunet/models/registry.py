"""The one model registry that the Python API, the CLI and saved configs share.

A model name is a preset of constructor options on a network class; ``build_model(name, **kw)``
builds it, with ``kw`` overriding the preset's defaults. The names are

============ ================ ==========================================================
name         class            preset
============ ================ ==========================================================
rrcunet      UNet3D           ``block="rrc"`` — RRc-UNet 3D (§3.1, Table 1)
cgpd         UNet3D           ``block="cgpd"`` — §4.5 ablation
residual     UNet3D           ``block="residual"`` — §4.5 ablation
recurrent    UNet3D           ``block="recurrent"`` — §4.5 ablation
unet         UNet3D           ``block="unet"`` — plain 3D U-Net, same depth and filters
coordunet    CoordUNet3D      lung-parenchyma model (ref [31]), 1 → 2 channels
============ ================ ==========================================================

A saved config stores ``{"name": ..., **options}``; :func:`model_defaults` gives the full option
set of a name, so a config can always be written out completely.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from rrcunet.errors import ConfigError
from rrcunet.models.coordunet import CoordUNet3D
from rrcunet.models.unet3d import UNet3D


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: the class, the options its name fixes, and a one-line summary.

    Attributes:
        name: registry key.
        cls: the network class (keyword-only constructor).
        preset: options fixed by the name (e.g. ``block="cgpd"``); a caller may repeat them with the
            same value but not change them.
        summary: one line for ``rrcunet models``.
    """

    name: str
    cls: Callable[..., nn.Module]
    preset: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""

    def options(self) -> dict[str, Any]:
        """Every constructor option of this model with its default (preset applied)."""
        defaults = _constructor_options(self.cls)
        defaults.update(self.preset)
        return defaults


def _constructor_options(cls: type) -> dict[str, Any]:
    """Keyword-only constructor options of ``cls``, following ``**kwargs`` up the class hierarchy
    (``CoordUNet3D`` forwards its extra options to ``UNet3D``)."""
    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is nn.Module or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        for n, p in params.items():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in defaults:
                defaults[n] = p.default
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return defaults


_SPECS = (
    ModelSpec("rrcunet", UNet3D, {"block": "rrc"}, "RRc-UNet 3D (paper §3.1): RRc block at every level"),
    ModelSpec("cgpd", UNet3D, {"block": "cgpd"}, "ablation §4.5: 2 x Conv-GN-PReLU-Dropout per level"),
    ModelSpec("residual", UNet3D, {"block": "residual"}, "ablation §4.5: 2 residual Conv-GN-PReLU per level"),
    ModelSpec("recurrent", UNet3D, {"block": "recurrent"}, "ablation §4.5: 2 recurrent blocks (t=2) per level"),
    ModelSpec("unet", UNet3D, {"block": "unet"}, "plain 3D U-Net: 2 x Conv-GN-PReLU per level"),
    ModelSpec("coordunet", CoordUNet3D, {}, "Coordinate-UNet 3D lung model (ref [31]): CT -> background/lung"),
)

MODEL_REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Read-only mapping name → :class:`ModelSpec`; the only list of model names in the package."""


def list_models() -> list[str]:
    """Registered model names, in registry order (the paper's model first)."""
    return list(MODEL_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        ConfigError: unknown name; the message lists the known names.
    """
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}: known models are {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def model_defaults(name: str) -> dict[str, Any]:
    """Every option of model ``name`` with its default value (what a complete config stores)."""
    return get_spec(name).options()


def check_divisible(shape: Any, divisor: int, option: str) -> None:
    """Refuse (:class:`ConfigError`) a spatial ``shape`` that is not a multiple of ``divisor``; the
    message gives the nearest larger shape in the form of ``option`` (``--roi-size`` or a config
    key such as ``preprocess.target_shape``)."""
    if shape is not None and any(int(s) % divisor for s in shape):
        fixed = [str(-(-int(s) // divisor) * divisor) for s in shape]
        use = f"{option} {' '.join(fixed)}" if option.startswith("--") else f"{option}={','.join(fixed)}"
        raise ConfigError(f"{option} {tuple(int(s) for s in shape)} must be divisible by {divisor} (2**(levels-1) "
                          f"of this network); use {use}")


def build_model(name: str = "rrcunet", **options: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a key of :data:`MODEL_REGISTRY` (``"rrcunet"``, ``"cgpd"``, ``"residual"``,
            ``"recurrent"``, ``"unet"``, ``"coordunet"``).
        options: constructor options overriding the defaults (``levels``, ``base_filters``,
            ``filters``, ``t``, ``join``, ``up_channels``, ``upsample``, ``norm_groups``,
            ``dropout``, ``checkpointing``, ...; see :class:`UNet3D` and :class:`CoordUNet3D`).

    Returns:
        the network, an ``nn.Module`` mapping ``(B, C_in, X, Y, Z)`` to logits
        ``(B, C_out, X, Y, Z)``.

    Raises:
        ConfigError: unknown name, unknown option (the message lists the valid ones), an option
            that contradicts the name's preset, or an invalid value.

    Example::

        >>> net = build_model("rrcunet", levels=3, base_filters=4)
        >>> net(torch.zeros(1, 2, 16, 16, 8)).shape
        torch.Size([1, 3, 16, 16, 8])
    """
    spec = get_spec(name)
    valid = spec.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option(s) {', '.join(unknown)}: valid options are {', '.join(sorted(valid))}"
        )
    for key, fixed in spec.preset.items():
        if key in options and options[key] != fixed:
            raise ConfigError(
                f"model {name!r} fixes {key}={fixed!r}, got {key}={options[key]!r}; "
                f"choose the model by name instead (known models: {', '.join(MODEL_REGISTRY)})"
            )
    return spec.cls(**{**spec.preset, **options})
