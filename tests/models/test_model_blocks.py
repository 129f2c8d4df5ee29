"""Block-level behaviour: the recurrence count t, the RRc join, CGPD widths, coordinates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rrcunet.errors import ConfigError
from rrcunet.models.blocks import (
    AddCoords,
    CGPDBlock,
    RecurrentBlock,
    RecurrentUnit,
    ResidualBlock,
    RRcBlock,
    make_block,
    norm_groups_for,
)


class _Affine(nn.Module):
    """f(z) = 0.5 z + 1, a stand-in for the Conv-GN-PReLU unit so the recurrence is checkable by hand
    (``residual`` is added to the output and ``tail`` concatenated after it, as :class:`ConvNormAct`
    does)."""

    def forward(self, z, residual=None, tail=None):
        y = 0.5 * z + 1.0
        y = y if residual is None else y + residual
        return y if tail is None else torch.cat((y, tail), dim=1)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (1, 1.5),  # h1 = f(1) = 1.5
        (2, 2.25),  # h2 = f(1 + 1.5) = 2.25
        (3, 2.625),  # h3 = f(1 + 2.25) = 2.625
    ],
)
def test_recurrent_unit_follows_r2unet_recurrence(t, expected):
    rb = RecurrentUnit(2, t=t)
    rb.unit = _Affine()
    out = rb(torch.ones(1, 2, 2, 2, 2))
    assert torch.allclose(out, torch.full_like(out, expected))


@pytest.mark.parametrize("t", [1, 2, 3])
def test_t_is_the_number_of_conv_applications(t):
    rb = RecurrentUnit(4, t=t)
    calls = []
    rb.unit.conv.register_forward_hook(lambda *_: calls.append(1))
    rb(torch.randn(1, 4, 4, 4, 4))
    assert len(calls) == t


def test_t_changes_calls_but_not_parameters_in_the_rrc_block():
    counts = {}
    for t in (1, 2, 4):
        block = RRcBlock(2, 8, t=t)
        calls = []
        for m in block.modules():
            if isinstance(m, nn.Conv3d):
                m.register_forward_hook(lambda *_: calls.append(1))
        block(torch.randn(1, 2, 4, 4, 4))
        counts[t] = (len(calls), sum(p.numel() for p in block.parameters()))
    # entry conv once, then two RBs of t applications each
    assert {t: c[0] for t, c in counts.items()} == {1: 3, 2: 5, 4: 9}
    assert len({c[1] for c in counts.values()}) == 1


def test_rrc_parameter_count_by_hand():
    # join="cat", 2 -> 4 channels: inner width 2.
    # entry Conv3d(2, 2, 1) with bias: 2*2 + 2 = 6
    # each RB: Conv3d(2, 2, 3) without bias 2*2*27 = 108, GroupNorm(2) 2+2 = 4, PReLU 1 -> 113
    block = RRcBlock(2, 4, join="cat")
    assert sum(p.numel() for p in block.parameters()) == 6 + 2 * 113
    # join="add", 2 -> 4: entry 2*4 + 4 = 12; RB 4*4*27 + 8 + 1 = 441
    block = RRcBlock(2, 4, join="add")
    assert sum(p.numel() for p in block.parameters()) == 12 + 2 * 441


def test_rrc_join_concatenates_rb_output_and_entry_output():
    block = RRcBlock(3, 8, join="cat").eval()
    x = torch.randn(1, 3, 4, 4, 4)
    e = block.entry(x)
    out = block(x)
    assert torch.equal(out[:, 4:], e)
    assert torch.equal(out[:, :4], block.recurrent(e))
    block = RRcBlock(3, 8, join="add").eval()
    e = block.entry(x)
    assert torch.allclose(block(x), block.recurrent(e) + e)


def test_rrc_cat_needs_even_channels():
    with pytest.raises(ConfigError, match="even number of output channels, got 5"):
        RRcBlock(2, 5, join="cat")


def test_cgpd_doubles_at_the_second_unit_only_when_widening():
    enc = CGPDBlock(32, 64, dropout=0.2)
    assert [u.conv.out_channels for u in enc.units] == [32, 64]
    assert all(isinstance(u.adn.D, nn.Dropout) for u in enc.units)
    dec = CGPDBlock(192, 64)
    assert [u.conv.out_channels for u in dec.units] == [64, 64]
    assert CGPDBlock.owns_dropout


def test_residual_block_has_projection_only_when_channels_change():
    block = ResidualBlock(4, 8)
    assert isinstance(block.units[0].residual, nn.Conv3d)
    assert isinstance(block.units[1].residual, nn.Identity)


def test_recurrent_block_has_no_residual_join():
    block = RecurrentBlock(2, 4).eval()
    x = torch.randn(1, 2, 4, 4, 4)
    assert torch.equal(block(x), block.recurrent(block.entry(x)))


def test_norm_groups_adapt_to_channels():
    assert [norm_groups_for(c, 8) for c in (2, 4, 16, 768, 12)] == [2, 4, 8, 8, 4]


def test_make_block_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown block type 'dense'.*cgpd, recurrent, residual, rrc, unet"):
        make_block("dense", 2, 4)


def test_add_coords_values():
    out = AddCoords()(torch.zeros(2, 1, 3, 2, 1))
    assert out.shape == (2, 4, 3, 2, 1)
    assert torch.equal(out[1, 1, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))  # x
    assert torch.equal(out[0, 2, 0, :, 0], torch.tensor([-1.0, 1.0]))  # y
    assert torch.equal(out[0, 3], torch.zeros(3, 2, 1))  # z axis of size 1 -> 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_group_norm_matches_group_norm_and_keeps_channels_last(dtype):
    from rrcunet.models.blocks.common import LayoutGroupNorm

    torch.manual_seed(0)
    ours, ref = LayoutGroupNorm(2, 4), nn.GroupNorm(2, 4)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 6, 7, dtype=dtype)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    x_cf = x.detach().clone().requires_grad_()
    y, y_ref = ours.to(dtype)(x_cl), ref.to(dtype)(x_cf)
    assert y.is_contiguous(memory_format=torch.channels_last_3d) and not y.is_contiguous()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x_cl.grad, x_cf.grad, atol=tol * 10, rtol=tol * 10)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=tol * 10, rtol=tol * 10)
    # contiguous input: the plain GroupNorm path, contiguous output
    assert ours(x_cf.detach()).is_contiguous()


def test_conv_norm_act_uses_the_layout_group_norm_with_monai_keys():
    from rrcunet.models.blocks.common import LayoutGroupNorm, conv_norm_act

    unit = conv_norm_act(4, 8, norm_groups=8)
    assert isinstance(unit.adn.N, LayoutGroupNorm) and unit.adn.N.num_groups == 8
    assert set(unit.state_dict()) == {"conv.weight", "adn.N.weight", "adn.N.bias", "adn.A.weight"}
