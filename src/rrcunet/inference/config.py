"""Typed options of inference: how the network is run (:class:`InferenceConfig`) and what is
done to its label map afterwards (:class:`PostprocessConfig`).

Both are frozen dataclasses with keyword-only fields, validated on construction, and written
into every prediction's JSON (``options``) so a prediction can be reproduced from its own record.
The preprocessing options are *not* here: they come from the model file
(:attr:`rrcunet.training.checkpoint.ModelMeta.preprocess`), which is what the network was
trained with; only the resolution may be overridden, for native-resolution sliding-window
inference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from rrcunet.config import config_to_dict
from rrcunet.errors import ConfigError
from rrcunet.lungmask import LUNGMASK_METHODS

DEVICES = ("auto", "cpu", "cuda")


def is_device(text: str) -> bool:
    """Whether ``text`` names a device: one of :data:`DEVICES` or ``cuda:N``."""
    return text in DEVICES or re.fullmatch(r"cuda:\d+", text) is not None


@dataclass(frozen=True, kw_only=True)
class PostprocessConfig:
    """Clean-up of the predicted tumour (label 2) after the network, on the original CT grid.

    The paper uses none ("without any post-processing operation", §1); both steps are therefore
    opt-in except the lung-region rule, which is on by default because the network is given the
    lung region as input and a "tumour" entirely outside it (in the body wall, the abdomen) is
    outside the task. Components are 26-connected (face, edge or corner neighbours).

    Args:
        min_tumour_ml: drop tumour components smaller than this volume in mL (0 keeps all).
            ``None`` (the default): the value recorded in the model file
            (:attr:`~rrcunet.training.checkpoint.ModelMeta.postprocess`, chosen on validation data by
            ``rrcunet experiment postprocess``), or 0 when the model file records none. The
            :class:`~rrcunet.inference.Predictor` resolves it when it is built.
        keep_outside_lung: keep tumour components that do not touch the lung region. Default
            ``False``: a component with no voxel inside the lung region (the lung channel: lung
            parenchyma including tumours inside or touching it) is dropped.

    A dropped component's voxels become lung (1) where they lie inside the lung region and
    background (0) elsewhere.
    """

    min_tumour_ml: float | None = None
    keep_outside_lung: bool = False

    def __post_init__(self) -> None:
        if self.min_tumour_ml is None:
            return
        if not (isinstance(self.min_tumour_ml, (int, float)) and not isinstance(self.min_tumour_ml, bool)
                and math.isfinite(self.min_tumour_ml) and self.min_tumour_ml >= 0):
            raise ConfigError(f"min_tumour_ml must be a number >= 0 (mL), not {self.min_tumour_ml!r}")
        object.__setattr__(self, "min_tumour_ml", float(self.min_tumour_ml))

    @property
    def is_noop(self) -> bool:
        return not self.min_tumour_ml and self.keep_outside_lung


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """How :class:`~rrcunet.inference.Predictor` runs the network.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (GPU N) or ``"auto"`` (CUDA when available, else CPU).
        bf16: run the network under ``torch.autocast(dtype=torch.bfloat16)``; outputs are cast
            back to float32 before the softmax. ``None`` (default) = the fast-path rule: True on a
            CPU with native bf16 (AMX-BF16 or AVX512-BF16, :func:`rrcunet.models.kernels.cpu_has_native_bf16`),
            False elsewhere (other CPUs, GPUs). The :class:`~rrcunet.inference.Predictor` resolves it,
            and the prediction JSON records the value used.
        tta: test-time augmentation by mirroring: the softmax is averaged over every combination
            of flips along the axes the model was trained to mirror (identity included), as
            nnU-Net does: ``2 ** len(mirror_axes)`` network passes (the bundled model, trained
            with left-right flips only: 2). A model file that does not record its axes gets all
            8 combinations of the 3 axes.
        sliding_window: run the network on overlapping ``roi_size`` windows with
            :func:`monai.inferers.sliding_window_inference` (Gaussian blending). For a model
            trained on a fixed shape (the paper's 256×256×48 resize) this also switches the
            preprocessing to a target *spacing*: ``target_spacing`` if given, else the CT's own
            (native) spacing. A model file whose preprocessing already uses ``target_spacing``
            always runs with sliding windows.
        roi_size: window size ``(X, Y, Z)`` in network voxels; default the model's training input
            shape when the model file records one. Each size must be divisible by the network's
            ``2**(levels-1)``.
        overlap: window overlap fraction in ``[0, 1)`` (default 0.25).
        sw_batch_size: windows per forward pass.
        target_spacing: network voxel size in mm along the canonical (LPS) axes for sliding-window
            inference; ``None`` = native resolution (the CT's spacing).
        channels_last: feed the network in ``torch.channels_last_3d`` memory format. ``None``
            (default) = the same as the resolved ``bf16`` on CPU (bf16 channels-last is where the
            fused GroupNorm → PReLU kernel of :mod:`rrcunet.models.kernels` runs), False on GPU.
        lung_method: lung-region extractor when no lung mask is given (``"classical"`` or
            ``"coordunet"``, the latter with ``lung_model``).
        lung_model: path of a Coordinate-UNet lung model file (task ``"lung"``) for
            ``lung_method="coordunet"``.
        on_empty_lung: ``"full"`` predicts on the whole volume when the lung region is empty,
            ``"error"`` refuses the case; ``None`` (default) keeps the model file's preprocessing choice.
        uncertainty: 0 (default) or the number N ≥ 2 of stochastic network passes to average
            (``--uncertainty N``, :meth:`~rrcunet.inference.Predictor.run_network_stochastic`): the
            mirror combinations of the model's training axes in turn, dropout switched on where the
            model has any, and from the second pass on a small CT intensity perturbation (offset and
            noise of ``perturb_hu`` HU). Gives the mean probabilities (used for the labels) and a voxel
            uncertainty map. Costs N network passes; reading, lung extraction and writing are paid once.
        perturb_hu: size (HU, 1 SD) of that perturbation's offset and noise. Default 10 HU, about
            a scanner's calibration tolerance for water.
        uncertainty_seed: seed of the perturbations and dropout masks (the same seed, the same map).
        postprocess: :class:`PostprocessConfig`.
    """

    device: str = "auto"
    bf16: bool | None = None
    tta: bool = False
    sliding_window: bool = False
    roi_size: tuple[int, int, int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 1
    target_spacing: tuple[float, float, float] | None = None
    channels_last: bool | None = None
    lung_method: str = "classical"
    lung_model: str | None = None
    on_empty_lung: Literal["error", "full"] | None = None
    uncertainty: int = 0
    perturb_hu: float = 10.0
    uncertainty_seed: int = 0
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def __post_init__(self) -> None:
        if not is_device(str(self.device)):
            raise ConfigError(f"device must be one of {DEVICES} or cuda:N (e.g. cuda:1), not {self.device!r}")
        if self.roi_size is not None:
            roi = tuple(self.roi_size)
            if len(roi) != 3 or any(int(s) != s or int(s) < 1 for s in roi):
                raise ConfigError(f"roi_size must be 3 positive integers (X Y Z), not {self.roi_size!r}")
            object.__setattr__(self, "roi_size", tuple(int(s) for s in roi))
        if not (isinstance(self.overlap, (int, float)) and 0 <= self.overlap < 1):
            raise ConfigError(f"overlap must be a fraction in [0, 1), not {self.overlap!r}")
        if int(self.sw_batch_size) < 1:
            raise ConfigError(f"sw_batch_size must be >= 1, not {self.sw_batch_size!r}")
        if self.target_spacing is not None:
            sp = tuple(self.target_spacing)
            if len(sp) != 3 or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in sp):
                raise ConfigError(f"target_spacing must be 3 positive mm values, not {self.target_spacing!r}")
            object.__setattr__(self, "target_spacing", tuple(float(s) for s in sp))
        if self.lung_model is not None:
            object.__setattr__(self, "lung_model", str(self.lung_model))
        if self.lung_method not in LUNGMASK_METHODS:
            raise ConfigError(f"unknown lung method {self.lung_method!r}; choose one of {sorted(LUNGMASK_METHODS)}")
        if self.lung_method == "coordunet" and self.lung_model is None:
            raise ConfigError("lung_method 'coordunet' needs a lung model file (--lung-model PATH, a Coordinate-UNet "
                              "trained with task 'lung'); or use --lung-method classical, which needs none")
        if self.lung_method == "classical" and self.lung_model is not None:
            raise ConfigError(f"--lung-model {self.lung_model} is only used with --lung-method coordunet; "
                              "drop it or pass --lung-method coordunet")
        if (isinstance(self.uncertainty, bool) or not isinstance(self.uncertainty, int) or self.uncertainty < 0
                or self.uncertainty == 1):
            raise ConfigError(f"uncertainty must be 0 (off) or a number of passes >= 2, not {self.uncertainty!r}; "
                              "e.g. --uncertainty 8")
        if not (isinstance(self.perturb_hu, (int, float)) and math.isfinite(self.perturb_hu) and self.perturb_hu >= 0):
            raise ConfigError(f"perturb_hu must be a number of HU >= 0, not {self.perturb_hu!r}")
        if not isinstance(self.postprocess, PostprocessConfig):
            raise ConfigError(f"postprocess must be a PostprocessConfig, not {type(self.postprocess).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return config_to_dict(self)
