"""`python -m tsf bench`: tsf against Hugging Face ``transformers``, same weights, same inputs, one run.

Sections (``BenchSettings.sections``, default all):

inference  clips/s at each batch size for tsf fused (SDPA), tsf explicit (softmax path, as used
           for attention maps), tsf int8 (CPU, ``tsf.quantize``) and transformers'
           ``TimesformerForVideoClassification`` loaded from tsf's weights exported to the Hugging
           Face format; the achieved FLOP/s as a fraction of the peak (below); max |logits - HF|;
           int8 fidelity (top-1 agreement, logit error) against fp32 (``inference``).
train      one optimiser step (cross-entropy, AdamW): time and peak memory, for tsf, tsf with
           gradient checkpointing, HF and HF with gradient checkpointing; each configuration runs
           in its own fresh process so that memory measurements cannot contaminate each other
           (``training``).
data       ``tsf.data.bench.benchmark_loading``: clips/s per worker, tsf's loader vs full decoding.

The peak (``timing.measure_peak``): on CPU the best fp32 matmul measured in the same run, before
and after the timed sections; on CUDA the device's documented dense bf16 tensor-core peak
(``device.GPU_BF16_PEAK_TFLOPS``), with a measured bf16 matmul beside it. FLOP/s use the
architecture's FLOPs (``tsf.cost.count_flops``, multiply-add = 2; a training step counts 3x the
forward); ``executed_fraction_of_peak`` uses the FLOPs the call really executes
(``tsf.cost.executed_flops``), which tsf's lean inference path lowers (``tsf.lean``).

Memory: ``tsf.cost.peak_memory`` around one more training step, in the child process. CPU: the
peak resident memory above the steady state (weights, gradients and AdamW state already
resident), so activations plus the backward pass's transients as the OS saw them; CUDA:
``max_memory_allocated`` during the step minus ``memory_allocated`` before it.

``benchmark`` returns the report: every raw timing, the device, versions and the ratios against
HF (``report.ratios``); ``report.markdown`` renders it. The project's targets for those ratios
are in bench/README.md, not here: the report measures, the reader judges.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# name -> the module of this package that defines it; imported on first use, so that the
# command line reads SECTIONS without loading torch
_EXPORTS = {
    "SECTIONS": "settings",
    "BenchSettings": "settings",
    "benchmark": "benchmark",
    "bench_data": "benchmark",
    "markdown": "report",
    "ratios": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
