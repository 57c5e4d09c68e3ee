"""The inference paths one benchmark run compares, and which of them apply on this machine.

Each tsf row has a transformers row at the same precision (its ``baseline``):

============================  =======================================================  ==============
row                           what runs                                                baseline
============================  =======================================================  ==============
``tsf_fp32``                  tsf, fused attention (SDPA), fp32                         ``hf_fp32``
``tsf_fp32_explicit``         tsf's explicit softmax attention (attention maps); full   ``hf_fp32``
``tsf_bf16``                  tsf under ``torch.autocast("cpu", bfloat16)`` (its lean   ``hf_bf16``
                              path's bf16 inference: cached bf16 weights, fp32 stream)
``tsf_int8``                  ``tsf.quantize.quantize(model, calibration=...)``: static  ``hf_int8``
                              int8, oneDNN (AMX-INT8 / VNNI)
``tsf_int8_dynamic``          ``tsf.quantize.quantize(model)``: dynamic int8; full       ``hf_int8``
``onnxruntime_fp32``          ``tsf.export.export_onnx`` in onnxruntime (CPU EP)        ``hf_fp32``
``onnxruntime_int8``          that file through onnxruntime's ``quantize_dynamic``;     ``hf_int8``
                              full
``hf_fp32``, ``hf_bf16``      transformers' ``TimesformerForVideoClassification``,
                              fp32 / under the same autocast
``hf_int8``                   transformers' model through ``torch.ao.quantization.
                              quantize_dynamic`` (the stock PyTorch int8 recipe)
============================  =======================================================  ==============

On CUDA the rows are ``tsf_<p>``, ``hf_<p>`` and ``tsf_compiled_<p>`` under the autocast ``p``
(bf16, fp16 on GPUs without bf16), plus fp32 in the full run.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .. import cpu, runtime
from ..export import export_onnx, onnx_session
from ..model import TimeSformer
from ..quantize import kernels, quantize
from .settings import PATHS, BenchSettings


@dataclass
class InferencePath:
    """One benchmarked row: ``run`` takes the clip batch in its ``layout`` (prepared outside the timing)."""

    name: str
    family: str  # tsf, hf, onnxruntime
    precision: str  # fp32, bf16, fp16, int8
    run: Callable[[object], object]
    layout: str = "tsf"  # tsf (B, C, T, H, W) tensor, hf (B, T, C, H, W) tensor, numpy (B, C, T, H, W) array
    baseline: Optional[str] = None
    note: str = ""
    setup_s: float = 0.0
    extra: dict = field(default_factory=dict)
    model: Optional[TimeSformer] = None  # the tsf model behind the row, its weights fixed while timed


def applicable(settings: BenchSettings, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The CPU paths (``settings.PATHS``) this run measures, and why each other one is skipped."""
    wanted = settings.paths or PATHS
    units = cpu.matrix_units()
    skipped: dict[str, str] = {}
    chosen = []
    for path in PATHS:
        if path not in wanted:
            skipped[path] = "not in --paths"
        elif device.type == "cuda" and path != "fp32":
            skipped[path] = "CPU path (the GPU rows run under autocast)"
        elif settings.precision not in ("auto", "fp32") and path == "onnxruntime":
            skipped[path] = f"--precision {settings.precision}"
        elif settings.precision not in ("auto",) and path == "int8":
            skipped[path] = f"--precision {settings.precision}"
        elif settings.precision == "fp32" and path == "bf16":
            skipped[path] = "--precision fp32"
        elif path == "bf16" and not units.bf16 and not settings.full and settings.precision != "bf16":
            skipped[path] = ("no bf16 matrix units (AMX-BF16, AVX512-BF16): bf16 would be emulated, slower than fp32; "
                             "--full or --precision bf16 measures it anyway")
        elif path == "int8" and not kernels():
            skipped[path] = "this PyTorch build has no quantized CPU kernels"
        elif path == "onnxruntime" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
            skipped[path] = "onnx, onnxscript or onnxruntime is not installed (pip install onnx onnxscript onnxruntime)"
        else:
            chosen.append(path)
    return chosen, skipped


