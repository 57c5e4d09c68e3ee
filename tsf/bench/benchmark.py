"""One benchmark run: every section ``BenchSettings`` asks for, into one report."""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch

from .. import runtime
from ..cost import count_flops
from ..data.bench import benchmark_loading
from .agreement import agreement
from .device import describe_device, versions
from .inference import bench_inference
from .models import export, load_model
from .report import apply_peak, ratios, recommend
from .settings import BenchSettings
from .timing import best_peak, measure_peak
from .training import bench_train


def benchmark(settings: Optional[BenchSettings] = None) -> dict:
    """Run the benchmark and return the report (the JSON written by ``python -m tsf bench``).

    Args:
        settings: what to measure (default: ``BenchSettings()``).
    """
    settings = settings or BenchSettings()
    device = runtime.resolve_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    resolved = replace(settings, device=str(device), train_batch=settings.train_batch or (8 if device.type == "cuda" else 1),
                       threads=torch.get_num_threads())
    report: dict = {
        "schema": 3,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": describe_device(device),
        "versions": versions(),
        "settings": {**asdict(resolved), "weights": settings.weights or "random init (seed 0)"},
        "notes": [],
    }
    if device.type == "cpu":
        report["notes"].append("CPU run: the GPU paths (bf16 autocast, SDPA flash, torch.compile, MFU against the "
                               "documented dense bf16 peak) exist but were not exercised")
        if not resolved.full:
            report["notes"].append("quick run (inference at batch 1): python -m tsf bench --full adds batch 4, the "
                                   "training and data sections and the full set of rows")
    model = load_model(resolved.preset, resolved.weights)
    flops = count_flops(model)
    report["flops_per_clip_forward"] = flops
    peak = measure_peak(device, repeats=max(resolved.repeats, 5))

    with tempfile.TemporaryDirectory(prefix="tsf-bench-") as tmp:
        tsf_path, hf_dir, hf_note = export(model, Path(tmp), resolved.hf)
        if hf_note:
            report["notes"].append(hf_note)
        if "inference" in resolved.sections:
            report["inference"] = bench_inference(model, hf_dir, resolved, flops, Path(tmp))
        if "train" in resolved.sections:
            report["train"] = bench_train(tsf_path, hf_dir, resolved, flops)
    # the peak again, after the heavy sections: the best rate seen in the run is the reference
    report["peak"] = best_peak(peak, measure_peak(device, repeats=max(resolved.repeats, 5)))
    apply_peak(report)
    if "data" in resolved.sections:
        report["data"] = bench_data(model.config, resolved.repeats)
    if "agreement" in resolved.sections:
        report["agreement"] = (agreement(model, resolved.weights, resolved.agreement_data) if resolved.weights else
                               {"skipped": "random-init weights: agreement on real videos needs a trained model (--weights)"})
    report["ratios"] = ratios(report)
    report["ratios_min"] = ratios(report, "min")
    report["recommendation"] = recommend(report)
    return report


def bench_data(config, repeats: int) -> dict:
    """``tsf.data.bench.benchmark_loading`` at the model's clip shape: clips/s per worker, tsf's
    loader vs decoding the whole video.

    Args:
        config: the model's ``TimeSformerConfig`` (frames per clip, crop size).
        repeats: timed repetitions.
    """
    try:
        return benchmark_loading(num_frames=config.num_frames, crop_size=config.img_size, repeats=repeats)
    except Exception as err:  # noqa: BLE001 - the data benchmark must not sink the others
        return {"error": f"{type(err).__name__}: {err}"}
