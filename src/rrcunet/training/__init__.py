"""Training: the paper's §4.2 recipe on one process, several GPUs (DDP) or a CPU.

* :mod:`.config` — :class:`TrainConfig` (typed nested dataclasses), JSON files, ``key=value``
  overrides, packaged configs (``paper``, ``cpu_tumour``, ``cpu_lung``).
* :mod:`.trainer` — :func:`train` (run / resume a run folder), the epoch and validation steps.
* :mod:`.checkpoint` — self-describing model files (:func:`save_model`, :func:`load_model`) and
  training checkpoints, safetensors + JSON only (no pickle).
* :mod:`.distributed` — process group from the torchrun environment, pooled reductions.

Example::

    from rrcunet.training import load_config, train, load_model
    result = train(load_config("cpu_tumour", ["data.dataset=phantoms"]), "runs/cpu1")
    model, meta = load_model("runs/cpu1/best.safetensors")
"""

from rrcunet.training.checkpoint import ModelMeta, load_model, read_model_meta, save_model
from rrcunet.training.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
)
from rrcunet.training.trainer import TrainResult, resolve_config, train

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "ModelMeta",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "load_config",
    "load_model",
    "read_model_meta",
    "resolve_config",
    "save_model",
    "train",
]