def build_paths(model: TimeSformer, hf: Optional[nn.Module], settings: BenchSettings, device: torch.device,
                folder: Path, calibration: torch.Tensor) -> tuple[list[InferencePath], dict[str, str]]:
    """Every row of this run, ready to time; and the skipped paths with the reason.

    Args:
        model: the tsf model (eval mode, on ``device``).
        hf: its transformers twin, or None.
        settings: the run's settings (device resolved).
        device: where the PyTorch rows run.
        folder: a temporary folder (the ONNX files).
        calibration: clips for the static int8 quantization (not the timed or checked ones).
    """
    chosen, skipped = applicable(settings, device)
    rows: list[InferencePath] = []
    if device.type == "cuda":
        precision = runtime.resolve_precision(settings.precision, device)
        precisions = ([precision] + (["fp32"] if settings.full and precision != "fp32" else []))
        for p in precisions:
            rows.append(InferencePath(f"tsf_{p}", "tsf", p, _autocast(model, p, device), baseline=f"hf_{p}", model=model))
            if settings.compile:
                rows.append(InferencePath(f"tsf_compiled_{p}", "tsf", p, _autocast(torch.compile(model), p, device),
                                          baseline=f"hf_{p}"))
            if hf is not None:
                rows.append(InferencePath(f"hf_{p}", "hf", p, _autocast(_hf_logits(hf), p, device), layout="hf"))
        return rows, skipped

    units = cpu.matrix_units()
    if "fp32" in chosen:
        rows.append(InferencePath("tsf_fp32", "tsf", "fp32", model, baseline="hf_fp32", model=model))
        if settings.full:
            rows.append(InferencePath("tsf_fp32_explicit", "tsf", "fp32", _explicit(model), baseline="hf_fp32",
                                      note="explicit softmax attention, as for attention maps", model=model))
        if hf is not None:
            rows.append(InferencePath("hf_fp32", "hf", "fp32", _hf_logits(hf), layout="hf"))
    if "bf16" in chosen:
        note = "" if units.bf16 else "emulated: this CPU has no bf16 matrix units"
        rows.append(InferencePath("tsf_bf16", "tsf", "bf16", _autocast(model, "bf16", device), baseline="hf_bf16", note=note,
                                  model=model))
        if hf is not None:
            rows.append(InferencePath("hf_bf16", "hf", "bf16", _autocast(_hf_logits(hf), "bf16", device), layout="hf",
                                      note=note))
    if "int8" in chosen:
        start = time.perf_counter()
        static = "onednn" in kernels()
        int8 = quantize(model, calibration=calibration if static else None)
        rows.append(InferencePath("tsf_int8", "tsf", "int8", int8, baseline="hf_int8", setup_s=time.perf_counter() - start,
                                  model=int8,
                                  note=(f"static, calibrated on {calibration.shape[0]} clips, oneDNN" if static
                                        else "dynamic (no oneDNN qlinear in this build)")))
        if settings.full and static:
            dynamic = quantize(model)
            rows.append(InferencePath("tsf_int8_dynamic", "tsf", "int8", dynamic, baseline="hf_int8",
                                      note="dynamic (no calibration), oneDNN", model=dynamic))
        if hf is not None:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
                hf_int8 = torch.ao.quantization.quantize_dynamic(hf, {nn.Linear}, dtype=torch.qint8, inplace=False)
            rows.append(InferencePath("hf_int8", "hf", "int8", _hf_logits(hf_int8), layout="hf",
                                      setup_s=time.perf_counter() - start,
                                      note=f"torch.ao.quantization.quantize_dynamic ({torch.backends.quantized.engine})"))
    if "onnxruntime" in chosen:
        rows += _onnx_rows(model, settings, folder)
    return rows, skipped


def _onnx_rows(model: TimeSformer, settings: BenchSettings, folder: Path) -> list[InferencePath]:
    start = time.perf_counter()
    path = export_onnx(model, folder / "model.onnx", overwrite=True)
    session = onnx_session(path, settings.threads or torch.get_num_threads())
    rows = [InferencePath("onnxruntime_fp32", "onnxruntime", "fp32", _ort(session), layout="numpy", baseline="hf_fp32",
                          setup_s=time.perf_counter() - start, note="tsf.export.export_onnx, CPU execution provider",
                          extra={"onnxruntime": importlib.import_module("onnxruntime").__version__})]
    if settings.full:
        start = time.perf_counter()
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # its advice to pre-process the model is for other models
        try:
            quantize_dynamic(str(path), str(folder / "model_int8.onnx"), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        session8 = onnx_session(folder / "model_int8.onnx", settings.threads or torch.get_num_threads())
        rows.append(InferencePath("onnxruntime_int8", "onnxruntime", "int8", _ort(session8), layout="numpy",
                                  baseline="hf_int8", setup_s=time.perf_counter() - start,
                                  note="onnxruntime.quantization.quantize_dynamic (QInt8 weights)"))
    return rows


def _autocast(fn: Callable, precision: str, device: torch.device) -> Callable:
    def run(x):
        with runtime.autocast(precision, device):
            return fn(x)
    return run


def _explicit(model: TimeSformer) -> Callable:
    def run(x):
        with model.explicit_attention():
            return model(x)
    return run


def _hf_logits(hf: nn.Module) -> Callable:
    return lambda x: hf(pixel_values=x).logits


def _ort(session) -> Callable:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x})[0])
