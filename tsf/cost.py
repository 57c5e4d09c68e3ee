"""What a TimeSformer costs: FLOPs (the architecture's and what really runs), memory estimates
counted from the tensors a step holds, and the peak memory a block of code measurably takes.

FLOPs count a multiply-add as 2 (``torch.utils.flop_counter``'s convention).

- ``count_flops``: the architecture's FLOPs of one clip's forward pass, attention matmuls
  included: the same number whatever path the model would take (lean or reference, fused or
  explicit attention) and whatever the device. The model runs on the meta device (no memory,
  no time, any size) with the lean path off (``tsf.lean``) and the explicit attention, whose two
  matmuls per attention have formulas (a fused CPU attention kernel has none and counted zero).
- ``executed_flops``: the FLOPs a call really executes, by the same formulas: tsf's lean
  inference path executes fewer than the architecture (``tsf.lean``).

Memory: ``attention_memory_bytes`` (the explicit attention's probabilities, which grow
quadratically with the tokens), ``estimate_gpu_memory_gib`` (a training step or a forward pass
on a GPU, with ``parameter_count`` and ``tokens_per_clip``) and ``peak_memory`` (measured).
"""
from __future__ import annotations

import contextlib
import gc
from typing import Callable, Iterator, Optional, Union

import torch

from .model import TimeSformer, TimeSformerConfig

BYTES_FP32 = 4


