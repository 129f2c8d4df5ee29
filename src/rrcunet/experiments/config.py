"""Typed configuration of an experiment (the §4.5 block ablation and its benchmark data).

Owns :class:`ExperimentConfig` and its sections (:class:`PhantomBenchmarkConfig`,
:class:`EvaluationConfig`, :class:`AnalysisConfig`), the reader of experiment JSON files
(:func:`load_experiment_config`) and the routing of ``key=value`` overrides between the
experiment and its training config.

An experiment file looks like (``configs/benchmark/ablation_cpu.json``)::

    {
      "name": "ablation_cpu",
      "phantoms": {"seed": 2024, "size": "small", "n_train": 24, "n_val": 6, "n_test": 12,
                   "generator": {"location_weights": [0.2, 0.25, 0.35, 0.2]}},
      "variants": ["rrcunet", "cgpd", "residual", "recurrent", "unet"],
      "seeds": [0],
      "train": { ...a training config, see docs/training.md... },
      "evaluation": {"subset": "test", "lung": "dataset"},
      "analysis": {"variant": "rrcunet", "size_bins_ml": [1, 5, 20, 50]}
    }

``train`` is either a training config inline or the path of a training-config file (relative to
the experiment file) or a packaged config name. The data come from ``dataset`` (a prepared
dataset folder) or, when it is not set, from ``phantoms`` (generated into ``OUT/data``).

Overrides (``rrcunet experiment ablation ... KEY=VALUE``): a key whose first part is a section of
the training config (``schedule.max_minutes=10``, ``model.base_filters=4``; also written
``train.schedule.max_minutes=10``) changes the training config of every variant; any other key
(``phantoms.n_train=8``, ``dataset=/data/x``, ``evaluation.subset=val``,
``phantoms.generator.matrix=96``) changes the experiment.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rrcunet.config import apply_overrides, config_from_dict, config_to_dict, read_config_data
from rrcunet.errors import ConfigError
from rrcunet.synthetic import PhantomConfig, TumourSpec

EXPERIMENT_VERSION = 1

#: The variants of the paper's Table 5 plus the plain U-Net, in table order.
DEFAULT_VARIANTS: tuple[str, ...] = ("rrcunet", "cgpd", "residual", "recurrent", "unet")

#: Lower edges (mL) of the size bins after the first: ``< 1``, ``1–5``, ``5–20``, ``20–50``, ``≥ 50``.
DEFAULT_SIZE_BINS_ML: tuple[float, ...] = (1.0, 5.0, 20.0, 50.0)


@dataclass(frozen=True)
class PhantomBenchmarkConfig:
    """A fixed synthetic dataset: ``n_train + n_val + n_test`` phantoms of one seed.

    Case ``i`` is :func:`rrcunet.synthetic.write_phantom_dataset`'s case ``i`` (its seed is a pure
    function of ``(seed, i)``). The **last** ``n_test`` cases are the held-out test list of the
    manifest; the others are split at patient level into ``n_val`` validation and ``n_train``
    training cases with ``seed``.

    Args:
        seed: dataset seed.
        size: phantom preset (``"small"``: 128×128×40–64 voxels; ``"full"``: clinical grids).
        n_train: training cases.
        n_val: validation cases (early stopping, best epoch).
        n_test: held-out test cases (the ablation table and the size/location analysis).
        generator: :class:`rrcunet.synthetic.PhantomConfig` fields replacing the preset's (lists
            for ranges and weights; ``tumours`` as a list of ``TumourSpec`` field objects).
    """

    seed: int = 2024
    size: Literal["small", "full"] = "small"
    n_train: int = 24
    n_val: int = 6
    n_test: int = 12
    generator: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"phantoms.seed must be >= 0, not {self.seed}")
        if self.n_train < 1:
            raise ConfigError(f"phantoms.n_train must be >= 1, not {self.n_train}")
        if self.n_val < 0:
            raise ConfigError(f"phantoms.n_val must be >= 0, not {self.n_val}")
        if self.n_test < 1:
            raise ConfigError(f"phantoms.n_test must be >= 1 (the ablation is scored on it), not {self.n_test}")

    @property
    def n_total(self) -> int:
        return self.n_train + self.n_val + self.n_test

    def phantom_config(self) -> Any:
        """The :class:`~rrcunet.synthetic.PhantomConfig` of the preset with ``generator`` applied."""
        fields = {f.name: f for f in dataclasses.fields(PhantomConfig)}
        kwargs: dict[str, Any] = {}
        for key, value in self.generator.items():
            if key not in fields or key == "name":
                raise ConfigError(f"phantoms.generator.{key} is not a phantom option; valid: "
                                  f"{', '.join(sorted(k for k in fields if k != 'name'))}")
            if key == "tumours" and value is not None:
                try:
                    value = tuple(TumourSpec(**dict(t)) for t in value)
                except TypeError as exc:
                    raise ConfigError(f"phantoms.generator.tumours: {exc}; each entry takes kind, location, "
                                      "diameter_mm, side") from exc
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return PhantomConfig.preset(self.size, **kwargs)


@dataclass(frozen=True)
class EvaluationConfig:
    """How each trained model is scored.

    Args:
        subset: the manifest split scored: ``"test"`` (held-out cases; the benchmark) or
            ``"val"`` (the validation split; what the paper's Tables 3–5 report).
        lung: the lung channel given to the model: ``"dataset"`` (the dataset's ``lungs/`` mask,
            what it was trained with, so the comparison is about the blocks alone) or
            ``"classical"`` (extracted from the CT by :func:`rrcunet.lungmask.extract_lungs`, as a
            user without a lung mask would run it).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        bf16: run the networks under bf16 autocast.
        tolerance_mm: surface-Dice tolerance of the reports.
    """

    subset: Literal["test", "val"] = "test"
    lung: Literal["dataset", "classical"] = "dataset"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    tolerance_mm: float = 2.0

    def __post_init__(self) -> None:
        if not self.tolerance_mm >= 0:
            raise ConfigError(f"evaluation.tolerance_mm must be >= 0, not {self.tolerance_mm}")


@dataclass(frozen=True)
class AnalysisConfig:
    """The tumour size / location analysis (and Tables 3–4, Figure 7) of one variant.

    Args:
        enabled: run it after the ablation.
        variant: the analysed variant (its first seed); the paper's model by default.
        size_bins_ml: increasing inner edges of the size bins in mL; ``(1, 5, 20, 50)`` gives
            ``< 1``, ``1–5``, ``5–20``, ``20–50``, ``≥ 50`` (each bin holds its lower edge).
        figures: also draw the per-case slice and 3D figures of the evaluation report.
    """

    enabled: bool = True
    variant: str = "rrcunet"
    size_bins_ml: tuple[float, ...] = DEFAULT_SIZE_BINS_ML
    figures: bool = False

    def __post_init__(self) -> None:
        check_size_bins(self.size_bins_ml, where="analysis.size_bins_ml")


def check_size_bins(edges: Any, *, where: str = "size bins") -> tuple[float, ...]:
    """Validate increasing positive bin edges (mL); return them as floats."""
    try:
        e = tuple(float(x) for x in edges)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a list of numbers (mL), not {edges!r}") from None
    if not e or any(not x > 0 for x in e) or any(b <= a for a, b in zip(e, e[1:])):
        raise ConfigError(f"{where} must be increasing numbers > 0 (mL), e.g. 1,5,20,50; not {edges!r}")
    return e


@dataclass(frozen=True)
class ExperimentConfig:
    """A block ablation: every variant × seed trained with one training config on one dataset.

    Args:
        name: shown in the reports.
        dataset: a prepared dataset folder (``rrcunet import``, ``rrcunet experiment
            merge-datasets``); when set, ``phantoms`` is not used.
        phantoms: the synthetic benchmark generated into ``OUT/data`` when ``dataset`` is not set.
        variants: model registry names (``rrcunet``, ``cgpd``, ``residual``, ``recurrent``,
            ``unet``); each is trained with ``model.name`` replaced, everything else equal.
        seeds: ``runtime.seed`` of the runs (initial weights, data order, augmentation, dropout).
        train: the training config (plain JSON data of :class:`rrcunet.training.TrainConfig`;
            ``data.dataset``, ``model.name`` and ``runtime.seed`` are set per run). The budget is
            its ``schedule.epochs`` and ``schedule.max_minutes``.
        evaluation: :class:`EvaluationConfig`.
        analysis: :class:`AnalysisConfig`.
        version: format version.
    """

    name: str = "ablation"
    dataset: str | None = None
    phantoms: PhantomBenchmarkConfig | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    seeds: tuple[int, ...] = (0,)
    train: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    version: int = EXPERIMENT_VERSION

    def __post_init__(self) -> None:
        # lazy: rrcunet.models imports torch and MONAI (~2 s); `import rrcunet.experiments` stays light
        from rrcunet.models import MODEL_REGISTRY

        if self.version != EXPERIMENT_VERSION:
            raise ConfigError(f"experiment config version {self.version} is not supported "
                              f"(expected {EXPERIMENT_VERSION})")
        valid = [n for n in MODEL_REGISTRY if n != "coordunet"]
        if not self.variants:
            raise ConfigError(f"variants is empty; list model names among {', '.join(valid)}")
        for v in self.variants:
            if v not in valid:
                raise ConfigError(f"unknown variant {v!r}: the tumour models are {', '.join(valid)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants lists a model twice: {list(self.variants)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one, e.g. --seeds 0")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be distinct integers >= 0, not {list(self.seeds)}")
        if self.dataset is None and self.phantoms is None and not (self.train.get("data") or {}).get("dataset"):
            raise ConfigError("the experiment has no data: set dataset=DIR (a prepared dataset) or a 'phantoms' "
                              "section (a generated benchmark)")


# ---------------------------------------------------------------------------------------------
# reading and overrides

_EXPERIMENT_KEYS = frozenset(f.name for f in dataclasses.fields(ExperimentConfig))


def _train_sections() -> frozenset[str]:
    # lazy: rrcunet.training imports torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.training.config import TrainConfig

    return frozenset(f.name for f in dataclasses.fields(TrainConfig))


def split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Route ``key=value`` overrides: ``(experiment overrides, training-config overrides)``.

    Raises:
        ConfigError: a malformed item, or a key that is neither an experiment field nor a
            training-config section.
    """
    train_keys = _train_sections()
    exp, train = [], []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. schedule.max_minutes=10)")
        head = key.split(".", 1)[0]
        if head == "train" and "." in key:
            train.append(f"{key.split('.', 1)[1]}={value}")
        elif head in train_keys:
            train.append(item)
        elif head in _EXPERIMENT_KEYS:
            exp.append(item)
        else:
            raise ConfigError(
                f"override {item!r}: unknown key {head!r}; experiment keys: {', '.join(sorted(_EXPERIMENT_KEYS))}; "
                f"training-config sections: {', '.join(sorted(train_keys))}"
            )
    return exp, train


