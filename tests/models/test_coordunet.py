"""Coordinate-UNet 3D (lung model, ref [31])."""

from __future__ import annotations

import pytest
import torch

from rrcunet.errors import ConfigError, InputError
from rrcunet.models import build_model


def test_defaults_are_ct_in_background_lung_out():
    with torch.device("meta"):
        model = build_model("coordunet")
    assert (model.in_channels, model.out_channels, model.coords_at) == (1, 2, ("input", "head"))
    assert model.encoder.stages[0].block.units[0].conv.in_channels == 1 + 3
    assert model.head.in_channels == model.filters[0] + 3


@pytest.mark.parametrize("coords_at", [("input",), ("head",), ("input", "head"), ()])
def test_forward_backward(coords_at):
    model = build_model("coordunet", levels=2, base_filters=4, coords_at=coords_at)
    x = torch.randn(2, 1, 16, 16, 8, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 2, 16, 16, 8)
    y.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())


def test_coordinates_make_the_output_position_dependent():
    # A constant image through an untrained net: without coordinates every interior voxel sees the
    # same neighbourhood, so the output is translation invariant away from the border; with them not.
    x = torch.zeros(1, 1, 32, 32, 16)
    outs = {}
    for coords in [(), ("input", "head")]:
        torch.manual_seed(0)
        model = build_model("coordunet", levels=2, base_filters=4, coords_at=coords).eval()
        with torch.no_grad():
            outs[coords] = model(x)[0, :, 12:20, 12:20, 6:10]
    flat = outs[()]
    assert torch.allclose(flat, flat[:, :1, :1, :1].expand_as(flat), atol=1e-5)
    coord = outs[("input", "head")]
    assert not torch.allclose(coord, coord[:, :1, :1, :1].expand_as(coord), atol=1e-5)


def test_input_checks_use_the_image_channels():
    model = build_model("coordunet", levels=2, base_filters=2)
    with pytest.raises(InputError, match=r"expects 1 input channel\(s\), got 4"):
        model(torch.zeros(1, 4, 8, 8, 8))


def test_bad_coords_at():
    with pytest.raises(ConfigError, match=r"coords_at=\['input', 'tail'\] is invalid"):
        build_model("coordunet", coords_at=["input", "tail"])
