"""Model files: typed description, one header reader, and files written before the redesign."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from rrcunet.errors import InputError
from rrcunet.models import build_model
from rrcunet.models.model_file import (
    FORMAT_VERSION,
    MODEL_FORMAT,
    PostprocessChoice,
    load_model,
    read_model_meta,
    save_model,
)
from rrcunet.preprocessing import PreprocessConfig

KW = {"base_filters": 2, "levels": 2, "dropout": 0.0}


def _old_file(path, **meta_changes):
    """A model file laid out as rrcunet wrote them before 2026-12 (lung_method in preprocess,
    train_patch_size in extra)."""
    net = build_model("rrcunet", **KW)
    meta = {"model_name": "rrcunet", "model_kwargs": KW, "task": "tumour",
            "labels": {"0": "background", "1": "lung", "2": "tumour"},
            "preprocess": {"clip": [-1200.0, 600.0], "target_shape": [16, 16, 8], "target_spacing": None,
                           "margin_mm": 10.0, "on_empty_lung": "error", "lung_interpolation": "linear",
                           "lung_method": "classical", "canonical_direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]},
            "rrcunet_version": "0.1.0", "extra": {"epoch": 3, "train_patch_size": [8, 8, 4]},
            "postprocess": {"min_tumour_ml": 0.5, "selected_on": {"cases": 2}}, "mirror_axes": [0], **meta_changes}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"format": MODEL_FORMAT, "format_version": str(FORMAT_VERSION), "rrcunet": json.dumps(meta)})
    return path, net


def test_a_file_written_before_the_redesign_loads_with_typed_fields(tmp_path):
    path, net = _old_file(tmp_path / "old.safetensors")
    model, meta = load_model(path)
    assert meta.preprocess == PreprocessConfig(target_shape=(16, 16, 8))  # lung_method dropped on read
    assert meta.train_patch_size == (8, 8, 4) and "train_patch_size" not in meta.extra
    assert meta.extra == {"epoch": 3}
    assert meta.postprocess == PostprocessChoice(min_tumour_ml=0.5, selected_on={"cases": 2})
    assert meta.min_tumour_ml == 0.5 and meta.mirror_axes == [0]
    for (k, a), (k2, b) in zip(net.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert read_model_meta(path) == meta


def test_typed_description_round_trips(tmp_path):
    net = build_model("rrcunet", **KW)
    path = save_model(tmp_path / "m.safetensors", net, model_name="rrcunet", model_kwargs=KW,
                      preprocess_config=PreprocessConfig(target_shape=(16, 16, 8)), mirror_axes=(2, 0),
                      train_patch_size=[8, 8, 4])
    meta = read_model_meta(path)
    assert meta.mirror_axes == [0, 2] and meta.train_patch_size == (8, 8, 4) and meta.postprocess is None
    assert "lung_method" not in json.dumps(meta.to_dict())


@pytest.mark.parametrize("change, message", [
    ({"mirror_axes": [0, 5]}, "mirror_axes .* is malformed"),
    ({"train_patch_size": [8, 8]}, "train_patch_size must be list of 3 int or null, not \\[8, 8\\]"),
    ({"postprocess": {"min_tumour_ml": -1}}, "min_tumour_ml must be a number of mL >= 0"),
    ({"task": "brain"}, "model task 'brain' is not one of"),
])
def test_a_malformed_description_names_the_field(tmp_path, change, message):
    path, _ = _old_file(tmp_path / "bad.safetensors", **change)
    with pytest.raises(InputError, match=f"malformed model description.*{message}"):
        read_model_meta(path)


def test_the_header_reader_checks_the_version_for_meta_alone(tmp_path):
    path, net = _old_file(tmp_path / "v.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"format": MODEL_FORMAT, "format_version": "99", "rrcunet": "{}"})
    with pytest.raises(InputError, match="format version '99' is not supported"):
        read_model_meta(path)


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.fill_(float("nan")), "hold NaN or infinite values"),
    (lambda t: t.fill_(float("inf")), "hold NaN or infinite values"),
    ("int8", "weights stored as torch.int8"),
    ("bool", "weights stored as torch.bool"),
    ("complex64", "weights stored as torch.complex64"),
])
def test_weights_that_would_give_an_all_background_mask_are_refused(tmp_path, damage, message):
    net = build_model("rrcunet", **KW)
    path = save_model(tmp_path / "m.safetensors", net, model_name="rrcunet", model_kwargs=KW,
                      preprocess_config=PreprocessConfig(target_shape=(16, 16, 8)))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    key = "head.weight"
    tensors[key] = damage(tensors[key].clone()) if callable(damage) else tensors[key].to(getattr(torch, damage))
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(InputError, match=message):
        load_model(path)


@pytest.mark.parametrize("change, message", [
    ({"labels": {"0": "background", "1": "lung", "2": "lung"}}, "must be unique"),
    ({"labels": {"0": "background", "1": "lung", "2": "ground-glass"}}, "are not usable"),
    ({"labels": {"0": "background", "1": "lu\x1bng", "2": "tumour"}}, "are not usable"),
    ({"labels": {"0": "background", "1": "lung", "2": "t" * 65}}, "are not usable"),
    ({"labels": {"0": "background", "1": "lung", "2": "t" * 5000}}, "are not usable"),
    ({"labels": {"0": "background", "1": "lu\x00ng", "2": "tumour"}}, "are not usable"),
    ({"labels": {"0": "background", "1": "lu\nng", "2": "tumour"}}, "are not usable"),
    ({"labels": {"0": "background", "1": "a/b", "2": "a b"}}, "are not usable|must be unique"),
    ({"preprocess": {"target_shape": [4096, 4096, 4096]}}, "at most 67,108,864 are accepted"),
    ({"model_kwargs": {**KW, "t": 5000}}, r"t=5000 is invalid: expected an integer <= 16"),
])
def test_a_model_file_asking_for_too_much_or_for_unsafe_names_is_refused(tmp_path, change, message):
    path, _ = _old_file(tmp_path / "bad.safetensors", **change)
    with pytest.raises(InputError, match=message):
        load_model(path)