def read_experiment_data(path: str | Path) -> dict[str, Any]:
    """Plain data of an experiment JSON file, with ``train`` inlined when it names a file or packaged config."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment config {p} not found; expected a JSON file such as "
                          "configs/benchmark/ablation_cpu.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: an experiment config must be a JSON object, found {type(data).__name__}")
    data.pop("_comment", None)
    train = data.get("train", {})
    if isinstance(train, str):
        candidate = (p.parent / train)
        data["train"] = read_config_data(candidate if candidate.is_file() else train)
    elif not isinstance(train, dict):
        raise ConfigError(f"{p}: 'train' must be a training config object or a file name, not {train!r}")
    else:
        data["train"] = {k: v for k, v in train.items() if k != "_comment"}
    return data


def experiment_from_data(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), *,
                         where: str = "experiment") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from plain data and overrides, checking the training config too.

    Raises:
        ConfigError: unknown keys, wrong types, unknown variants, an invalid training config.
    """
    # lazy: rrcunet.training imports torch and MONAI (~2 s); `import rrcunet.experiments` stays light
    from rrcunet.training import resolve_config
    from rrcunet.training.config import TrainConfig

    exp_over, train_over = split_overrides(list(overrides))
    try:
        data = apply_overrides(data, exp_over, cls=ExperimentConfig)
        if train_over:
            data["train"] = apply_overrides(dict(data.get("train") or {}), train_over, cls=TrainConfig)
        config = config_from_dict(ExperimentConfig, data)
        # The training config must be valid for every variant (a typo fails now, not after hours of
        # training the first variants): types, keys, and the model options of each variant.
        for variant in config.variants:
            resolve_config(config_from_dict(TrainConfig, train_data_for_run(
                config, variant=variant, seed=config.seeds[0], dataset=".")))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return config


def load_experiment_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment JSON file and apply ``key=value`` overrides (see the module docstring).

    Example::

        cfg = load_experiment_config("configs/benchmark/ablation_cpu.json", ["schedule.max_minutes=5"])
    """
    return experiment_from_data(read_experiment_data(path), overrides, where=str(path))


def train_data_for_run(config: ExperimentConfig, *, variant: str, seed: int, dataset: str | Path) -> dict[str, Any]:
    """The training-config data of one run: the experiment's ``train`` with the variant, seed and dataset set."""
    data = copy.deepcopy(config.train)
    model = dict(data.get("model") or {})
    model["name"] = variant
    data["model"] = model
    runtime = dict(data.get("runtime") or {})
    runtime["seed"] = int(seed)
    data["runtime"] = runtime
    d = dict(data.get("data") or {})
    d["dataset"] = str(dataset)
    data["data"] = d
    data.setdefault("task", "tumour")
    if data["task"] != "tumour":
        raise ConfigError(f"train.task must be 'tumour' for a block ablation, not {data['task']!r}")
    return data
