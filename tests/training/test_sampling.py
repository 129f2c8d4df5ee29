"""Hard-case sampling: probabilities, sharding over ranks, loss bookkeeping, resume state."""

from __future__ import annotations

import math

import pytest
import torch

from rrcunet.errors import ConfigError
from rrcunet.training import load_config, train
from rrcunet.training.checkpoint import load_checkpoint
from rrcunet.training.sampling import HardCaseSampler
from tests.training.conftest import tiny_overrides, write_tiny_dataset


def test_first_epoch_uniform_then_weighted_by_losses():
    s = HardCaseSampler(4, share=0.5)
    torch.testing.assert_close(s.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    s.set_epoch(1)
    order = list(s)
    assert len(order) == 4 and all(0 <= i < 4 for i in order)
    s.record([1.0, 1.0, 1.0, 5.0], [0, 1, 2, 3])
    s.reduce_epoch(lambda t: t)
    # p = 0.5/4 + 0.5 * loss / 8
    expected = torch.tensor([0.125 + 0.0625] * 3 + [0.125 + 0.3125], dtype=torch.float64)
    torch.testing.assert_close(s.probabilities(), expected)
    # the hard case is drawn far more often over many draws
    s.set_epoch(2)
    counts = torch.bincount(torch.tensor([i for e in range(200) for i in (s.set_epoch(e), list(s))[1]]), minlength=4)
    assert counts[3] > 1.8 * counts[:3].max()


def test_unseen_cases_count_as_hardest_and_repeats_average():
    s = HardCaseSampler(3, share=1.0)
    s.record([2.0, 4.0, 1.0], [0, 0, 1])  # case 0 twice → mean 3; case 2 unseen → counts as 3
    s.reduce_epoch(lambda t: t)
    assert s.state() == [3.0, 1.0, None]
    torch.testing.assert_close(s.probabilities(), torch.tensor([3 / 7, 1 / 7, 3 / 7], dtype=torch.float64))


def test_ranks_split_one_draw_and_batches_share_their_loss():
    ranks = [HardCaseSampler(5, share=0.3, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 3 == len(ranks[0])
    full = HardCaseSampler(5, share=0.3, num_replicas=1, rank=0, seed=7)
    full.num_samples = 6  # the same 6 draws, unsharded
    full.set_epoch(3)
    assert list(full)[0::2] == a and list(full)[1::2] == b
    # batch size 2: the batch loss goes to both of its cases
    s = HardCaseSampler(4, share=1.0)
    s.record([1.0, 3.0], [0, 1, 2, 3])
    s.reduce_epoch(lambda t: t)
    assert s.state() == [1.0, 1.0, 3.0, 3.0]


def test_state_round_trip_and_bad_values():
    s = HardCaseSampler(3, share=0.5)
    s.record([2.5], [1])
    s.reduce_epoch(lambda t: t)
    t = HardCaseSampler(3, share=0.5)
    t.load_state(s.state())
    assert t.state() == [None, 2.5, None] and math.isnan(float(t.losses[0]))
    with pytest.raises(ConfigError, match="has 2 cases, this run has 3"):
        t.load_state([1.0, 2.0])
    with pytest.raises(ConfigError, match="must be in"):
        HardCaseSampler(3, share=1.5)
    with pytest.raises(ConfigError, match="data.hard_case_sampling must be in"):
        load_config(None, ["data.hard_case_sampling=-0.1"])


@pytest.mark.slow
def test_resume_with_hard_case_sampling_is_exact(tmp_path):
    """2 epochs + resume to 3 == 3 epochs straight: the loss table travels in the checkpoint."""
    data = write_tiny_dataset(tmp_path / "data", n=9, n_val=1)
    extra = ("data.hard_case_sampling=0.9", "schedule.accumulate=1", "augment.flip_prob=0.5")
    train(load_config(None, tiny_overrides(data, epochs=3, extra=extra)), tmp_path / "a")
    train(load_config(None, tiny_overrides(data, epochs=2, extra=extra)), tmp_path / "b")
    train(load_config(tmp_path / "b" / "config.json", ["schedule.epochs=3"]), tmp_path / "b", resume=True)
    last = [load_checkpoint(tmp_path / x / "checkpoints" / "last.safetensors") for x in "ab"]
    table = [c.meta["trainer"]["hard_case_losses"] for c in last]
    assert len(table[0]) == 8 and table[0] == table[1]
    assert all(torch.equal(last[0].model[k], last[1].model[k]) for k in last[0].model)
