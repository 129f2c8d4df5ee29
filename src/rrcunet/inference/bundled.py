"""The bundled demo models: where they live in the installed package and what to do when absent.

The package ships two small model files in ``rrcunet/weights/`` (see that folder's README.md):
``demo_tumour.safetensors`` (RRc-UNet 3D, task ``"tumour"``) and ``demo_lung.safetensors``
(Coordinate-UNet, task ``"lung"``). They are found with :mod:`importlib.resources`, so they work
from a wheel, an editable install or a source checkout. ``rrcunet predict`` and ``rrcunet demo``
use them when no ``--model`` is given.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rrcunet.errors import ConfigError

#: task -> file name inside ``rrcunet/weights``.
BUNDLED_MODELS: dict[str, str] = {"tumour": "demo_tumour.safetensors", "lung": "demo_lung.safetensors"}

#: How to make the bundled files (the training recipe of docs/training.md, "CPU recipe"). They were trained
#: before the fused GroupNorm -> PReLU kernel existed, so the commands turn it off (RRCUNET_FUSED_KERNELS=0)
#: to repeat the same arithmetic; with it on, training is faster and the weights differ by rounding.
MAKE_COMMANDS: dict[str, str] = {
    "tumour": ("rrcunet phantoms -n 200 --seed 1 --size small --val-fraction 0 "
               "--set kind_weights=[0.15,0.15,0.2,0.25,0.25] --set n_tumours_weights=[0.05,0.35,0.35,0.25] "
               "-o data/subsolid_multi200 && "
               "rrcunet phantoms -n 250 --seed 0 --size small -o data/phantoms250 && "
               "RRCUNET_FUSED_KERNELS=0 rrcunet train --config cpu_tumour -o runs/demo_tumour data.dataset=data/subsolid_multi200 "
               "data.val_dataset=data/phantoms250 && "
               "rrcunet experiment postprocess runs/demo_tumour --data data/phantoms250 --subset val "
               "-o runs/demo_tumour/postprocess --write-model runs/demo_tumour/demo_tumour.safetensors && "
               "cp runs/demo_tumour/demo_tumour.safetensors src/rrcunet/weights/demo_tumour.safetensors"),
    "lung": ("rrcunet phantoms -n 48 --seed 0 --size small -o data/phantoms && RRCUNET_FUSED_KERNELS=0 rrcunet train --config cpu_lung -o runs/demo_lung "
             "data.dataset=data/phantoms && cp runs/demo_lung/best.safetensors "
             "src/rrcunet/weights/demo_lung.safetensors"),
}


def bundled_model_path(task: str = "tumour") -> Path:
    """Path of the bundled model file of ``task`` (``"tumour"`` or ``"lung"``).

    Raises:
        ConfigError: unknown task, or the file is not installed; the message names the missing
            file, the command that makes it, and ``--model PATH`` as the alternative.
    """
    if task not in BUNDLED_MODELS:
        raise ConfigError(f"no bundled model for task {task!r}; tasks with one: {sorted(BUNDLED_MODELS)}")
    name = BUNDLED_MODELS[task]
    path = Path(str(resources.files("rrcunet").joinpath("weights", name)))
    if not path.is_file():
        raise ConfigError(
            f"the bundled {task} model {path} is not installed in this copy of rrcunet. Pass a model file with "
            f"--model PATH, or make the bundled one with: {MAKE_COMMANDS[task]}"
        )
    return path
