"""The inference core: a loaded model applied to CT volumes (:class:`Predictor`).

Layered so that each step can be used and tested alone (file → volume → preprocessed tensor →
probabilities → label map on the original grid):

* :meth:`Predictor.run_network`: a preprocessed ``(C, X, Y, Z)`` array → class probabilities on
  the network grid (device, bf16 autocast, mirror TTA, MONAI sliding windows);
* :meth:`Predictor.predict_volume`: a CT :class:`~rrcunet.io.Volume` (and optionally its lung
  region) → :class:`PredictionResult`: the label map on *exactly* the CT's grid, after
  lung extraction → :func:`rrcunet.preprocessing.preprocess` (with the config stored in the model
  file) → network → :func:`rrcunet.preprocessing.invert_probabilities` → postprocessing →
  lesion measurements, each stage timed;
* :meth:`Predictor.predict_paths`: files and folders → output files (see :mod:`.batch`).

The model is loaded once (:meth:`Predictor.from_file`) and applied to any number of cases.

Example::

    from rrcunet.inference import InferenceConfig, Predictor
    from rrcunet.io import read_image
    predictor = Predictor.from_file("best.safetensors", config=InferenceConfig(device="cpu", tta=True))
    result = predictor.predict_volume(read_image("LUNG1-001/image"))
    result.labels            # Volume (0/1/2) on the CT grid
    result.tumour_volume_ml, [l.longest_axial_diameter_mm for l in result.lesions]
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rrcunet import heap
from rrcunet.config import config_to_dict
from rrcunet.errors import ConfigError, InputError
from rrcunet.inference.bundled import bundled_model_path
from rrcunet.inference.config import InferenceConfig, is_device
from rrcunet.inference.measure import Lesion, measure_lesions, tumour_components
from rrcunet.inference.postprocess import RemovedComponent, postprocess_labels
from rrcunet.inference.quality import lesion_confidences, quality_report
from rrcunet.io.validation import DEFAULT_MAX_VOXELS
from rrcunet.io.volume import Volume
from rrcunet.lungmask import ClassicalLungExtractor, LungExtractor, check_method
from rrcunet.models.kernels import available as fused_kernel_available, cpu_has_native_bf16
from rrcunet.models.model_file import ModelMeta, load_model
from rrcunet.models.registry import check_divisible
from rrcunet.models.unet3d import forward_padded
from rrcunet.preprocessing import (
    PreprocessConfig,
    PreprocessRecord,
    invert_map,
    invert_prediction,
    invert_probabilities,
    orientation_step,
    preprocess,
)
from rrcunet.tasks import TUMOUR_LABEL, get_task

logger = logging.getLogger(__name__)

def flip_combinations(axes: tuple[int, ...] | list[int] = (0, 1, 2)) -> tuple[tuple[int, ...], ...]:
    """Every subset of the spatial ``axes`` (0, 1, 2) as tensor dims of a ``(B, C, X, Y, Z)`` input,
    the identity ``()`` first: the mirror combinations of test-time augmentation."""
    dims = tuple(2 + int(a) for a in sorted(axes))
    return tuple(tuple(d for d, on in zip(dims, mask) if on)
                 for mask in itertools.product((False, True), repeat=len(dims)))


#: the 8 mirror combinations along all 3 axes (for a model file that does not record its axes).
FLIP_COMBINATIONS: tuple[tuple[int, ...], ...] = flip_combinations()


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` / ``"cuda:N"`` without that GPU is a
    :class:`ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device(device):
        raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', not {device!r}")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"--device {device}: no CUDA device {index} (PyTorch sees {count} CUDA device(s), "
                              f"torch {torch.__version__}); use another index, --device cpu or auto")
    return torch.device(device)


def resolve_precision(config: InferenceConfig, device: torch.device) -> InferenceConfig:
    """``config`` with ``bf16`` and ``channels_last`` decided where they are ``None`` (the default):
    bf16 autocast on a CPU with native bf16, float32 elsewhere; channels-last on the CPU where bf16
    runs or the fused kernel is available (float32 channels-last through the kernel was 1.4-1.7×
    faster than float32 contiguous), contiguous elsewhere (docs/inference.md, "Precision and the
    fast path")."""
    native = device.type == "cpu" and cpu_has_native_bf16()
    bf16 = native if config.bf16 is None else bool(config.bf16)
    if config.channels_last is None:
        channels_last = device.type == "cpu" and (bf16 or fused_kernel_available())
    else:
        channels_last = bool(config.channels_last)
    return dataclasses.replace(config, bf16=bf16, channels_last=channels_last)


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a pipeline stage into ``timings[name]`` (seconds, accumulated) and label it
    ``rrcunet::<name>`` for :mod:`torch.profiler` (a no-op when no profiler runs)."""
    t0 = time.perf_counter()
    with torch.profiler.record_function(f"rrcunet::{name}"):
        yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class PredictionResult:
    """What :meth:`Predictor.predict_volume` returns for one CT.

    Args:
        labels: the label map (0 background, 1 lung, 2 tumour; 0/1 for a lung model) on exactly the
            CT's grid, after postprocessing.
        lung: the lung region (0/1) given to the network, on the CT grid (for a lung model: its
            own prediction).
        record: the :class:`~rrcunet.preprocessing.PreprocessRecord` (every geometric step).
        lesions: tumour lesions, largest first (:func:`~rrcunet.inference.measure.measure_lesions`).
        removed: tumour components dropped by postprocessing.
        timings: seconds per stage (``lungmask``, ``preprocess``, ``model``, ``invert``,
            ``postprocess``, ``measure``).
        probabilities: ``(C, X, Y, Z)`` class probabilities on the CT grid, when requested.
        label_names: output class index → name (from the model file).
        uncertainty: the voxel uncertainty map (float32 in [0, 1] on the CT grid) under
            ``--uncertainty``, else ``None``.
        quality: the quality flags and checks (:func:`rrcunet.inference.quality.quality_report`).
    """

    labels: Volume
    lung: Volume
    record: PreprocessRecord
    lesions: list[Lesion]
    removed: list[RemovedComponent]
    timings: dict[str, float]
    probabilities: Any = None
    label_names: dict[int, str] = field(default_factory=dict)
    uncertainty: Volume | None = None
    quality: dict[str, Any] | None = None

    @property
    def tumour_volume_ml(self) -> float:
        return float(sum(les.volume_ml for les in self.lesions))

    @property
    def lung_volume_ml(self) -> float:
        """Volume of the lung region (parenchyma including tumours), the network's lung channel."""
        return float(np.count_nonzero(self.lung.array)) * self.lung.geometry.voxel_volume_ml

    def summary(self) -> dict[str, Any]:
        """The measurement part of the prediction JSON (schema in docs/inference.md)."""
        voxel_ml = self.labels.geometry.voxel_volume_ml
        # one comparison, not np.bincount: that first casts the whole uint8 map to int64
        parenchyma = int(np.count_nonzero(np.asarray(self.labels.array) == 1))
        return {
            "tumour": {
                "volume_ml": self.tumour_volume_ml,
                "n_voxels": int(sum(les.n_voxels for les in self.lesions)),
                "n_lesions": len(self.lesions),
                "lesions": [les.to_dict() for les in self.lesions],
            },
            "lung": {
                "region_volume_ml": self.lung_volume_ml,
                "predicted_parenchyma_ml": float(parenchyma) * voxel_ml,
            },
            "postprocessing": {"removed": [r.to_dict() for r in self.removed]},
            **({"quality": self.quality} if self.quality is not None else {}),
        }


@dataclass
class PreparedCase:
    """One CT ready for the network (:meth:`Predictor.prepare`): the CT, its lung region (the
    network's lung channel, ``None`` for a lung model), the network input ``(C_in, X, Y, Z)``, the
    preprocessing record that maps the output back, the stage timings so far, and (after
    :meth:`Predictor.run_prepared` with ``--uncertainty``) the uncertainty on the network grid."""

    ct: Volume
    lung: Volume | None
    image: Any
    record: PreprocessRecord
    timings: dict[str, float]
    uncertainty: Any = None


class Predictor:
    """A loaded model and how to run it; apply with :meth:`predict_volume` or :meth:`predict_paths`.

    Args:
        model: the network (``(B, C_in, X, Y, Z)`` → logits ``(B, C_out, X, Y, Z)``), e.g. from
            :func:`rrcunet.models.load_model`.
        meta: its :class:`~rrcunet.models.ModelMeta` (task, labels, preprocessing).
        config: an :class:`InferenceConfig`. Its ``postprocess.min_tumour_ml=None`` (the default)
            is resolved here to the model file's validated value (0 when it has none); the
            resolved config is :attr:`config`, and :attr:`postprocess_source` says where the value
            came from (``"model file"``, ``"default"`` or ``"option"``).
        model_path: the model file (recorded in outputs).
        model_sha256: its SHA-256 (computed from ``model_path`` when not given).
        lung_extractor: the :class:`~rrcunet.lungmask.LungExtractor` that makes the lung channel
            when :meth:`predict_volume` is given none (default: the classical one); build it with
            :func:`make_lung_extractor`.

    Use :meth:`from_file` to load a model file (and the lung model named in the config).
    """

    def __init__(self, *, model: nn.Module, meta: ModelMeta, config: InferenceConfig = InferenceConfig(),
                 model_path: str | os.PathLike[str] | None = None, model_sha256: str | None = None,
                 lung_extractor: LungExtractor = ClassicalLungExtractor()) -> None:
        self.task = get_task(meta.task)
        if config.postprocess.min_tumour_ml is None:
            # The model file's own choice (made on validation data), else keep every component.
            config = dataclasses.replace(config, postprocess=dataclasses.replace(config.postprocess,
                                                                                 min_tumour_ml=meta.min_tumour_ml))
            self.postprocess_source = "model file" if meta.postprocess is not None else "default"
        else:
            self.postprocess_source = "option"
        self.device = resolve_device(config.device)
        config = resolve_precision(config, self.device)
        self.config = config
        self.meta = meta
        self.model_path = None if model_path is None else Path(model_path)
        self.model_sha256 = model_sha256 or (file_sha256(model_path) if model_path is not None else None)
        self.lung_extractor = lung_extractor
        self.model = model.to(self.device).eval()
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.in_channels = self.task.in_channels
        self.n_classes = len(meta.labels)
        self.base_preprocess = self._base_preprocess_config()
        if config.tta and len(self.tta_flips) == 1:
            logger.warning("model file %s was trained without flips (mirror_axes []), so test-time mirroring "
                           "would average over inputs it never saw; --tta does nothing for it", self.model_path)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, *,
                  config: InferenceConfig = InferenceConfig()) -> "Predictor":
        """Load a model file (``None``: the bundled demo model) and, with ``lung_method="coordunet"``,
        the lung model ``config.lung_model``.

        Raises:
            ConfigError: no path and the bundled model is not installed (the message says how to make it).
            InputError: unreadable / foreign model file.
        """
        model_path = Path(path) if path is not None else bundled_model_path("tumour")
        model, meta = load_model(model_path, device=resolve_device(config.device))
        extractor = (make_lung_extractor(config.lung_method, config.lung_model, config=config)
                     if get_task(meta.task).crop_to_lungs else ClassicalLungExtractor())
        return cls(model=model, meta=meta, config=config, model_path=model_path, lung_extractor=extractor)

    def _base_preprocess_config(self) -> PreprocessConfig:
        if self.meta.preprocess is None:
            logger.warning("model file %s records no preprocessing config; using the paper's defaults "
                           "(clip [-1200, 600], 256x256x48)", self.model_path)
            return PreprocessConfig()
        return self.meta.preprocess

    # -- the network ---------------------------------------------------------------------------
    def preprocess_config(self, ct: Volume) -> PreprocessConfig:
        """The preprocessing config used for ``ct``: the model file's, with the resolution switched to a
        target spacing (``config.target_spacing`` or the CT's native spacing) for sliding windows."""
        base = self.base_preprocess
        cfg = self.config
        if cfg.on_empty_lung is not None:
            base = dataclasses.replace(base, on_empty_lung=cfg.on_empty_lung)
        if cfg.target_spacing is not None or (cfg.sliding_window and base.target_shape is not None):
            spacing = cfg.target_spacing
            canonical = orientation_step(ct.geometry, base.canonical_direction).output_geometry
            if spacing is None:
                spacing = canonical.spacing
            # the size guard, before anything is allocated: the whole scan on the target grid (the lung
            # crop only makes it smaller) must stay within the readers' bound
            voxels = math.prod(n * s / t for n, s, t in zip(canonical.shape, canonical.spacing, spacing))
            if voxels > DEFAULT_MAX_VOXELS:
                raise InputError(
                    f"resampling the {'x'.join(map(str, ct.shape))} scan to {tuple(spacing)} mm gives about "
                    f"{voxels:.3g} voxels, above the bound of {DEFAULT_MAX_VOXELS} (RRCUNET_MAX_VOXELS); pass a "
                    "coarser --target-spacing (e.g. 1 1 1)")
            return dataclasses.replace(base, target_shape=None, target_spacing=tuple(spacing))
        return base

    @property
    def tta_flips(self) -> tuple[tuple[int, ...], ...]:
        """The mirror combinations ``--tta`` averages over: every subset of the model file's
        :attr:`~rrcunet.training.checkpoint.ModelMeta.mirror_axes` (the axes its training samples
        were flipped along, as nnU-Net mirrors only along its training mirror axes), or of all 3
        axes when the file does not record them. Only the identity when training never flipped."""
        axes = self.meta.mirror_axes
        return FLIP_COMBINATIONS if axes is None else flip_combinations(axes)

    @property
    def uses_sliding_window(self) -> bool:
        return bool(self.config.sliding_window or self.config.target_spacing is not None
                    or self.base_preprocess.target_shape is None)

    def roi_size(self, network_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Sliding-window size for a network input of ``network_shape`` (checked against the network's divisor)."""
        roi = self.config.roi_size or self.base_preprocess.target_shape
        if roi is None:
            raise ConfigError(
                f"the model file {self.model_path} was trained at a target spacing and records no input shape; "
                "pass --roi-size X Y Z for sliding-window inference"
            )
        divisor = int(getattr(self.model, "divisor", 1))
        check_divisible(roi, divisor, "--roi-size")
        # No window larger than the (divisible-padded) image: MONAI would pad it and waste time.
        padded = tuple(int(-(-s // divisor) * divisor) for s in network_shape)
        return tuple(min(int(r), p) for r, p in zip(roi, padded))  # type: ignore[return-value]

    def train_patch_roi(self, network_shape: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """Windows for a model trained on patches (``train_patch_size`` in its file) whose input grid is
        larger than a patch: the network then sees, as at validation, windows of the size it was
        trained on (its GroupNorm statistics were learnt on patches, not on the whole grid)."""
        patch = self.meta.train_patch_size
        if not patch:
            return None
        divisor = int(getattr(self.model, "divisor", 1))
        if (not isinstance(patch, (list, tuple)) or len(patch) != 3
                or any(not isinstance(p, int) or p < 1 or p % divisor for p in patch)):
            logger.warning("model file %s records an unusable train_patch_size %r; running the whole grid at once",
                           self.model_path, patch)
            return None
        if all(int(s) <= int(p) for s, p in zip(network_shape, patch)):
            return None
        padded = tuple(int(-(-s // divisor) * divisor) for s in network_shape)
        return tuple(min(int(p), q) for p, q in zip(patch, padded))  # type: ignore[return-value]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return forward_padded(self.model, x).float()

    def run_network(self, image: np.ndarray | torch.Tensor, *,
                    flips: tuple[tuple[int, ...], ...] | None = None) -> torch.Tensor:
        """Class probabilities ``(C_out, X, Y, Z)`` (float32, CPU) of one preprocessed ``(C_in, X, Y, Z)`` input.

        Softmax of the logits; with ``tta`` the mean of the softmax over the mirror combinations
        :attr:`tta_flips` (along the axes the model was trained to mirror);
        with sliding windows (``--sliding-window``, or the fixed grid of a model trained on smaller
        patches, :meth:`train_patch_roi`) the logits of overlapping windows are blended with
        Gaussian weights by :func:`monai.inferers.sliding_window_inference` (before the softmax).
        ``flips`` overrides the mirror combinations averaged (tensor dims of ``(B, C, X, Y, Z)``).
        """
        x = torch.as_tensor(image)
        if x.ndim != 4 or x.shape[0] != self.in_channels:
            raise InputError(f"network input must be ({self.in_channels}, X, Y, Z) for a {self.meta.task!r} model, "
                             f"not shape {tuple(x.shape)}")
        x = x[None].to(self.device, torch.float32)
        sliding = self.uses_sliding_window
        roi = self.roi_size(tuple(x.shape[2:])) if sliding else self.train_patch_roi(tuple(x.shape[2:]))
        autocast = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if self.config.bf16
                    else nullcontext())

        def logits_of(inp: torch.Tensor) -> torch.Tensor:
            if roi is None:
                return self._forward(inp)
            from monai.inferers import sliding_window_inference  # lazy: only windowed inference needs it

            return sliding_window_inference(inp, roi, self.config.sw_batch_size, self._forward,
                                            overlap=self.config.overlap, mode="gaussian")

        if flips is None:
            flips = self.tta_flips if self.config.tta else ((),)
        # heap.network_pass: the activations reuse freed heap memory instead of fresh pages, and no huge
        # pages (CLI only). Only in channels-last (the fused kernel's layout): float32 activations of the
        # contiguous eager path fragmented the kept heap to a 3.7-4.9 GB peak on LUNG1-001; channels-last
        # float32 peaked at 2.5-2.7 GB (docs/inference.md, "Heap reuse during the network pass").
        reuse = heap.network_pass() if self.config.channels_last and self.device.type == "cpu" else nullcontext()
        with torch.inference_mode(), autocast, reuse:
            first = flips[0]  # the identity, unless overridden
            probs = torch.softmax(logits_of(torch.flip(x, first) if first else x).float(), dim=1)
            if first:
                probs = torch.flip(probs, first)
            for dims in flips[1:]:
                p = torch.softmax(logits_of(torch.flip(x, dims)).float(), dim=1)
                probs.add_(torch.flip(p, dims))
            if len(flips) > 1:
                probs.div_(len(flips))
        return probs[0].to("cpu", torch.float32).clone()  # a clone outside inference mode is a normal tensor

    def run_network_stochastic(self, image: np.ndarray | torch.Tensor, *,
                               hu_per_unit: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``config.uncertainty`` stochastic passes of one preprocessed input: the mean class
        probabilities ``(C, X, Y, Z)`` and the voxel uncertainty ``(X, Y, Z)``, both float32 on CPU.

        Pass ``i`` mirrors along :attr:`tta_flips` ``[i mod len]`` (the model's training mirror axes),
        runs with every dropout layer of non-zero rate switched on (Monte Carlo dropout, Gal &
        Ghahramani 2016; the bundled model has none), and, from the second pass on, adds to the CT
        channel a random offset and voxel noise of ``config.perturb_hu`` HU (1 SD; ``hu_per_unit``
        converts HU into the channel's normalised units: the preprocessing record's std), the
        test-time augmentation of Wang et al. 2019 (Neurocomputing 338). The uncertainty is the
        predictive entropy of the mean probabilities divided by ``log C``: 0 where every pass gave
        one class with certainty, 1 where the mean is uniform over the classes. Seeded by
        ``config.uncertainty_seed`` without touching the global random state.
        """
        n = int(self.config.uncertainty)
        if n < 2:
            raise ConfigError(f"run_network_stochastic needs config.uncertainty >= 2, not {n}")
        x = torch.as_tensor(image, dtype=torch.float32)
        flips = self.tta_flips
        dropouts = [m for m in self.model.modules()
                    if isinstance(m, nn.modules.dropout._DropoutNd) and float(m.p) > 0.0]
        sigma = float(self.config.perturb_hu) / max(float(hu_per_unit), 1e-6)
        gen = torch.Generator().manual_seed(int(self.config.uncertainty_seed))
        total: torch.Tensor | None = None
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.config.uncertainty_seed))  # the dropout masks
            for m in dropouts:
                m.train()
            try:
                for i in range(n):
                    xi = x
                    if i > 0 and sigma > 0:
                        xi = x.clone()
                        noise = torch.randn(x.shape[1:], generator=gen) * sigma
                        xi[0] += noise + float(torch.randn((), generator=gen)) * sigma
                    p = self.run_network(xi, flips=(flips[i % len(flips)],))
                    total = p if total is None else total.add_(p)
            finally:
                for m in dropouts:
                    m.eval()
        assert total is not None
        mean = total.div_(n)
        entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(0)
        return mean, (entropy / math.log(mean.shape[0])).clamp_(0.0, 1.0)

    # -- one CT ----------------------------------------------------------------------------------
    def extract_lung(self, ct: Volume) -> Volume:
        """The lung region of ``ct`` (0/1 on its grid) by the configured :class:`~rrcunet.lungmask.LungExtractor`."""
        return self.lung_extractor(ct)

    def predict_volume(self, ct: Volume, lung: Volume | None = None, *,
                       return_probabilities: bool = False) -> PredictionResult:
        """Segment one CT; the result is on exactly ``ct``'s grid.

        Args:
            ct: CT in HU (any orientation, spacing, size).
            lung: its lung region (0/1) on the CT grid; computed with the configured lung method
                when ``None``. Ignored by a lung model.
            return_probabilities: also map the class probabilities back to the CT grid (C × the
                CT's voxels in float32).

        Returns:
            a :class:`PredictionResult`.

        Raises:
            InputError: a lung mask on another grid; an empty lung region.
        """
        prepared = self.prepare(ct, lung)
        return self.finish(prepared, self.run_prepared(prepared), return_probabilities=return_probabilities)

    def run_prepared(self, prepared: PreparedCase) -> torch.Tensor:
        """:meth:`run_network` on a prepared case, timed into its ``model`` stage; with
        ``config.uncertainty`` the mean of :meth:`run_network_stochastic`, whose uncertainty map is
        kept in ``prepared.uncertainty``."""
        with stage(prepared.timings, "model"):
            if self.config.uncertainty:
                probs, prepared.uncertainty = self.run_network_stochastic(
                    prepared.image, hu_per_unit=prepared.record.intensity.std)
                return probs
            return self.run_network(prepared.image)

    def prepare(self, ct: Volume, lung: Volume | None = None) -> PreparedCase:
        """The CPU work before the network: the lung region (when not given) and the preprocessing.

        :meth:`predict_volume` is ``finish(prepare(ct), run_network(prepared.image))``; a cohort run
        does the three in different processes so that reading and preparing the next case overlap the
        network (:mod:`rrcunet.inference.batch`). Raises as :meth:`predict_volume`.
        """
        lo, hi = float(ct.array.min()), float(ct.array.max())
        if hi - lo < 1.0:
            # One value everywhere carries no anatomy; at -600 HU the lung extractor would call the
            # whole field of view "lung" and the case would look like a success.
            raise InputError(f"every voxel of the CT has the same value ({lo:g} HU): a constant image with no "
                             "anatomy; expected a chest CT")
        timings: dict[str, float] = {}
        with stage(timings, "lungmask"):
            if self.task.crop_to_lungs:
                if lung is None:
                    with heap.no_huge_pages():  # its arrays first touched in 4 KiB pages (rrcunet.heap)
                        lung = self.extract_lung(ct)
                elif not lung.geometry.same_grid(ct.geometry):
                    raise InputError(f"the lung mask ({lung.geometry.describe()}) is not on the CT grid "
                                     f"({ct.geometry.describe()}); resample it onto the CT first")
            lung_in = self.task.lung_input(ct, lung)
        with stage(timings, "preprocess"):
            case = preprocess(ct, lung_in, config=self.preprocess_config(ct))
            image = case.image[: self.in_channels]
        return PreparedCase(ct=ct, lung=lung_in, image=image, record=case.record, timings=timings)

    def finish(self, prepared: PreparedCase, probs: torch.Tensor, *,
               return_probabilities: bool = False) -> PredictionResult:
        """The CPU work after the network: back onto the CT grid, postprocessing and measurements."""
        ct, lung_in, timings = prepared.ct, prepared.lung, prepared.timings
        tumour_prob = tumour_net = uncertainty = None
        with stage(timings, "invert"):
            prob_map = invert_probabilities(probs, prepared.record) if return_probabilities else None
            labels = prob_map.argmax() if prob_map is not None else invert_prediction(probs, prepared.record)
            labels = Volume(labels.array, ct.geometry, "label", {"source": ct.meta.get("source")})
            if self.task.crop_to_lungs:
                tumour_net = probs[TUMOUR_LABEL]  # inverted below only when there are lesions to score
                if prepared.uncertainty is not None:
                    uncertainty = ct.with_array(invert_map(prepared.uncertainty, prepared.record), kind="image")
            del probs

        if not self.task.crop_to_lungs:  # the lung model: its labels are the lung region
            return PredictionResult(labels=labels, lung=labels, record=prepared.record, lesions=[], removed=[],
                                    timings=timings, probabilities=prob_map, label_names=dict(self.meta.labels))

        with stage(timings, "postprocess"):
            comps = tumour_components(np.asarray(labels.array) == TUMOUR_LABEL)
            labels, removed = postprocess_labels(labels, lung_in, self.config.postprocess, components=comps)
            if removed:  # the components left, without labelling the cleaned mask again
                drop = np.zeros(comps.count + 1, dtype=bool)
                drop[[r.component for r in removed]] = True
                comps = comps.without(drop)
        with stage(timings, "measure"):
            lesions = measure_lesions(labels.array, labels.geometry, components=comps)
        with stage(timings, "quality"):
            if lesions:
                # for the lesions' confidence; uint8 (255 × p) where only this channel is inverted: a
                # quarter of a float32 map's memory on a full scan
                tumour_prob = (prob_map.array[TUMOUR_LABEL] if prob_map is not None
                               else invert_map(tumour_net, prepared.record, as_uint8=True))
            extras = lesion_confidences(comps, tumour_prob, np.asarray(lung_in.array),
                                        None if uncertainty is None else uncertainty.array)
            lesions = [dataclasses.replace(les, **x) for les, x in zip(lesions, extras)]
            quality = quality_report(ct, lung_in, lesions, extras)
        return PredictionResult(labels=labels, lung=lung_in, record=prepared.record, lesions=lesions, removed=removed,
                                timings=timings, probabilities=prob_map, label_names=dict(self.meta.labels),
                                uncertainty=uncertainty, quality=quality)

    # -- many files ------------------------------------------------------------------------------
    def predict_paths(self, inputs: Any, out_dir: str | os.PathLike[str], **options: Any) -> Any:
        """Predict every case found in ``inputs`` and write the outputs to ``out_dir``.

        See :func:`rrcunet.inference.batch.predict_paths` for the options and outputs.
        """
        from rrcunet.inference.batch import predict_paths  # local: batch imports this module

        return predict_paths(self, inputs, out_dir, **options)

    def describe(self) -> dict[str, Any]:
        """Model provenance for the prediction JSON."""
        info = {
            "path": None if self.model_path is None else str(self.model_path),
            "sha256": self.model_sha256,
            "name": self.meta.model_name,
            "kwargs": self.meta.model_kwargs,
            "task": self.meta.task,
            "labels": {str(k): v for k, v in self.meta.labels.items()},
            "trained_with_rrcunet": self.meta.rrcunet_version,
            "preprocess": config_to_dict(self.base_preprocess),
        }
        if isinstance(self.lung_extractor, NetworkLungExtractor):
            lung = self.lung_extractor.predictor
            info["lung_model"] = {"path": str(lung.model_path), "sha256": lung.model_sha256,
                                  "name": lung.meta.model_name}
        return info


@dataclass(frozen=True)
class NetworkLungExtractor:
    """A lung model file (task ``"lung"``, e.g. the Coordinate-UNet 3D of the ``cpu_lung`` config, paper
    ref. [31]) as a :class:`~rrcunet.lungmask.LungExtractor`: whole-scan preprocessing with the config
    stored in the model file, the network, then the exact inverse onto the CT's grid."""

    predictor: Predictor
    name: str = "coordunet"

    def __post_init__(self) -> None:
        if self.predictor.meta.task != "lung":
            raise InputError(f"{self.predictor.model_path} is a {self.predictor.meta.task!r} model, not a lung model; "
                             "expected a lung model (task 'lung'), e.g. trained with `rrcunet train --config cpu_lung`")

    def __call__(self, ct: Volume) -> Volume:
        labels = self.predictor.predict_volume(ct).labels
        return Volume((np.asarray(labels.array) > 0).astype(np.uint8), ct.geometry, "label",
                      {"source": ct.meta.get("source")})


def make_lung_extractor(method: str = "classical", model: str | os.PathLike[str] | None = None, *,
                        config: InferenceConfig = InferenceConfig()) -> LungExtractor:
    """The lung extractor called ``method`` (a key of :data:`rrcunet.lungmask.LUNGMASK_METHODS`): the one
    place where a method name becomes an extractor, for ``predict``, ``lungmask`` and the library.

    ``"coordunet"`` loads the lung model file ``model`` and runs it with ``config``'s device and
    network options (no sliding windows: the lung model sees the whole scan at its training grid).

    Raises:
        ConfigError: unknown method, or a missing / superfluous model.
        InputError: ``model`` is unreadable or not a lung model.
    """
    check_method(method, model)
    if method == "classical":
        return ClassicalLungExtractor()
    lung_cfg = dataclasses.replace(config, lung_method="classical", lung_model=None, sliding_window=False,
                                   roi_size=None, target_spacing=None)
    return NetworkLungExtractor(Predictor.from_file(model, config=lung_cfg))
