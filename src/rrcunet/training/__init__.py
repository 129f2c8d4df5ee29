"""Training: the paper's §4.2 recipe on one process, several GPUs (DDP) or a CPU.

* :mod:`.config` — :class:`TrainConfig` (typed nested dataclasses), JSON files, ``key=value``
  overrides, packaged configs (``paper``, ``cpu_tumour``, ``cpu_lung``).
* :mod:`.trainer` — :func:`train` (run / resume a run folder), the epoch and validation steps.
* :mod:`.checkpoint` — training checkpoints (optimiser, RNG, epoch), safetensors + JSON only (no
  pickle); model files are :mod:`rrcunet.models.model_file`'s.
* :mod:`.distributed` — process group from the torchrun environment, pooled reductions.

Example::

    from rrcunet.training import load_config, train
    from rrcunet.models.model_file import load_model
    result = train(load_config("cpu_tumour", ["data.dataset=phantoms"]), "runs/cpu1")
    model, meta = load_model("runs/cpu1/best.safetensors")
"""

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
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "load_config",
    "resolve_config",
    "train",
]