# -- FLOPs ------------------------------------------------------------------------------------------
def count_flops(model_or_config: Union[TimeSformer, TimeSformerConfig], num_frames: Optional[int] = None,
                img_size: Optional[int] = None) -> int:
    """The architecture's FLOPs of one clip's forward pass, attention matmuls included.

    Args:
        model_or_config: a model (only its ``config`` is read) or an architecture.
        num_frames: frames per clip (default: the architecture's).
        img_size: frame side in pixels (default: the architecture's).
    """
    from torch.utils.flop_counter import FlopCounterMode

    config = model_or_config.config if isinstance(model_or_config, TimeSformer) else model_or_config
    meta = TimeSformer.from_config(config).to("meta").eval()  # built on the CPU: its init reads values
    size = img_size or config.img_size
    clip = torch.zeros(1, config.in_chans, num_frames or config.num_frames, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with meta.lean_path(False), meta.explicit_attention(), counter, torch.no_grad():
        meta(clip)
    return int(counter.get_total_flops())


def executed_flops(fn: Callable[[], object]) -> int:
    """FLOPs that calling ``fn`` executes, by torch's formulas (``torch.utils.flop_counter``).

    Not ``FlopCounterMode`` itself: its module tracker installs global module hooks, which make
    tsf's blocks take their plainly written reference path and would count that path instead.

    Args:
        fn: the call to count, e.g. ``lambda: model(clip)`` (run once, for real).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            formula = flop_registry.get(func._overloadpacket)
            if formula is None:  # composite ops (linear, sdpa): count what they decompose into
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            if formula is not None:
                self.flops += formula(*args, **kwargs, out_val=out)
            return out

    counter = Count()
    with counter:
        fn()
    return int(counter.flops)


# -- memory estimates -------------------------------------------------------------------------------
def attention_memory_bytes(config: TimeSformerConfig, num_frames: int, img_size: int, batch_size: int = 1,
                           training: bool = True) -> int:
    """Bytes of fp32 attention probabilities the explicit attention path holds at its peak.

    One block's probabilities are ``batch x heads x sum over its sequences of L^2``: joint, one
    sequence of ``1 + N T`` tokens; space-only, ``T`` sequences of ``1 + N``; divided, ``T``
    spatial sequences of ``1 + N`` plus ``N`` temporal sequences of ``T``. Inference holds one
    block's scores and probabilities at a time (2 blocks' worth); training keeps every block's
    probabilities for the backward pass and, at the last block's backward, their gradients and
    those of the scores too (``depth + 2`` blocks' worth). The rest of the activations grow
    linearly with the tokens and are not included.

    Args:
        config: the architecture (``attention_type``, patch size, heads, depth).
        num_frames: T.
        img_size: side of the square frames in pixels.
        batch_size: clips per step.
        training: a training step (forward and backward) rather than a forward pass.
    """
    grid = img_size // config.patch_size
    patches, frames = grid * grid, num_frames
    if config.attention_type == "joint_space_time":
        squares = (1 + patches * frames) ** 2
    elif config.attention_type == "space_only":
        squares = frames * (1 + patches) ** 2
    else:
        squares = frames * (1 + patches) ** 2 + patches * frames**2
    per_block = batch_size * config.num_heads * squares * BYTES_FP32
    return per_block * (config.depth + 2 if training else 2)


# Bytes a training step keeps per token and block, per unit of width D, under bf16 autocast with the
# fused (flash / memory-efficient) attention, counted from what the model's lean training path saves
# for backward: each LayerNorm+Linear keeps its fp32 input (4), each attention its bf16 q, k, v (6)
# and output (2), the MLP its bf16 4D hidden layer (8), divided blocks also temporal_fc's input (2).
_SAVED_BYTES_PER_WIDTH = {"divided_space_time": 4 + 6 + 2 + 2 + 4 + 6 + 2 + 4 + 8, "space_only": 4 + 6 + 2 + 4 + 8,
                          "joint_space_time": 4 + 6 + 2 + 4 + 8}
# Inference keeps nothing; the peak is about one block's working set: fp32 stream, qkv, output, hidden.
_INFERENCE_BYTES_PER_WIDTH = 4 + 6 + 2 + 8
_STATE_BYTES = {"sgd": 4 + 4 + 4, "adamw": 4 + 4 + 8}  # fp32 weights, gradients, optimiser state
_CUDA_OVERHEAD_GIB = 1.0  # CUDA context, kernel workspaces, allocator slack


def parameter_count(config: TimeSformerConfig) -> int:
    """Parameters of an architecture (the model's layers, counted without building it)."""
    D, patch, frames = config.embed_dim, config.patch_size, config.num_frames
    hidden = int(D * config.mlp_ratio)
    bias = D if config.qkv_bias else 0
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731 - a formula, named for reading
    attention = 3 * D * D + 3 * bias + linear(D, D)
    block = 2 * D + attention + 2 * D + linear(D, hidden) + linear(hidden, D)
    if config.attention_type == "divided_space_time":
        block += 2 * D + attention + linear(D, D)  # temporal norm, attention and fc
    embeddings = config.in_chans * patch * patch * D + D + D + (config.num_patches + 1) * D
    if config.attention_type != "space_only":
        embeddings += frames * D
    head = linear(D, config.num_classes) if config.num_classes else 0
    return embeddings + config.depth * block + 2 * D + head


def tokens_per_clip(config: TimeSformerConfig) -> int:
    """Tokens a block processes per clip (space-only: each frame's sequence with its class token)."""
    if config.attention_type == "space_only":
        return config.num_frames * (config.num_patches + 1)
    return config.num_frames * config.num_patches + 1


def estimate_gpu_memory_gib(config: TimeSformerConfig, batch_size: int, optimizer: Optional[str]) -> float:
    """Estimated peak GPU memory of one process, in GiB: training (``optimizer`` given) keeps
    fp32 weights, gradients and optimiser state plus the activations saved for backward; inference
    keeps the weights and one block's working set. bf16 autocast (its bf16 weight copies
    included) and fused attention, as a recipe runs on a GPU; plus the CUDA context. An estimate
    from counting tensors, not a measurement: allocator fragmentation and kernel workspaces vary
    with the GPU and the PyTorch version.

    Args:
        config: the architecture.
        batch_size: clips per forward pass on the process.
        optimizer: ``sgd`` or ``adamw`` for a training step; None for inference.
    """
    params = parameter_count(config)
    tokens = tokens_per_clip(config) * batch_size
    if optimizer is None:
        state = params * (4 + 2)
        activations = tokens * config.embed_dim * _INFERENCE_BYTES_PER_WIDTH
    else:
        state = params * (_STATE_BYTES[optimizer] + 2)
        activations = tokens * config.embed_dim * _SAVED_BYTES_PER_WIDTH[config.attention_type] * config.depth
    return (state + activations) / 2**30 + _CUDA_OVERHEAD_GIB


# -- measured memory ----------------------------------------------------------------------------------
def resident_memory_mib() -> Optional[float]:
    """This process's resident set (``VmRSS``) in MiB; None off Linux."""
    return _proc_status_mib("VmRSS")


def _proc_status_mib(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Return freed heap pages to the OS and reset the kernel's RSS high-water mark (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: Union[str, torch.device]) -> Iterator[dict]:
    """Peak memory used by the ``with`` body above what was in use when it started.

    CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` at the start. CPU: the
    process's resident-set high-water mark (``VmHWM``) minus its resident set at the start, after
    returning freed heap pages to the OS and resetting the mark (Linux). DataLoader worker
    processes are not included.

    Args:
        device: the device the body computes on.

    Yields:
        A dict filled when the body ends: ``peak_mib`` (None where it cannot be measured),
        ``base_mib`` (in use at the start: allocated on CUDA, resident on CPU) and ``method``.
    """
    device = torch.device(device)
    out: dict = {"peak_mib": None, "base_mib": None,
                 "method": "unavailable (needs Linux /proc/self/clear_refs or CUDA)"}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = out["base_mib"] = torch.cuda.memory_allocated(device) / 2**20
        yield out
        torch.cuda.synchronize(device)
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 - base
        out["method"] = "torch.cuda.max_memory_allocated minus memory_allocated at the start"
        return
    reset = _reset_rss_peak()
    base = out["base_mib"] = resident_memory_mib()
    yield out
    high_water = _proc_status_mib("VmHWM")
    if reset and base is not None and high_water is not None:
        out["peak_mib"] = max(high_water - base, 0.0)
        out["method"] = ("process RSS high-water mark (VmHWM) minus RSS at the start, freed heap returned to the OS "
                         "(malloc_trim) and the mark reset (/proc/self/clear_refs) first")


__all__ = ["count_flops", "executed_flops", "attention_memory_bytes", "parameter_count", "tokens_per_clip",
           "estimate_gpu_memory_gib", "resident_memory_mib", "peak_memory"]
