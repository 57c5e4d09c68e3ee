"""Process-group plumbing for ``torchrun``: one process per device, NCCL on GPUs, gloo on CPUs.

Launched without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here degrades to
a single process: rank 0 of a world of 1, and the collectives return their input.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int  # global rank; rank 0 logs and writes checkpoints
    world_size: int
    local_rank: int  # rank within this node; picks the GPU
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's CUDA device when there is one, else the CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        local_rank: the process's rank on its node, which picks the GPU under ``torchrun``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but PyTorch sees no CUDA device; use --device cpu (or auto)")
    return resolved


def launched_world_size() -> int:
    """How many processes ``torchrun`` started over all nodes (1 without it); known before ``setup``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str = "auto") -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, once per process.

    Args:
        device: as in ``resolve_device``; under ``torchrun`` each process takes GPU ``LOCAL_RANK``.
    """
    world_size = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def teardown(synchronize: bool = True) -> None:
    """Leave the process group.

    Args:
        synchronize: wait for every rank first (a rank that destroys its group while a peer still
            talks to it can abort the peer at exit, gloo); False on a failure that only this rank
            may have met, where the peers would never arrive.
    """
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (in place, and returned)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (picklable objects; small ones: metrics, RNG states)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Optional[Any]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
