"""Which training cases each epoch sees: hard-case sampling (``data.hard_case_sampling``; not in the paper).

Owns :class:`HardCaseSampler`. The paper (and the default, ``data.hard_case_sampling=0``) shows
every training case once per epoch in a shuffled order (:class:`torch.utils.data.DistributedSampler`).
With a share ``s > 0`` each epoch instead draws as many cases, *with replacement*, from

    p_i = (1 - s) / N  +  s × loss_i / Σ_j loss_j

where ``loss_i`` is case i's most recent training loss (the loss of the batch it was in), so
cases the network still gets wrong — rare presentations, faint or small lesions — come back more
often, and no case drops below ``(1 - s) / N``. A case not trained on yet counts as the hardest
seen (the first epoch is uniform). The draw is a function of ``(seed, epoch)`` and the loss table
only, the same on every rank; rank r takes draws ``r, r + W, r + 2W, ...`` (as DistributedSampler
shards), and after each epoch the ranks' losses are summed (:meth:`HardCaseSampler.reduce_epoch`)
so every rank holds the same table. The table is saved in the checkpoint, so a resumed run draws
exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from rrcunet.errors import ConfigError

__all__ = ["HardCaseSampler"]


class HardCaseSampler(Sampler[int]):
    """Draw each epoch's training cases with probability growing with their last training loss.

    Args:
        n_cases: number of training cases N.
        share: ``s`` in ``[0, 1]``: the part of the probability given by the losses (0 = uniform with
            replacement, 1 = proportional to the losses).
        num_replicas: DDP world size W (1 without DDP).
        rank: this process's rank.
        seed: the run's seed; the epoch's draw uses ``seed`` and the epoch number.

    Example::

        sampler = HardCaseSampler(200, share=0.5, num_replicas=1, rank=0, seed=0)
        sampler.set_epoch(1)
        order = list(sampler)                 # 200 case indices, uniform in epoch 1
        sampler.record(batch_losses)          # after training on them (one loss per batch)
        sampler.reduce_epoch(all_reduce_sum)  # with DDP: make every rank's table the same
    """

    def __init__(self, n_cases: int, *, share: float, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if n_cases < 1:
            raise ConfigError(f"hard-case sampling needs at least one training case, got {n_cases}")
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"data.hard_case_sampling must be in [0, 1], not {share}")
        self.n_cases, self.share = int(n_cases), float(share)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.num_samples = math.ceil(self.n_cases / self.num_replicas)
        self.losses = torch.full((self.n_cases,), math.nan, dtype=torch.float64)
        self.epoch = 0
        self._pending: list[tuple[int, float]] = []
        self._drawn: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def probabilities(self) -> torch.Tensor:
        """``p_i`` of every case for the next draw (sums to 1)."""
        losses = self.losses.clone()
        seen = ~torch.isnan(losses)
        uniform = torch.full_like(losses, 1.0 / self.n_cases)
        if not bool(seen.any()):
            return uniform
        losses[~seen] = losses[seen].max()
        losses = losses.clamp(min=0.0)
        total = float(losses.sum())
        if total <= 0.0:
            return uniform
        return (1.0 - self.share) * uniform + self.share * losses / total

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = torch.multinomial(self.probabilities(), self.num_samples * self.num_replicas, replacement=True,
                                  generator=gen)
        self._drawn = draws[self.rank::self.num_replicas].tolist()
        return iter(self._drawn)

    def __len__(self) -> int:
        return self.num_samples

    def record(self, batch_losses: Sequence[float], indices: Sequence[int] | None = None) -> None:
        """Note this rank's training losses, one per batch (each case of a batch gets the batch's
        loss), for ``indices`` in the order they were trained (default: this rank's last draw, which
        a DataLoader visits in order). Applied by :meth:`reduce_epoch`."""
        indices = self._drawn if indices is None else indices
        per_batch = max(1, math.ceil(len(indices) / max(len(batch_losses), 1)))
        for k, value in enumerate(batch_losses):
            for i in indices[k * per_batch:(k + 1) * per_batch]:
                self._pending.append((int(i), float(value)))

    def reduce_epoch(self, all_reduce_sum: Any) -> None:
        """Merge every rank's recorded losses into the table (a case drawn several times gets the
        mean of its losses). ``all_reduce_sum(tensor) -> tensor`` sums over ranks (identity without DDP)."""
        sums = torch.zeros(2, self.n_cases, dtype=torch.float64)
        for i, value in self._pending:
            sums[0, i] += value
            sums[1, i] += 1.0
        self._pending = []
        sums = all_reduce_sum(sums)
        seen = sums[1] > 0
        self.losses[seen] = sums[0][seen] / sums[1][seen]

    def state(self) -> list[float | None]:
        """The loss table as JSON data (``None`` for cases not trained on yet)."""
        return [None if math.isnan(v) else float(v) for v in self.losses.tolist()]

    def load_state(self, state: Sequence[float | None] | None) -> None:
        if state is None:
            return
        if len(state) != self.n_cases:
            raise ConfigError(f"the checkpoint's hard-case loss table has {len(state)} cases, this run has "
                              f"{self.n_cases} training cases")
        self.losses = torch.tensor([math.nan if v is None else float(v) for v in state], dtype=torch.float64)
