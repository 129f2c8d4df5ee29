"""Table 1 of the paper, level by level, for the default RRc-UNet 3D on a 1×2×256×256×48 input.

The full-size network is built on the ``meta`` device: shapes propagate through every layer but no
convolution is computed, so this runs in about a second. Shapes are captured with forward hooks on
each level's block (Table 1 lists a level's block input and output).
"""

from __future__ import annotations

import pytest
import torch

from rrcunet.models import build_model

# Table 1, as (channels, w, h, d). Decoder level 1's input is printed as 192×256×256×48 in the
# paper, which cannot be (its output is 128×128×24 and decoder levels keep the size): a typo for
# 192×128×128×24, which is what we expect here.
TABLE1_ENCODER = {
    0: ((2, 256, 256, 48), (32, 256, 256, 48)),
    1: ((32, 128, 128, 24), (64, 128, 128, 24)),
    2: ((64, 64, 64, 12), (128, 64, 64, 12)),
    3: ((128, 32, 32, 6), (256, 32, 32, 6)),
    4: ((256, 16, 16, 3), (512, 16, 16, 3)),
}
TABLE1_DECODER = {
    4: ((512, 16, 16, 3), (512, 16, 16, 3)),  # the bottleneck output entering the decoder
    3: ((768, 32, 32, 6), (256, 32, 32, 6)),
    2: ((384, 64, 64, 12), (128, 64, 64, 12)),
    1: ((192, 128, 128, 24), (64, 128, 128, 24)),
    0: ((96, 256, 256, 48), (32, 256, 256, 48)),
}
INPUT = (1, 2, 256, 256, 48)


def _capture(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, tuple], torch.Tensor]:
    shapes: dict[str, tuple] = {}

    def hook(name):
        def fn(_module, inputs, output):
            shapes[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))

        return fn

    handles = [s.block.register_forward_hook(hook(f"enc{i}")) for i, s in enumerate(model.encoder.stages)]
    handles += [s.block.register_forward_hook(hook(f"dec{i}")) for i, s in enumerate(model.decoder.stages)]
    handles.append(model.head.register_forward_hook(hook("head")))
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, y


@pytest.fixture(scope="module")
def default_shapes():
    with torch.device("meta"):
        model = build_model("rrcunet").eval()
    return _capture(model, torch.empty(INPUT, device="meta"))


@pytest.mark.parametrize("level", sorted(TABLE1_ENCODER))
def test_encoder_level_matches_table1(default_shapes, level):
    shapes, _ = default_shapes
    assert shapes[f"enc{level}"] == TABLE1_ENCODER[level]


@pytest.mark.parametrize("level", sorted(TABLE1_DECODER))
def test_decoder_level_matches_table1(default_shapes, level):
    shapes, _ = default_shapes
    if level == 4:  # no block: the decoder starts from the encoder's level-4 output
        assert (shapes["enc4"][1], shapes["enc4"][1]) == TABLE1_DECODER[4]
    else:
        assert shapes[f"dec{level}"] == TABLE1_DECODER[level]


def test_output_matches_table1(default_shapes):
    shapes, y = default_shapes
    # Table 1's output row: 32×256×256×48 in; "1×256×256×48" out is the label map, i.e. the
    # argmax over our 3 logit channels (background, lung, tumour).
    assert shapes["head"] == ((32, 256, 256, 48), (3, 256, 256, 48))
    assert tuple(y.argmax(dim=1, keepdim=True).shape[1:]) == (1, 256, 256, 48)


@pytest.mark.parametrize("join", ["cat", "add"])
@pytest.mark.parametrize("up_channels", ["keep", "halve"])
def test_both_readings_build_full_size(join, up_channels):
    with torch.device("meta"):
        model = build_model("rrcunet", join=join, up_channels=up_channels).eval()
    shapes, y = _capture(model, torch.empty(INPUT, device="meta"))
    assert tuple(y.shape) == (1, 3, 256, 256, 48)
    # the encoder is the same under every reading
    assert all(shapes[f"enc{i}"] == TABLE1_ENCODER[i] for i in TABLE1_ENCODER)
    # decoder input = upsampled (kept or halved) deeper level + skip
    for level in range(4):
        deeper = 32 * 2 ** (level + 1)
        up = deeper if up_channels == "keep" else deeper // 2
        assert shapes[f"dec{level}"][0][0] == up + 32 * 2**level
        assert shapes[f"dec{level}"][1][0] == 32 * 2**level


def test_cat_reading_doubles_inside_the_block():
    with torch.device("meta"):
        cat = build_model("rrcunet", join="cat")
        add = build_model("rrcunet", join="add")
    # cat: entry conv gives half the level's filters and the concatenation doubles them
    assert [s.block.entry.out_channels for s in cat.encoder.stages] == [16, 32, 64, 128, 256]
    assert [s.block.entry.out_channels for s in add.encoder.stages] == [32, 64, 128, 256, 512]
