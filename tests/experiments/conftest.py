"""Fixtures of the experiment tests: single-threaded torch, tiny phantom generator options and
tiny training overrides (base 2, 2 levels, 16×16×8 inputs, one epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: A phantom of 40×40×~26 voxels of 9×9×12 mm (0.1 s to generate): the real generator, tiny grid.
TINY_GENERATOR = [
    "phantoms.generator.matrix=40",
    "phantoms.generator.inplane_spacing_mm=[9,9]",
    "phantoms.generator.slice_spacing_mm=[12,12]",
    "phantoms.generator.n_slices=[20,28]",
    "phantoms.generator.vessel_min_radius_mm=2.0",
    "phantoms.generator.airway_min_radius_mm=3.0",
]

#: Training overrides that make any training config a one-epoch, seconds-long CPU run.
TINY_TRAIN = [
    "preprocess.target_shape=16,16,8",
    "model.base_filters=2", "model.levels=2", "model.norm_groups=1",
    "schedule.epochs=1", "schedule.max_minutes=null",
    "data.num_workers=0",
    "runtime.device=cpu", "runtime.num_threads=1", "runtime.progress=false", "runtime.tensorboard=false",
]


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-case phantom benchmark (2 train / 1 val / 1 test) made by the experiment's own generator path."""
    import torch

    from rrcunet.config import parse_scalar
    from rrcunet.experiments.config import PhantomBenchmarkConfig
    from rrcunet.experiments.data import ensure_phantom_benchmark

    torch.set_num_threads(1)
    generator = {item.split("=", 1)[0].split(".")[-1]: parse_scalar(item.split("=", 1)[1])
                 for item in TINY_GENERATOR}
    spec = PhantomBenchmarkConfig(seed=3, n_train=2, n_val=1, n_test=1, generator=generator)
    return ensure_phantom_benchmark(tmp_path_factory.mktemp("bench") / "data", spec)
