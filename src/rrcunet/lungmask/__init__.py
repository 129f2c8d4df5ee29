"""Lung-region extraction: the second input channel of RRc-UNet 3D.

Owns :func:`extract_lungs` and :data:`LUNGMASK_METHODS`, the one registry of extractor methods
that the ``rrcunet lungmask`` command (and ``preprocess`` when no mask is given) read, so the
CLI choices and the library can never drift apart.

Methods:

* ``"classical"`` (:mod:`.classical`): threshold + morphology, no weights, tumours touching the
  wall or mediastinum filled in. The default.
* ``"coordunet"``: the paper's trained Coordinate-UNet 3D extractor (ref. [31]); needs a checkpoint
  (``model=PATH``). Hook only for now: the network lives in :mod:`rrcunet.models.coordunet`, and
  loading a trained lung-extractor checkpoint is not wired in yet.

Example::

    from rrcunet.io import read_image, write_volume
    from rrcunet.lungmask import extract_lungs
    lungs = extract_lungs(read_image("ct.nii.gz"))                 # 0/1 Volume on the CT grid
    lungs = extract_lungs(ct, method="classical", fill_radius_mm=20)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rrcunet.errors import ConfigError
from rrcunet.io.volume import Volume
from rrcunet.lungmask.classical import ClassicalLungConfig, extract_lungs_classical


@dataclass(frozen=True)
class LungMaskMethod:
    """One entry of :data:`LUNGMASK_METHODS`.

    Args:
        name: the key (``--method`` value).
        summary: one line for ``--help``.
        needs_model: True when the method needs a checkpoint (``model=`` / ``--model``).
        run: ``run(ct, model=..., **options) -> Volume`` (0/1 label on ``ct``'s grid).
    """

    name: str
    summary: str
    needs_model: bool
    run: Callable[..., Volume]


def _run_classical(ct: Volume, *, model: str | os.PathLike[str] | None = None, **options: Any) -> Volume:
    if model is not None:
        raise ConfigError("the 'classical' lung extractor takes no model; drop --model or use --method coordunet")
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
    return extract_lungs_classical(ct, config)


def _run_coordunet(ct: Volume, *, model: str | os.PathLike[str] | None = None, **options: Any) -> Volume:
    """The trained Coordinate-UNet 3D lung extractor (paper ref. [31]).

    ``model`` is a lung model file written by the trainer (task ``"lung"``, e.g. from the
    ``cpu_lung`` config). The model runs through the same :class:`rrcunet.inference.Predictor` as
    the tumour model: whole-scan preprocessing with the config stored in the model file, then
    the exact inverse onto ``ct``'s grid. ``options`` may hold ``device``.
    """
    if model is None:
        raise ConfigError("the 'coordunet' lung extractor needs --model PATH (a trained Coordinate-UNet "
                          "lung model file); or use --method classical, which needs none")
    # Imported here: rrcunet.inference imports this module.
    from rrcunet.inference import InferenceConfig, Predictor

    unknown = sorted(set(options) - {"device"})
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for the 'coordunet' lung extractor; valid options: ['device']")
    predictor = Predictor.from_file(model, config=InferenceConfig(device=options.get("device", "cpu")))
    if predictor.meta.task != "lung":
        raise ConfigError(f"{model} is a {predictor.meta.task!r} model, not a lung model (task 'lung'); "
                          "train one with `rrcunet train --config cpu_lung`")
    labels = predictor.predict_volume(ct).labels
    return Volume((labels.array > 0).astype("uint8"), ct.geometry, "label", {"source": ct.meta.get("source")})


#: Registry of lung-extractor methods, read by the CLI (``--method`` choices) and by
#: :func:`rrcunet.preprocessing.preprocess` (``PreprocessConfig.lung_method``).
LUNGMASK_METHODS: dict[str, LungMaskMethod] = {
    "classical": LungMaskMethod("classical", "threshold + morphology, no weights (default)", False, _run_classical),
    "coordunet": LungMaskMethod("coordunet", "trained Coordinate-UNet 3D (needs --model)", True, _run_coordunet),
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
    """Lung region of ``ct`` as a 0/1 uint8 label Volume on exactly ``ct``'s grid.

    Args:
        ct: chest CT in HU.
        method: a key of :data:`LUNGMASK_METHODS` (``"classical"`` or ``"coordunet"``).
        model: checkpoint path for methods that need one.
        **options: method options, e.g. the fields of :class:`ClassicalLungConfig`
            (``fill_radius_mm=20``) or ``config=ClassicalLungConfig(...)``.

    Raises:
        ConfigError: unknown method or option, or a missing/superfluous model.
    """
    return check_method(method, model).run(ct, model=model, **options)


__all__ = [
    "LUNGMASK_METHODS", "ClassicalLungConfig", "LungMaskMethod", "check_method", "extract_lungs",
    "extract_lungs_classical",
]
