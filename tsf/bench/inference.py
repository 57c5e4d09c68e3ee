"""The inference section: clips/s of every path (``tsf.bench.paths``: tsf and transformers at fp32,
bf16 and int8, onnxruntime) on the same inputs, the FLOPs each executes, and how closely each
agrees with tsf fp32."""
from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import cpu
from ..cost import executed_flops
from ..model import TimeSformer
from .models import load_hf
from .paths import InferencePath, build_paths
from .settings import BenchSettings
from .timing import summary, timed

FLOPS_NOTE = ("fraction_of_peak uses the architecture's FLOPs (tsf.cost.count_flops) against the fp32 matmul peak; "
              "executed_fraction_of_peak what the call executes (tsf.cost.executed_flops: tsf's inference path folds "
              "temporal_attn.proj into temporal_fc and skips the last block's patch-token work the head never reads). "
              "bf16 and int8 rows exceed 100%: their matmul units outrun fp32's")
CALIBRATION_SEED, AGREEMENT_SEED = 777, 4321


def clips(config, count: int, seed: int) -> torch.Tensor:
    """``count`` Gaussian-noise clips of the model's shape (what the benchmark times and checks)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, config.in_chans, config.num_frames, config.img_size, config.img_size, generator=generator)


def bench_inference(model: TimeSformer, hf_dir: Optional[Path], settings: BenchSettings, flops: int, folder: Path) -> dict:
    """Time every path at each batch size, interleaved, and check each against tsf fp32.

    Args:
        model: the benchmarked model.
        hf_dir: its Hugging Face export (None: no baseline).
        settings: the run's settings, device and precision resolved (``tsf.bench.benchmark``).
        flops: the architecture's FLOPs per clip (``tsf.cost.count_flops``).
        folder: a temporary folder (ONNX files).

    Returns:
        ``batches`` (batch size -> row -> timings, clips/s, FLOP/s), ``rows`` (each row's family,
        precision, baseline, note, setup time), ``skipped`` paths and why, ``flops`` (what they
        count), ``executed_flops_per_clip``, ``fidelity`` (each row against tsf fp32), and the
        logit difference of the fp32 rows.
    """
    device = torch.device(settings.device)
    cfg = model.config
    model = model.to(device).eval()
    hf = load_hf(hf_dir).to(device) if hf_dir else None
    calibration = clips(cfg, 2, CALIBRATION_SEED)
    with torch.no_grad():
        paths, skipped = build_paths(model, hf, settings, device, folder, calibration)
    out: dict = {"batches": {}, "flops": FLOPS_NOTE, "skipped": skipped, "matrix_units": cpu.matrix_units().names,
                 "rows": {p.name: {"family": p.family, "precision": p.precision, "baseline": p.baseline, "note": p.note,
                                   "setup_s": round(p.setup_s, 2), **p.extra} for p in paths}}
    # the tsf rows run as tsf's evaluate and predict loops run them: weights fixed through the loop, so the
    # lean path's weight caches are checked once (TimeSformer.fixed_weights), not on every call
    with contextlib.ExitStack() as fixed:
        for m in {id(p.model): p.model for p in paths if p.model is not None}.values():
            fixed.enter_context(m.fixed_weights())
        for batch in settings.batch_sizes:
            x = clips(cfg, batch, batch).to(device)
            inputs = _layouts(x)  # prepared outside the timing
            runs: dict[str, Callable[[], object]] = {p.name: _bound(p, inputs) for p in paths}
            times: dict[str, list[float]] = {name: [] for name in runs}
            with torch.inference_mode():
                for fn in runs.values():
                    for _ in range(settings.warmup):
                        timed(fn, device)
                for _ in range(settings.repeats):  # interleaved, so that drifting machine load hits every row alike
                    for name, fn in runs.items():
                        times[name].append(timed(fn, device))
                if "executed_flops_per_clip" not in out:
                    one = _layouts(x[:1])
                    counted = {p.name: _executed_flops_or_none(_bound(p, one)) for p in paths
                               if p.family != "onnxruntime" and p.precision == "fp32"}
                    # lower precisions run the same maths (int8 kernels have no FLOP formula)
                    counted.update({p.name: counted.get(f"{p.family}_fp32") for p in paths if p.precision in ("bf16", "fp16")})
                    out["executed_flops_per_clip"] = counted
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
    if settings.agreement_clips > 0:
        out["fidelity"] = fidelity(paths, clips(cfg, settings.agreement_clips, AGREEMENT_SEED).to(device),
                                   trained=settings.weights is not None)
        for key, name in (("max_abs_logit_diff_vs_hf", "hf_fp32"), ("max_abs_logit_diff_explicit_vs_fused", "tsf_fp32_explicit"),
                          ("max_abs_logit_diff_onnxruntime", "onnxruntime_fp32")):
            if name in out["fidelity"]["rows"]:
                out[key] = out["fidelity"]["rows"][name]["max_abs_logit_diff"]
        out["logit_scale"] = out["fidelity"]["logit_scale"]
    del hf, paths
    gc.collect()
    return out


@torch.inference_mode()
def fidelity(paths: list[InferencePath], inputs: torch.Tensor, trained: bool, batch_size: int = 4) -> dict:
    """Each path against tsf fp32 on ``inputs``: top-1 agreement and logit errors."""
    logits = {}
    for path in paths:
        logits[path.name] = torch.cat([_bound(path, _layouts(chunk))().float().cpu() for chunk in inputs.split(batch_size)])
    reference = logits["tsf_fp32"] if "tsf_fp32" in logits else next(iter(logits.values()))
    top2 = reference.topk(min(2, reference.shape[-1]), dim=-1).values
    rows = {}
    for name, value in logits.items():
        rows[name] = {
            "top1_agreement": (value.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (value - reference).abs().max().item(),
            "relative_logit_error": ((value - reference).norm() / reference.norm().clamp_min(1e-12)).item(),
            "cosine_similarity_min": torch.nn.functional.cosine_similarity(value, reference, dim=-1).min().item(),
        }
    return {
        "clips": inputs.shape[0], "reference": "tsf_fp32", "rows": rows, "logit_scale": reference.abs().max().item(),
        "median_top1_margin_fp32": (top2[:, 0] - top2[:, -1]).median().item(),
        "inputs": "Gaussian-noise clips (other seeds than the calibration's)", "meaningful": trained,
        "note": ("trained weights (--weights) on noise clips" if trained else
                 "random-init weights on noise clips: logits are nearly tied (median_top1_margin_fp32), so top-1 "
                 "agreement here says little; relative_logit_error is the measure. Agreement on real videos: "
                 "bench/README.md (tsf.bench.agreement)"),
    }


def _layouts(x: torch.Tensor) -> dict:
    return {"tsf": x, "hf": x.permute(0, 2, 1, 3, 4).contiguous(), "numpy": x.cpu().numpy()}


def _bound(path: InferencePath, inputs: dict) -> Callable[[], object]:
    value = inputs[path.layout]
    return lambda: path.run(value)


def _executed_flops_or_none(fn: Callable[[], object]) -> Optional[int]:
    try:
        return executed_flops(fn)
    except Exception:  # noqa: BLE001 - an op the counter cannot run (a baseline's kernel) must not sink the benchmark
        return None
