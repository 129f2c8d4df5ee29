"""Distributed data parallel (DDP) plumbing: process group from the torchrun environment, reductions.

Owns :class:`DistContext` and :func:`setup_distributed`. Under ``torchrun`` (``WORLD_SIZE`` > 1
in the environment) the process group is initialised from the environment (``env://``) with
NCCL on GPU and gloo on CPU, and each process takes ``cuda:LOCAL_RANK``; a plain ``python`` run
is a world of one and touches no process group. The helpers reduce sums across ranks (validation
metrics are pooled as sums of counts, never as means of per-rank means) and gather byte blobs
(per-rank RNG states for the checkpoint) as tensors, without pickle.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rrcunet.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Args:
        rank: global rank (0 logs and writes files).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this process computes on.
        owns_group: True when :func:`setup_distributed` created the process group (and
            :func:`teardown_distributed` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Device of tensors handed to collectives (NCCL needs CUDA tensors)."""
        if self.distributed and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={preference!r} but no CUDA device is available; "
                          "use runtime.device=cpu (or auto)")
    if preference == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(preference)


def setup_distributed(device: str = "auto") -> DistContext:
    """Initialise DDP from the torchrun environment, or return a world of one.

    Args:
        device: ``runtime.device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``). Under
            torchrun with CUDA each process uses ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistContext(device=_pick_device(device, 0 if device == "auto" else local_rank))
    dev = _pick_device(device, local_rank)
    if dev.type == "cuda" and device in ("auto", "cuda"):
        dev = torch.device(f"cuda:{local_rank}")
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank,
                                timeout=datetime.timedelta(minutes=30))
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=dev, owns_group=owns)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.comm_device.type == "cuda":
            dist.barrier(device_ids=[ctx.comm_device.index])
        else:
            dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``values`` (float64 recommended) over ranks; returns a CPU tensor."""
    if not ctx.distributed:
        return values.detach().cpu()
    t = values.detach().to(ctx.comm_device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.comm_device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_bytes(blob: bytes, ctx: DistContext) -> list[bytes]:
    """Every rank's ``blob``, index = rank (on every rank). Sent as uint8 tensors, no pickle."""
    if not ctx.distributed:
        return [blob]
    dev = ctx.comm_device
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(dev) if blob else torch.zeros(0, dtype=torch.uint8, device=dev)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[: data.numel()] = data
    out = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(out, padded)
    return [o[: int(s.item())].cpu().numpy().tobytes() for o, s in zip(out, sizes)]
