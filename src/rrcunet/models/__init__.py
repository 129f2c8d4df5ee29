"""Models: RRc-UNet 3D, the §4.5 ablation variants, the plain 3D U-Net and the lung Coordinate-UNet.

Everything is built through one registry shared by the API, the CLI (``rrcunet models``) and
configs::

    >>> from rrcunet.models import build_model, list_models
    >>> list_models()
    ['rrcunet', 'cgpd', 'residual', 'recurrent', 'unet', 'coordunet']
    >>> net = build_model("rrcunet")          # Table 1: 2 -> 3 channels, 5 levels, 32..512 filters

Layout: ``blocks/`` holds what one level computes (RRc, CGPD, residual, recurrent, plain);
``unet3d.py`` wires blocks into encoder, decoder and head; ``coordunet.py`` adds CoordConv
channels; ``registry.py`` names the presets; ``summary.py`` counts parameters;
``model_file.py`` writes and reads model files (weights + typed :class:`ModelMeta`, no pickle).
See docs/architecture.md for the paper-to-code mapping.
"""

from rrcunet.models.blocks import BLOCK_REGISTRY
from rrcunet.models.coordunet import CoordUNet3D
from rrcunet.models.model_file import ModelMeta, load_model, read_model_meta, save_model
from rrcunet.models.registry import (
    MODEL_REGISTRY,
    ModelSpec,
    build_model,
    check_divisible,
    get_spec,
    list_models,
    model_defaults,
)
from rrcunet.models.summary import count_parameters, parameter_table
from rrcunet.models.unet3d import UNet3D

__all__ = [
    "BLOCK_REGISTRY",
    "MODEL_REGISTRY",
    "CoordUNet3D",
    "ModelMeta",
    "ModelSpec",
    "UNet3D",
    "build_model",
    "check_divisible",
    "count_parameters",
    "get_spec",
    "list_models",
    "load_model",
    "model_defaults",
    "parameter_table",
    "read_model_meta",
    "save_model",
]
