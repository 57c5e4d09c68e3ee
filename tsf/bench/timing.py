"""Timing a call on a device, and the matmul peak the achieved FLOP/s are compared with."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from .device import gpu_bf16_peak_tflops


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, the device's queued work finished on both sides."""
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    """Every timing, their median (the figure reported) and their minimum."""
    return {"times_s": [round(t, 6) for t in times], "median_s": statistics.median(times), "min_s": min(times)}


def measure_peak(device: torch.device, repeats: int = 3) -> dict:
    """The matmul peak the FLOP/s are compared with: measured fp32 on CPU (square 2048, and the
    base model's MLP shape at batch 1, through ``torch.matmul`` and through oneDNN with reordered
    weights, as tsf's inference path runs it), with the bf16 and int8 rates beside it; documented
    dense bf16 on CUDA (a measured bf16 matmul is recorded beside it).

    Args:
        device: where to measure.
        repeats: timed matmuls per shape; each shape's fastest counts.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(8192, 8192, 8192), (4096, 4096, 4096)] if device.type == "cuda" else [(2048, 2048, 2048), (1569, 768, 3072)]
    measured = {}
    generator = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=generator).to(device, dtype)
        b = torch.randn(k, n, generator=generator).to(device, dtype)
        timed(lambda: a @ b, device)
        times = [timed(lambda: a @ b, device) for _ in range(repeats)]
        measured[f"{m}x{k}x{n}"] = {"times_s": [round(t, 6) for t in times], "flops_per_s": 2 * m * k * n / min(times)}
        del a, b
    if device.type == "cpu":  # the same MLP product on oneDNN with reordered weights, as tsf's inference path runs it
        onednn = _onednn_fp32_rate(repeats)
        if onednn:
            measured["1569x768x3072 onednn"] = onednn
    best = max(v["flops_per_s"] for v in measured.values())
    out = {"dtype": str(dtype).replace("torch.", ""), "measured": measured, "measured_best_flops_per_s": best}
    if device.type == "cuda":
        documented = gpu_bf16_peak_tflops(torch.cuda.get_device_name(device))
        out["documented_bf16_dense_flops_per_s"] = documented * 1e12 if documented else None
        out["flops_per_s"] = documented * 1e12 if documented else best
        out["kind"] = "documented dense bf16 peak" if documented else "measured bf16 matmul (device not in GPU_BF16_PEAK_TFLOPS)"
    else:
        out["flops_per_s"] = best
        out["kind"] = "measured fp32 matmul, best of the shapes above (min time of each)"
        out["unit_peaks_flops_per_s"] = _cpu_unit_peaks(repeats)
    return out


def _onednn_fp32_rate(repeats: int) -> dict | None:
    m, k, n = 1569, 768, 3072
    generator = torch.Generator().manual_seed(0)
    a, w = torch.randn(m, k, generator=generator), torch.randn(n, k, generator=generator)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        run = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")  # noqa: E731
        run()
    except (AttributeError, RuntimeError):
        return None
    times = [timed(run, torch.device("cpu")) for _ in range(repeats)]
    return {"times_s": [round(t, 6) for t in times], "flops_per_s": 2 * m * k * n / min(times)}


def _cpu_unit_peaks(repeats: int) -> dict:
    """The bf16 matmul and the int8 ``torch._int_mm`` rate at the model's MLP shape (1569x768x3072): what
    the CPU's matrix units give (int8 counts a multiply-add as 2 ops)."""
    out = {}
    generator = torch.Generator().manual_seed(0)
    m, k, n = 1569, 768, 3072
    a = torch.randn(m, k, generator=generator)
    b = torch.randn(k, n, generator=generator)
    cases = {"bf16": (a.bfloat16(), b.bfloat16(), torch.matmul),
             "int8": (a.clamp(-1, 1).mul(127).to(torch.int8), b.clamp(-1, 1).mul(127).to(torch.int8), torch._int_mm)}
    for name, (x, y, op) in cases.items():
        try:
            op(x, y)
            times = [timed(lambda: op(x, y), torch.device("cpu")) for _ in range(repeats)]
        except (RuntimeError, AttributeError):  # an op this build lacks
            continue
        out[name] = 2 * m * k * n / min(times)
    return out


def best_peak(first: dict, second: dict) -> dict:
    """Two ``measure_peak`` results as one: both's raw timings, each shape's best rate, and the
    best of all as the reference (unless the device's documented peak is)."""
    merged = dict(first)
    merged["measured"] = {}
    for shape, a in first["measured"].items():
        b = second["measured"].get(shape, a)
        merged["measured"][shape] = {"times_s": a["times_s"] + b["times_s"],
                                     "flops_per_s": max(a["flops_per_s"], b["flops_per_s"])}
    merged["measured_best_flops_per_s"] = max(v["flops_per_s"] for v in merged["measured"].values())
    if "unit_peaks_flops_per_s" in first:
        merged["unit_peaks_flops_per_s"] = {k: max(v, second.get("unit_peaks_flops_per_s", {}).get(k, 0.0))
                                            for k, v in first["unit_peaks_flops_per_s"].items()}
    if merged.get("documented_bf16_dense_flops_per_s") is None:
        merged["flops_per_s"] = merged["measured_best_flops_per_s"]
    merged["measured_when"] = "before and after the inference and training sections"
    return merged


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
