"""What makes a resumed run the run it continues: the run folder's file names, the data order
(a seeded permutation per epoch, the same for any number of processes), every library's RNG
state, and atomic file replacement (a kill never leaves a torn file)."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

LAST, BEST = "last.pt", "best.pt"
METRICS, SUMMARY = "metrics.jsonl", "summary.json"


class ShardedShuffleSampler(Sampler[int]):
    """A seeded permutation of the dataset per epoch, the same for any number of processes; rank
    ``r`` of ``w`` takes every ``w``-th index from position ``r``, so the clips of one global batch
    do not depend on ``w``. ``start`` skips this rank's first indices (resuming mid-epoch).

    Args:
        length: dataset size.
        rank: this process's rank.
        world_size: number of processes.
        seed: the permutation of epoch ``e`` is ``randperm(length)`` seeded with ``seed + e``.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.length, self.rank, self.world_size, self.seed = length, rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        # equal shares for all ranks; the tail the division leaves out changes every epoch
        order = order[: self.per_rank() * self.world_size][self.rank :: self.world_size]
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank() - self.start


def capture_rng_state() -> dict:
    """This process's RNG states as plain containers and tensors (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def restore_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target`` through a temporary file, so ``target`` is whole at every moment."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def world_size_changed(trained: int, now: int) -> str:
    """The message for a resume on another number of processes than the run was trained on."""
    return (f"this run was trained on {trained} process(es) and this is {now}: the data order, the global batch "
            f"and the RNG streams depend on it; resume with {trained} processes in all (torchrun --nnodes N "
            f"--nproc-per-node G with N x G = {trained})")
