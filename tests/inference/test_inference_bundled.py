"""The bundled demo models ship inside the package and load as what they claim to be."""

from __future__ import annotations

import pytest
import torch

from rrcunet.inference.bundled import BUNDLED_MODELS, MAKE_COMMANDS, bundled_model_path
from rrcunet.models.model_file import load_model


def _target_shape(meta) -> tuple[int, ...]:
    return tuple(meta.preprocess.target_shape)


EXPECTED = {"tumour": ("rrcunet", 2, {0: "background", 1: "lung", 2: "tumour"}),
            "lung": ("coordunet", 1, {0: "background", 1: "lung"})}


@pytest.mark.parametrize("task", sorted(BUNDLED_MODELS))
def test_bundled_model_loads_with_its_task_and_classes(task):
    model, meta = load_model(bundled_model_path(task))
    name, in_channels, labels = EXPECTED[task]
    assert meta.task == task and meta.model_name == name and meta.labels == labels
    shape = _target_shape(meta)
    with torch.inference_mode():
        out = model(torch.zeros(1, in_channels, *shape))
    assert out.shape == (1, len(labels), *shape) and torch.isfinite(out).all()


def test_demo_scores_phantoms_the_bundled_models_never_trained_on():
    import re

    from rrcunet.cli.main import build_parser
    from rrcunet.experiments.demo import DEMO_SEED

    train_seeds = {int(s) for cmd in MAKE_COMMANDS.values() for s in re.findall(r"--seed (\d+)", cmd)}
    assert train_seeds and DEMO_SEED not in train_seeds
    assert build_parser().parse_args(["demo"]).seed == DEMO_SEED


@pytest.mark.parametrize("task,config", [("tumour", "cpu_tumour"), ("lung", "cpu_lung")])
def test_bundled_model_was_made_by_its_packaged_recipe(task, config):
    """A recipe change without retraining the bundled file (or the reverse) fails here."""
    from rrcunet.training.config import load_config

    _, meta = load_model(bundled_model_path(task))
    cfg = load_config(config)
    assert _target_shape(meta) == tuple(cfg.preprocess.target_shape)
    assert meta.model_name == cfg.model.name
    for key, value in cfg.model.kwargs.items():
        assert meta.model_kwargs[key] == value, key


def test_bundled_tumour_model_carries_the_postprocessing_its_recipe_chose():
    """The recipe's last step records the smallest tumour kept, chosen on the validation split."""
    from rrcunet.experiments.postprocessing import DEFAULT_CANDIDATES_ML
    from rrcunet.inference import Predictor

    _, meta = load_model(bundled_model_path("tumour"))
    assert "rrcunet experiment postprocess" in MAKE_COMMANDS["tumour"]
    chosen = meta.postprocess.selected_on
    assert chosen["subset"] == "val" and chosen["candidates_ml"] == list(DEFAULT_CANDIDATES_ML)
    assert meta.postprocess.min_tumour_ml in DEFAULT_CANDIDATES_ML
    assert chosen["dice_mean_of_cases"]["chosen"] >= chosen["dice_mean_of_cases"]["none"]
    # and the trainer recorded the axes its samples were flipped along, for test-time mirroring
    from rrcunet.training.config import load_config
    from rrcunet.training.trainer import trained_mirror_axes

    assert meta.mirror_axes == trained_mirror_axes(load_config("cpu_tumour"))
    predictor = Predictor.from_file(None)
    assert predictor.config.postprocess.min_tumour_ml == meta.postprocess.min_tumour_ml
    assert predictor.postprocess_source == "model file"
