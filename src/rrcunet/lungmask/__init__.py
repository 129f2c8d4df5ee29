"""Lung-region extraction: the second input channel of RRc-UNet 3D.

Owns the :class:`LungExtractor` protocol (a CT :class:`~rrcunet.io.Volume` in, its 0/1 lung
region on exactly the same grid out), the classical extractor that satisfies it, and
:data:`LUNGMASK_METHODS`, the one registry of method names that the CLI's ``--method`` /
``--lung-method`` choices read.

Methods:

* ``"classical"`` (:mod:`.classical`, :class:`ClassicalLungExtractor`): threshold + morphology,
  no weights, tumours touching the wall or mediastinum filled in. The default.
* ``"coordunet"``: the paper's trained Coordinate-UNet 3D extractor (ref. [31]), a lung model
  file run through the inference :class:`~rrcunet.inference.Predictor`; it lives in
  :mod:`rrcunet.inference.predictor`, which also holds :func:`~rrcunet.inference.make_lung_extractor`,
  the one place where a method name becomes an extractor.

Preprocessing never picks an extractor: it takes the lung region as an argument.

Example::

    from rrcunet.io import read_image
    from rrcunet.lungmask import ClassicalLungExtractor, extract_lungs
    lungs = extract_lungs(read_image("ct.nii.gz"))                 # 0/1 Volume on the CT grid
    lungs = ClassicalLungExtractor(ClassicalLungConfig(fill_radius_mm=20))(ct)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Protocol

from rrcunet.errors import ConfigError
from rrcunet.io.volume import Volume
from rrcunet.lungmask.classical import ClassicalLungConfig, body_air_ml, extract_lungs_classical


class LungExtractor(Protocol):
    """Anything that maps a CT (HU) to its lung region: a 0/1 uint8 label Volume on the CT's grid."""

    name: str

    def __call__(self, ct: Volume) -> Volume: ...


@dataclass(frozen=True)
class ClassicalLungExtractor:
    """The classical extractor (:func:`extract_lungs_classical`) as a :class:`LungExtractor`."""

    config: ClassicalLungConfig = ClassicalLungConfig()
    name: str = "classical"

    def __call__(self, ct: Volume) -> Volume:
        return extract_lungs_classical(ct, self.config)


@dataclass(frozen=True)
class LungMaskMethod:
    """One entry of :data:`LUNGMASK_METHODS`: the ``--method`` value, a line for ``--help``, and
    whether it needs a model file (``--model`` / ``--lung-model``)."""

    name: str
    summary: str
    needs_model: bool


#: Registry of lung-extractor method names, read by the CLI's choices.
LUNGMASK_METHODS: dict[str, LungMaskMethod] = {
    "classical": LungMaskMethod("classical", "threshold + morphology, no weights (default)", False),
    "coordunet": LungMaskMethod("coordunet", "trained Coordinate-UNet 3D (needs --model)", True),
}


def check_method(method: str, model: str | os.PathLike[str] | None = None) -> LungMaskMethod:
    """Return the registry entry for ``method``; refuse an unknown method or a missing/extra model.

    Cheap, so callers (the CLI) can fail before reading a large CT.
    """
    try:
        entry = LUNGMASK_METHODS[method]
    except KeyError:
        raise ConfigError(f"unknown lung-mask method {method!r}; choose one of {sorted(LUNGMASK_METHODS)}") from None
    if entry.needs_model and model is None:
        raise ConfigError(f"the {method!r} lung extractor needs --model PATH (a trained checkpoint); "
                          "or use --method classical, which needs none")
    if not entry.needs_model and model is not None:
        raise ConfigError(f"the {method!r} lung extractor takes no model; drop --model")
    return entry


def extract_lungs(ct: Volume, *, method: str = "classical", model: str | os.PathLike[str] | None = None,
                  **options: Any) -> Volume:
    """Lung region of ``ct`` by the classical extractor, as a 0/1 uint8 label Volume on ``ct``'s grid.

    Args:
        ct: chest CT in HU.
        method: ``"classical"``; a trained extractor (``"coordunet"``) is a network and is built
            by :func:`rrcunet.inference.make_lung_extractor`.
        model: must be ``None`` for the classical method.
        **options: the fields of :class:`ClassicalLungConfig` (``fill_radius_mm=20``) or
            ``config=ClassicalLungConfig(...)``.

    Raises:
        ConfigError: unknown method or option, or a missing/superfluous model.
    """
    check_method(method, model)
    if method != "classical":
        raise ConfigError(f"the {method!r} lung extractor runs a trained network: build it with "
                          f"rrcunet.inference.make_lung_extractor({method!r}, model=PATH)")
    config = options.pop("config", None)
    if config is not None and options:
        raise ConfigError(f"pass either config= or individual options, not both (got {sorted(options)})")
    if config is None:
        valid = {f.name for f in dataclasses.fields(ClassicalLungConfig)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for the 'classical' lung extractor; "
                              f"valid options: {sorted(valid)}")
        config = ClassicalLungConfig(**options)
    return ClassicalLungExtractor(config)(ct)


__all__ = [
    "LUNGMASK_METHODS", "ClassicalLungConfig", "ClassicalLungExtractor", "LungExtractor", "LungMaskMethod",
    "body_air_ml", "check_method", "extract_lungs", "extract_lungs_classical",
]
