"""The inference section: clips/s of tsf (fused, explicit, int8, compiled) and of transformers on
the same inputs, the FLOPs each executes, and how closely their logits agree."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import runtime
from ..cost import executed_flops
from ..model import TimeSformer
from ..quantize import int8_agreement, quantize
from .models import load_hf
from .settings import BenchSettings
from .timing import summary, timed


FLOPS_NOTE = ("fraction_of_peak uses the architecture's FLOPs (tsf.cost.count_flops); executed_fraction_of_peak "
              "what the call executes (tsf.cost.executed_flops: tsf's inference path folds temporal_attn.proj into "
              "temporal_fc and skips the last block's patch-token work the head never reads)")


def bench_inference(model: TimeSformer, hf_dir: Optional[Path], settings: BenchSettings, flops: int) -> dict:
    """Time every configuration at each batch size, interleaved, and check their logits.

    Args:
        model: the benchmarked model.
        hf_dir: its Hugging Face export (None: no baseline).
        settings: the run's settings, device and precision resolved (``tsf.bench.benchmark``).
        flops: the architecture's FLOPs per clip (``tsf.cost.count_flops``).

    Returns:
        ``batches`` (batch size -> configuration -> timings, clips/s, FLOP/s), ``flops`` (what they
        count), ``executed_flops_per_clip``, the logit differences and ``int8`` fidelity.
    """
    device = torch.device(settings.device)
    cfg = model.config
    model = model.to(device).eval()
    hf = load_hf(hf_dir).to(device) if hf_dir else None
    int8 = quantize(model) if device.type == "cpu" else None
    compiled = torch.compile(model) if settings.compile and device.type == "cuda" else None
    out: dict = {"batches": {}, "flops": FLOPS_NOTE}

    def explicit(x: torch.Tensor) -> torch.Tensor:
        with model.explicit_attention():
            return model(x)

    for batch in settings.batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=generator).to(device)
        x_hf = x.permute(0, 2, 1, 3, 4).contiguous()  # HF layout (B, T, C, H, W), prepared outside the timing
        configs: dict[str, Callable[[], object]] = {
            "tsf_fused": lambda: model(x),
            "tsf_explicit": lambda: explicit(x),
        }
        if compiled is not None:
            configs["tsf_compiled"] = lambda: compiled(x)
        if int8 is not None:
            configs["tsf_int8"] = lambda: int8(x)
        if hf is not None:
            configs["hf"] = lambda: hf(pixel_values=x_hf).logits
        times: dict[str, list[float]] = {name: [] for name in configs}
        with torch.inference_mode(), runtime.autocast(settings.precision, device):
            for fn in configs.values():
                for _ in range(settings.warmup):
                    timed(fn, device)
            for _ in range(settings.repeats):  # interleaved, so that drifting machine load hits every config alike
                for name, fn in configs.items():
                    times[name].append(timed(fn, device))
            if "executed_flops_per_clip" not in out:
                one, one_hf = x[:1], x_hf[:1]
                out["executed_flops_per_clip"] = {
                    "tsf_fused": _executed_flops_or_none(lambda: model(one)),
                    "tsf_explicit": _executed_flops_or_none(lambda: explicit(one)),
                    "hf": _executed_flops_or_none(lambda: hf(pixel_values=one_hf)) if hf is not None else None,
                }
        rows = {}
        for name, ts in times.items():
            row = summary(ts)
            row["clips_per_s"] = batch / row["median_s"]
            row["flops_per_s"] = flops * batch / row["median_s"]
            executed = out["executed_flops_per_clip"].get(name)
            if executed:
                row["executed_flops_per_s"] = executed * batch / row["median_s"]
            rows[name] = row
        out["batches"][str(batch)] = rows

    # accuracy: fp32 (no autocast) on the device
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(2, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=generator).to(device)
    with torch.inference_mode():
        logits = model(x)
        out["max_abs_logit_diff_explicit_vs_fused"] = (explicit(x) - logits).abs().max().item()
        if hf is not None:
            hf_logits = hf(pixel_values=x.permute(0, 2, 1, 3, 4).contiguous()).logits
            out["max_abs_logit_diff_vs_hf"] = (logits - hf_logits).abs().max().item()
            out["logit_scale"] = logits.abs().max().item()
    if int8 is not None and settings.agreement_clips > 0:
        out["int8"] = _int8_fidelity(model, int8, settings.agreement_clips, trained=settings.weights is not None)
    del hf, int8, compiled
    gc.collect()
    return out


def _executed_flops_or_none(fn: Callable[[], object]) -> Optional[int]:
    try:
        return executed_flops(fn)
    except Exception:  # noqa: BLE001 - an op the counter cannot run (a baseline's kernel) must not sink the benchmark
        return None


def _int8_fidelity(model: TimeSformer, int8: TimeSformer, clips: int, trained: bool) -> dict:
    """int8 against fp32 on ``clips`` Gaussian-noise clips: top-1 agreement and logit errors."""
    cfg = model.config
    generator = torch.Generator().manual_seed(4321)
    inputs = torch.randn(clips, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=generator)
    with torch.inference_mode():
        ref = torch.cat([model(c) for c in inputs.split(4)])
        q = torch.cat([int8(c) for c in inputs.split(4)])
    top2 = ref.topk(2, dim=-1).values
    return {
        "clips": clips,
        "top1_agreement": int8_agreement(model, inputs, quantized=int8),
        "max_abs_logit_diff": (q - ref).abs().max().item(),
        "relative_logit_error": ((q - ref).norm() / ref.norm()).item(),
        "cosine_similarity_min": torch.nn.functional.cosine_similarity(q, ref, dim=-1).min().item(),
        "median_top1_margin_fp32": (top2[:, 0] - top2[:, 1]).median().item(),
        "inputs": "Gaussian-noise clips",
        "meaningful": trained,
        "note": (
            "trained weights (--weights) on noise clips" if trained else
            "random-init weights on noise clips: logits are nearly tied (see median_top1_margin_fp32), so "
            "top-1 agreement here says little; the target is measured on the demo model's validation set "
            "with tsf.quantize.int8_agreement"
        ),
    }
