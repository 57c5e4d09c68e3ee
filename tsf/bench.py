"""`python -m tsf bench`: tsf against Hugging Face ``transformers``, same weights, same inputs, one run.

Sections (``--sections``, default all):

inference  clips/s at each ``--batch-sizes`` for tsf fused (SDPA), tsf explicit (softmax path, as
           used for attention maps), tsf int8 (CPU, ``tsf.quantize``) and transformers'
           ``TimesformerForVideoClassification`` loaded from tsf's weights exported to the Hugging
           Face format; the achieved FLOP/s as a fraction of the peak (below); max |logits - HF|;
           int8 fidelity (top-1 agreement, logit error) against fp32.
train      one optimiser step (cross-entropy, AdamW): time and peak memory, for tsf, tsf with
           gradient checkpointing, HF and HF with gradient checkpointing; each configuration runs
           in its own fresh process so that memory measurements cannot contaminate each other.
data       ``tsf.data.bench.benchmark_loading``: clips/s per worker, tsf's loader vs full decoding.

The peak: on CPU the best fp32 matmul measured in the same run, before and after the timed
sections (square 2048, and the base model's MLP shape); on CUDA the device's documented dense bf16
tensor-core peak (``GPU_BF16_PEAK_TFLOPS``), with a measured bf16 matmul beside it. FLOP/s use the
architecture's FLOPs (``tsf.count_flops``, multiply-add = 2; a training step counts 3x the
forward); ``executed_fraction_of_peak`` uses the FLOPs the call really executes, which tsf's
inference path lowers by ~11% (see ``tsf.model.Block``).

Memory. CPU: peak resident memory of the step above the steady state (weights, gradients and
AdamW state already resident): the child returns freed heap pages to the OS (``malloc_trim``),
reads VmRSS, resets the kernel's high-water mark (``/proc/self/clear_refs``), runs one step and
reads VmHWM. That is activations plus the backward pass's transients, as the OS saw them. CUDA:
``max_memory_allocated`` during the step minus ``memory_allocated`` before it.

Prints a markdown table and writes every raw timing, the device, versions, ratios and targets to
``--out`` (JSON). No GPU was lent when this was written: the CUDA paths (bf16 autocast, SDPA,
``--compile``, MFU) are implemented but were not run; the JSON says which device ran.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

SECTIONS = ("inference", "train", "data")

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, matched in order
# as substrings of torch.cuda.get_device_name(); the more specific names come first.
GPU_BF16_PEAK_TFLOPS: list[tuple[str, Optional[float]]] = [
    ("GH200", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),  # SXM4 and PCIe
    ("A10G", None),  # AWS variant, no public dense bf16 figure: the measured matmul is used
    ("A10", 125.0),
    ("A30", 165.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
    ("RTX 4090", 165.2),  # bf16 with fp32 accumulation
]

TARGETS = {
    "cpu_inference_vs_hf": 1.08,
    "cpu_inference_fraction_of_peak": 0.90,
    "max_abs_logit_diff_vs_hf": 1e-4,
    "cpu_train_step_vs_hf": 1.03,
    "cpu_train_memory_vs_hf": 0.75,
    "cpu_train_memory_checkpointing_vs_hf": 0.40,
    "cpu_int8_inference_vs_hf_fp32": 2.0,
    "int8_top1_agreement": 0.99,
    "gpu_train_step_vs_hf": 1.5,
    "gpu_mfu": 0.45,
    "data_vs_full_decoding_per_worker": 3.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default: cpu)")
    parser.add_argument("--preset", default="base_8x224", help="model preset (tsf.PRESETS; default: base_8x224)")
    parser.add_argument("--weights", help="benchmark these weights (anything tsf.from_pretrained reads) instead of a seeded random init")
    parser.add_argument("--batch-sizes", default="1,4", help="inference batch sizes, comma-separated (default: 1,4)")
    parser.add_argument("--train-batch", type=int, help="training batch (default: 1 on CPU, 8 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement; medians are reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default: 1; training uses at least 2, the first AdamW steps allocate)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--compile", action="store_true", help="CUDA: also time tsf under torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default, one per core)")
    parser.add_argument("--agreement-clips", type=int, default=8, help="clips for the int8-vs-fp32 agreement (default: 8)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report (default: bench.json)")


def run(args: argparse.Namespace) -> int:
    report = benchmark(
        device=args.device, preset=args.preset, weights=args.weights,
        batch_sizes=[int(b) for b in str(args.batch_sizes).split(",") if b.strip()],
        train_batch=args.train_batch, repeats=args.repeats, warmup=args.warmup,
        sections=[s.strip() for s in args.sections.split(",") if s.strip()], compile=args.compile,
        threads=args.threads, agreement_clips=args.agreement_clips, hf=not args.no_hf,
    )
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


# -- the whole benchmark ----------------------------------------------------------------------------
def benchmark(
    device: str = "cpu",
    preset: str = "base_8x224",
    weights: Optional[str] = None,
    batch_sizes: tuple[int, ...] | list[int] = (1, 4),
    train_batch: Optional[int] = None,
    repeats: int = 3,
    warmup: int = 1,
    sections: tuple[str, ...] | list[str] = SECTIONS,
    compile: bool = False,
    threads: Optional[int] = None,
    agreement_clips: int = 8,
    hf: bool = True,
) -> dict:
    """Run the benchmark and return the report (the JSON written by ``python -m tsf bench``)."""
    import torch

    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    if threads:
        torch.set_num_threads(threads)
    train_batch = train_batch or (8 if dev.type == "cuda" else 1)

    report: dict = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": describe_device(dev),
        "versions": versions(),
        "settings": {
            "device": str(dev), "preset": preset, "weights": weights or "random init (seed 0)",
            "batch_sizes": list(batch_sizes), "train_batch": train_batch, "repeats": repeats, "warmup": warmup,
            "sections": list(sections), "compile": compile, "threads": torch.get_num_threads(),
            "precision": "bf16 autocast (weights fp32)" if dev.type == "cuda" else "fp32",
        },
        "notes": [],
    }
    if dev.type == "cpu":
        report["notes"].append(
            "CPU run: the GPU paths (bf16 autocast, SDPA flash, torch.compile, MFU against the documented "
            "dense bf16 peak) exist but were not exercised; GPU targets are reported as not run."
        )
    if preset != "base_8x224" or weights:
        report["notes"].append("the issue's targets are defined for base_8x224 with random-init weights compared with HF; "
                               "met/not met here is indicative only")
    model = _load_model(preset, weights)
    flops = _forward_flops(model)
    report["flops_per_clip_forward"] = flops
    report["peak"] = measure_peak(dev, repeats=max(repeats, 5))

    with tempfile.TemporaryDirectory(prefix="tsf-bench-") as tmp:
        tsf_path, hf_dir, hf_note = _export(model, Path(tmp), hf)
        if hf_note:
            report["notes"].append(hf_note)
        if "inference" in sections:
            report["inference"] = bench_inference(
                model, hf_dir, dev, batch_sizes, repeats, warmup, flops, report["peak"], compile, agreement_clips,
                weights is not None,
            )
        if "train" in sections:
            report["train"] = bench_train(
                tsf_path, hf_dir, dev, train_batch, repeats, max(warmup, 2), flops, report["peak"], compile,
                torch.get_num_threads(),
            )
    # the peak again, after the heavy sections: the best rate seen in the run is the reference
    again = measure_peak(dev, repeats=max(repeats, 5))
    report["peak"] = _best_peak(report["peak"], again)
    _apply_peak(report)
    if "data" in sections:
        report["data"] = bench_data(model.config, repeats)
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    return report


def _load_model(preset: str, weights: Optional[str]):
    import torch

    from .model import create_model
    from .weights import from_pretrained

    if weights:
        return from_pretrained(weights).eval()
    torch.manual_seed(0)
    model = create_model(preset).eval()
    # the official init zeroes temporal_fc in all blocks but the first, which would make the
    # temporal branch (and any error in it) invisible in the logits: give it real weights
    with torch.no_grad():
        for block in model.blocks:
            if hasattr(block, "temporal_fc"):
                torch.nn.init.trunc_normal_(block.temporal_fc.weight, std=0.02)
    return model


def _forward_flops(model) -> int:
    from .model import count_flops

    return int(count_flops(model))


def _export(model, tmp: Path, hf: bool) -> tuple[Path, Optional[Path], Optional[str]]:
    """tsf checkpoint (for the training children) and the Hugging Face export of the same weights."""
    from .weights import save_pretrained

    tsf_path = save_pretrained(model, tmp / "model.pt")
    if not hf:
        return tsf_path, None, "Hugging Face baseline skipped (--no-hf)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return tsf_path, None, "transformers is not installed: Hugging Face baseline skipped"
    try:
        hf_dir = save_pretrained(model, tmp / "hf", format="hf")
    except ValueError as err:
        return tsf_path, None, f"Hugging Face baseline skipped: {err}"
    return tsf_path, hf_dir, None


def _load_hf(hf_dir: Path):
    from transformers import TimesformerForVideoClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return TimesformerForVideoClassification.from_pretrained(str(hf_dir)).eval()


# -- environment ----------------------------------------------------------------------------------
def _cpuinfo(field: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(dev) -> dict:
    import torch

    info = {
        "type": dev.type,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_family_model": f"{_cpuinfo('cpu family')}/{_cpuinfo('model')}",
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
    }
    try:
        from .quantize import cpu_has_vnni

        info["cpu_vnni"] = cpu_has_vnni()
    except ImportError:
        pass
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        name = torch.cuda.get_device_name(dev)
        info.update(
            name=name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}", bf16_dense_peak_tflops=gpu_bf16_peak_tflops(name),
        )
    else:
        info["name"] = f"{info['cpu']} ({info['cpu_cores']} cores, CPU)"
    return info


def _memory_gib() -> Optional[float]:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def gpu_bf16_peak_tflops(name: str) -> Optional[float]:
    """The documented dense bf16 peak of a GPU named ``name`` (None when unknown)."""
    for key, peak in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "timm", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    from . import __version__

    out["tsf"] = __version__
    try:
        out["tsf_git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["tsf_git"] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


# -- timing helpers -------------------------------------------------------------------------------
def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn: Callable[[], object], dev) -> float:
    _sync(dev)
    start = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - start


def _summary(times: list[float]) -> dict:
    return {"times_s": [round(t, 6) for t in times], "median_s": statistics.median(times), "min_s": min(times)}


def measure_peak(dev, repeats: int = 3) -> dict:
    """The matmul peak the FLOP/s are compared with: measured fp32 on CPU; documented dense bf16 on
    CUDA (a measured bf16 matmul is recorded beside it)."""
    import torch

    shapes = [(2048, 2048, 2048), (1569, 768, 3072)]  # square, and the base model's MLP at batch 1
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cuda":
        shapes = [(8192, 8192, 8192), (4096, 4096, 4096)]
    measured = {}
    gen = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=gen).to(dev, dtype)
        b = torch.randn(k, n, generator=gen).to(dev, dtype)
        _timed(lambda: a @ b, dev)
        times = [_timed(lambda: a @ b, dev) for _ in range(repeats)]
        measured[f"{m}x{k}x{n}"] = {"times_s": [round(t, 6) for t in times], "flops_per_s": 2 * m * k * n / min(times)}
        del a, b
    best = max(v["flops_per_s"] for v in measured.values())
    out = {"dtype": str(dtype).replace("torch.", ""), "measured": measured, "measured_best_flops_per_s": best}
    if dev.type == "cuda":
        documented = gpu_bf16_peak_tflops(torch.cuda.get_device_name(dev))
        out["documented_bf16_dense_flops_per_s"] = documented * 1e12 if documented else None
        out["flops_per_s"] = documented * 1e12 if documented else best
        out["kind"] = "documented dense bf16 peak" if documented else "measured bf16 matmul (device not in GPU_BF16_PEAK_TFLOPS)"
    else:
        out["flops_per_s"] = best
        out["kind"] = "measured fp32 matmul, best of the shapes above (min time of each)"
    return out


def _best_peak(first: dict, second: dict) -> dict:
    """Both measurements' raw timings; each shape's best rate; the reference is the best of all."""
    merged = dict(first)
    merged["measured"] = {}
    for shape, a in first["measured"].items():
        b = second["measured"].get(shape, a)
        merged["measured"][shape] = {"times_s": a["times_s"] + b["times_s"],
                                     "flops_per_s": max(a["flops_per_s"], b["flops_per_s"])}
    merged["measured_best_flops_per_s"] = max(v["flops_per_s"] for v in merged["measured"].values())
    if merged.get("documented_bf16_dense_flops_per_s") is None:
        merged["flops_per_s"] = merged["measured_best_flops_per_s"]
    merged["measured_when"] = "before and after the inference and training sections"
    return merged


def _apply_peak(report: dict) -> None:
    peak = report["peak"]["flops_per_s"]
    rows = [row for rows in (_get(report, "inference", "batches") or {}).values() for row in rows.values()]
    rows += [row for row in (_get(report, "train", "configs") or {}).values() if "error" not in row]
    for row in rows:
        row["fraction_of_peak"] = row["flops_per_s"] / peak
        if "executed_flops_per_s" in row:
            row["executed_fraction_of_peak"] = row["executed_flops_per_s"] / peak


@contextlib.contextmanager
def _autocast(dev):
    import torch

    if dev.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


@contextlib.contextmanager
def _explicit(model):
    from .model import Attention

    saved = {m: m.fused for m in model.modules() if isinstance(m, Attention)}
    model.set_fused_attention(False)
    try:
        yield
    finally:
        for m, fused in saved.items():
            m.fused = fused


# -- inference --------------------------------------------------------------------------------------
def bench_inference(model, hf_dir, dev, batch_sizes, repeats, warmup, flops, peak, compile, agreement_clips, trained) -> dict:
    import torch

    from .quantize import int8_agreement, quantize

    cfg = model.config
    model = model.to(dev).eval()
    hf = _load_hf(hf_dir).to(dev) if hf_dir else None
    int8 = quantize(model) if dev.type == "cpu" else None
    compiled = torch.compile(model) if compile and dev.type == "cuda" else None
    out: dict = {
        "batches": {},
        "flops": "fraction_of_peak uses the architecture's FLOPs (tsf.count_flops); executed_fraction_of_peak "
                 "what the call executes (tsf's inference path folds temporal_attn.proj into temporal_fc and "
                 "skips the last block's patch-token work the head never reads)",
    }

    def explicit(x):
        with _explicit(model):
            return model(x)

    for batch in batch_sizes:
        gen = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen).to(dev)
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
        with torch.inference_mode(), _autocast(dev):
            for fn in configs.values():
                for _ in range(warmup):
                    _timed(fn, dev)
            for _ in range(repeats):  # interleaved, so that drifting machine load hits every config alike
                for name, fn in configs.items():
                    times[name].append(_timed(fn, dev))
        if "executed_flops_per_clip" not in out:
            with torch.inference_mode(), _autocast(dev):
                one, one_hf = x[:1], x_hf[:1]
                out["executed_flops_per_clip"] = {
                    "tsf_fused": _executed_flops(lambda: model(one)),
                    "tsf_explicit": _executed_flops(lambda: explicit(one)),
                    "hf": _executed_flops(lambda: hf(pixel_values=one_hf)) if hf is not None else None,
                }
        rows = {}
        for name, ts in times.items():
            row = _summary(ts)
            row["clips_per_s"] = batch / row["median_s"]
            row["flops_per_s"] = flops * batch / row["median_s"]
            executed = out["executed_flops_per_clip"].get(name)
            if executed:
                row["executed_flops_per_s"] = executed * batch / row["median_s"]
            rows[name] = row
        out["batches"][str(batch)] = rows

    # accuracy: fp32 (no autocast) on the device
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen).to(dev)
    with torch.inference_mode():
        logits = model(x)
        with _explicit(model):
            explicit_logits = model(x)
        out["max_abs_logit_diff_explicit_vs_fused"] = (explicit_logits - logits).abs().max().item()
        if hf is not None:
            hf_logits = hf(pixel_values=x.permute(0, 2, 1, 3, 4).contiguous()).logits
            out["max_abs_logit_diff_vs_hf"] = (logits - hf_logits).abs().max().item()
            out["logit_scale"] = logits.abs().max().item()
    if int8 is not None and agreement_clips > 0:
        out["int8"] = _int8_fidelity(model, int8, agreement_clips, trained, int8_agreement)
    del hf, int8, compiled
    gc.collect()
    return out


def _executed_flops(fn) -> Optional[int]:
    """FLOPs the call actually executes, by torch's formulas (``torch.utils.flop_counter``).

    Not ``FlopCounterMode`` itself: its module tracker installs global module hooks, which make
    tsf's blocks take their plainly written reference path and would count that path instead.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        flops = 0

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
    try:
        with counter:
            fn()
    except Exception:  # noqa: BLE001 - a counting failure must not sink the benchmark
        return None
    return int(counter.flops)


def _int8_fidelity(model, int8, n, trained, int8_agreement) -> dict:
    import torch

    cfg = model.config
    gen = torch.Generator().manual_seed(4321)
    clips = torch.randn(n, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
    with torch.inference_mode():
        ref = torch.cat([model(c) for c in clips.split(4)])
        q = torch.cat([int8(c) for c in clips.split(4)])
    top2 = ref.topk(2, dim=-1).values
    return {
        "clips": n,
        "top1_agreement": int8_agreement(model, clips, quantized=int8),
        "max_abs_logit_diff": (q - ref).abs().max().item(),
        "relative_logit_error": ((q - ref).norm() / ref.norm()).item(),
        "cosine_similarity_min": torch.nn.functional.cosine_similarity(q, ref, dim=-1).min().item(),
        "median_top1_margin_fp32": (top2[:, 0] - top2[:, 1]).median().item(),
        "inputs": "Gaussian-noise clips",
        "meaningful": bool(trained),
        "note": (
            "trained weights (--weights) on noise clips" if trained else
            "random-init weights on noise clips: logits are nearly tied (see median_top1_margin_fp32), so "
            "top-1 agreement here says little; the target is measured on the demo model's validation set "
            "with tsf.quantize.int8_agreement"
        ),
    }


# -- training ---------------------------------------------------------------------------------------
TRAIN_CONFIGS = ("tsf", "tsf_checkpointing", "hf", "hf_checkpointing")


def bench_train(tsf_path, hf_dir, dev, batch, repeats, warmup, flops, peak, compile, threads, rounds: int = 2) -> dict:
    """Each configuration runs in a fresh process (so that neither heaps nor peak counters mix),
    in ``rounds`` passes over the configurations (A B C D A B C D: a burst of load on a shared
    machine hits one pass of one configuration, and the median over the passes shrugs it off)."""
    configs = [c for c in TRAIN_CONFIGS if hf_dir or not c.startswith("hf")]
    if compile and dev.type == "cuda":
        configs.insert(1, "tsf_compiled")
    rounds = max(1, min(rounds, repeats))
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    out: dict = {"batch": batch, "configs": {}, "drop_path_rate": 0.0, "warmup_steps": warmup, "rounds": rounds,
                 "step": "AdamW; forward, cross-entropy, backward, optimiser step; drop path off in both models",
                 "timing": "steady-state steps in a fresh process per configuration and round; memory: one "
                           "more step in the first round's process"}
    results: dict[str, dict] = {name: {"step_times_s": []} for name in configs}
    for r, steps in enumerate(per_round):
        for name in configs:
            if "error" in results[name]:
                continue
            spec = {"config": name, "device": str(dev), "batch": batch, "warmup": warmup, "threads": threads,
                    "repeats": steps, "memory": r == 0, "tsf_path": str(tsf_path),
                    "hf_dir": str(hf_dir) if hf_dir else None}
            child = _run_child(spec)
            times = child.pop("step_times_s", [])
            results[name].update(child)
            results[name]["step_times_s"] += times
    for name, result in results.items():
        times = result.pop("step_times_s")
        if times:
            result.update(_summary(times))
            result["clips_per_s"] = batch / result["median_s"]
            result["flops_per_s"] = 3 * flops * batch / result["median_s"]
        out["configs"][name] = result
    return out


class _TrainCase:
    """A model, its AdamW and one fixed batch; ``step(config)`` runs one training step of that
    configuration (tsf: plain, checkpointing or compiled; hf: plain or checkpointing)."""

    def __init__(self, family: str, device: str, batch: int, tsf_path: str, hf_dir: Optional[str]):
        import torch

        from .weights import from_pretrained

        self.dev = torch.device(device)
        torch.manual_seed(0)
        tsf_model = from_pretrained(tsf_path, drop_path_rate=0.0)
        cfg = tsf_model.config
        self.family = family
        self.model = (_load_hf(Path(hf_dir)) if family == "hf" else tsf_model).to(self.dev).train()
        del tsf_model
        self.compiled, self.checkpointing = None, False
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
        self.y = torch.randint(0, max(cfg.num_classes, 1), (batch,), generator=gen).to(self.dev)
        # HF takes (B, T, C, H, W): laid out once, outside the timing
        self.x = (x.permute(0, 2, 1, 3, 4).contiguous() if family == "hf" else x).to(self.dev)
        fused = {"fused": True} if self.dev.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, **fused)

    def _forward(self, config: str):
        if self.family == "hf":
            on = config == "hf_checkpointing"
            if on != self.checkpointing:  # transformers >= 5 renamed gradient_ to activation_checkpointing_*
                prefix = "activation" if hasattr(self.model, "activation_checkpointing_enable") else "gradient"
                getattr(self.model, f"{prefix}_checkpointing_{'enable' if on else 'disable'}")()
                self.checkpointing = on
            return self.model(pixel_values=self.x).logits
        self.model.set_gradient_checkpointing(config == "tsf_checkpointing")
        if config == "tsf_compiled":
            import torch

            if self.compiled is None:
                self.compiled = torch.compile(self.model)
            return self.compiled(self.x)
        return self.model(self.x)

    def step(self, config: str) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the steady state
        with _autocast(self.dev):
            loss = torch.nn.functional.cross_entropy(self._forward(config), self.y)
        loss.backward()
        self.optimizer.step()


def _run_child(spec: dict) -> dict:
    """One training configuration in a fresh interpreter (clean heap, clean peak counters)."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import json, sys; from tsf.bench import _train_child; print('TSF_BENCH ' + json.dumps(_train_child(json.loads(sys.argv[1]))))"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("TSF_BENCH "):
            return json.loads(line[len("TSF_BENCH "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"child exited with {proc.returncode}: " + " | ".join(tail)}


def _proc_status_mb(field: str) -> Optional[float]:
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
def peak_memory(device) -> Iterator[dict]:
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
    import torch

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
    base = out["base_mib"] = _proc_status_mb("VmRSS")
    yield out
    high_water = _proc_status_mb("VmHWM")
    if reset and base is not None and high_water is not None:
        out["peak_mib"] = max(high_water - base, 0.0)
        out["method"] = ("process RSS high-water mark (VmHWM) minus RSS at the start, freed heap returned to the OS "
                         "(malloc_trim) and the mark reset (/proc/self/clear_refs) first")


def _train_child(spec: dict) -> dict:
    """``spec["repeats"]`` timed steps of ``spec["config"]`` after warm-up, then (``spec["memory"]``)
    the peak memory of one more step. Runs in a fresh process."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    name = spec["config"]
    case = _TrainCase(name.split("_")[0], spec["device"], spec["batch"], spec["tsf_path"], spec.get("hf_dir"))
    dev = case.dev
    rss_start = _proc_status_mb("VmRSS")
    for _ in range(max(spec["warmup"], 1)):  # the first steps allocate gradients and the AdamW state
        case.step(name)
    result: dict = {"step_times_s": [_timed(lambda: case.step(name), dev) for _ in range(spec["repeats"])],
                    "parameters": sum(p.numel() for p in case.model.parameters())}
    if not spec.get("memory", True):
        return result
    with peak_memory(dev) as memory:
        case.step(name)
    if memory["peak_mib"] is not None:
        result["step_peak_mb"] = round(memory["peak_mib"], 1)
    result["memory_method"] = memory["method"]
    base = None if memory["base_mib"] is None else round(memory["base_mib"], 1)
    if dev.type == "cuda":
        result["steady_state_allocated_mb"] = base
    else:
        result["rss_before_first_step_mb"] = None if rss_start is None else round(rss_start, 1)
        result["steady_state_rss_mb"] = base  # weights, grads, AdamW state
    return result


# -- data ---------------------------------------------------------------------------------------------
def bench_data(cfg, repeats: int) -> dict:
    """``tsf.data.bench.benchmark_loading`` at the model's clip shape: clips/s per worker, tsf's
    loader vs decoding the whole video."""
    from .data.bench import benchmark_loading

    try:
        return benchmark_loading(num_frames=cfg.num_frames, crop_size=cfg.img_size, repeats=repeats)
    except Exception as err:  # noqa: BLE001 - the data benchmark must not sink the others
        return {"error": f"{type(err).__name__}: {err}"}


# -- ratios, targets, table ---------------------------------------------------------------------------
def _get(d: dict, *keys, default=None):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def ratios(report: dict) -> dict:
    out = {}
    for batch, rows in (_get(report, "inference", "batches") or {}).items():
        hf = rows.get("hf")
        for name, row in rows.items():
            if hf and name != "hf":
                out[f"inference_b{batch}_{name}_vs_hf"] = row["clips_per_s"] / hf["clips_per_s"]
    configs = _get(report, "train", "configs") or {}
    hf = configs.get("hf")
    if hf and "error" not in hf:
        for name, row in configs.items():
            if name == "hf" or "error" in row:
                continue
            out[f"train_{name}_speed_vs_hf"] = hf["median_s"] / row["median_s"]
            if row.get("step_peak_mb") and hf.get("step_peak_mb"):
                out[f"train_{name}_memory_vs_hf"] = row["step_peak_mb"] / hf["step_peak_mb"]
    return out


def _target(name, value, goal, better="higher", note=None) -> dict:
    row = {"name": name, "goal": goal, "value": value}
    if value is None:
        row["met"] = None
    else:
        row["met"] = bool(value >= goal) if better == "higher" else bool(value <= goal)
    if note:
        row["note"] = note
    return row


def targets(report: dict) -> list[dict]:
    r = report.get("ratios", {})
    inf = report.get("inference", {})
    batches = inf.get("batches", {})
    cpu = report["device"]["type"] == "cpu"
    rows = []

    def worst(key_fmt, fn=min):
        values = [r[key_fmt.format(b)] for b in batches if key_fmt.format(b) in r]
        return fn(values) if values else None

    if cpu:
        rows.append(_target("CPU fp32 inference vs HF (worst batch)", worst("inference_b{}_tsf_fused_vs_hf"),
                            TARGETS["cpu_inference_vs_hf"]))
        fractions = [rows_["tsf_fused"]["fraction_of_peak"] for rows_ in batches.values() if "tsf_fused" in rows_]
        rows.append(_target("CPU fp32 inference, fraction of measured matmul peak (worst batch)",
                            min(fractions) if fractions else None, TARGETS["cpu_inference_fraction_of_peak"]))
    rows.append(_target("max |logits - HF| (fp32)", inf.get("max_abs_logit_diff_vs_hf"),
                        TARGETS["max_abs_logit_diff_vs_hf"], better="lower"))
    if cpu:
        rows.append(_target("CPU train step speed vs HF", r.get("train_tsf_speed_vs_hf"), TARGETS["cpu_train_step_vs_hf"]))
        rows.append(_target("CPU train step peak memory vs HF", r.get("train_tsf_memory_vs_hf"),
                            TARGETS["cpu_train_memory_vs_hf"], better="lower"))
        rows.append(_target("CPU train peak memory, tsf + checkpointing vs HF", r.get("train_tsf_checkpointing_memory_vs_hf"),
                            TARGETS["cpu_train_memory_checkpointing_vs_hf"], better="lower"))
        rows.append(_target("CPU int8 inference vs HF fp32 (worst batch)", worst("inference_b{}_tsf_int8_vs_hf"),
                            TARGETS["cpu_int8_inference_vs_hf_fp32"]))
        int8 = inf.get("int8", {})
        rows.append(_target("int8 top-1 agreement with fp32", int8.get("top1_agreement"), TARGETS["int8_top1_agreement"],
                            note=None if int8.get("meaningful") else "random weights: not the target's measurement "
                            "(demo model's validation set); see inference.int8.note"))
        rows.append(_target("GPU train step vs HF (bf16)", None, TARGETS["gpu_train_step_vs_hf"], note="not run: no GPU"))
        rows.append(_target("GPU MFU (train, base 8x224)", None, TARGETS["gpu_mfu"], note="not run: no GPU"))
    else:
        rows.append(_target("GPU train step vs HF (bf16)", r.get("train_tsf_speed_vs_hf"), TARGETS["gpu_train_step_vs_hf"]))
        tsf_rows = {k: v for k, v in (_get(report, "train", "configs") or {}).items() if k.startswith("tsf") and "error" not in v}
        best = max((v["fraction_of_peak"] for v in tsf_rows.values()), default=None)
        rows.append(_target("GPU MFU (train, best tsf config)", best, TARGETS["gpu_mfu"]))
    data = report.get("data", {})
    speedup = data.get("speedup_per_worker")
    data_note = None if speedup is not None else data.get("error", "data section not run")
    rows.append(_target("data loading vs full decoding, per worker", speedup, TARGETS["data_vs_full_decoding_per_worker"],
                        note=data_note))
    return rows


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def markdown(report: dict) -> str:
    dev = report["device"]
    s = report["settings"]
    lines = [
        f"## tsf bench: {s['preset']} on {dev.get('name')}",
        "",
        f"torch {report['versions']['torch']}, transformers {report['versions'].get('transformers')}, "
        f"{s['precision']}, {s['threads']} threads, median of {s['repeats']}; weights: {s['weights']}; "
        f"peak {report['peak']['flops_per_s'] / 1e9:.0f} GFLOP/s ({report['peak']['kind']}); "
        f"{report['flops_per_clip_forward'] / 1e9:.1f} GFLOP per clip (forward)",
        "",
    ]
    inf = report.get("inference")
    if inf:
        lines += ["| inference | batch | s/batch | clips/s | × HF | model GFLOP/s | % of peak | executed % of peak |",
                  "|---|---|---|---|---|---|---|---|"]
        for batch, rows in inf["batches"].items():
            hf = rows.get("hf")
            for name, row in rows.items():
                ratio = row["clips_per_s"] / hf["clips_per_s"] if hf else None
                executed = row.get("executed_fraction_of_peak")
                lines.append(
                    f"| {name} | {batch} | {_fmt(row['median_s'])} | {_fmt(row['clips_per_s'])} | {_fmt(ratio)} | "
                    f"{row['flops_per_s'] / 1e9:.0f} | {100 * row['fraction_of_peak']:.0f}% | "
                    f"{'-' if executed is None else f'{100 * executed:.0f}%'} |"
                )
        lines.append("")
        if "max_abs_logit_diff_vs_hf" in inf:
            lines.append(f"max |logits − HF| = {inf['max_abs_logit_diff_vs_hf']:.2e} (logits up to {inf['logit_scale']:.2f}); "
                         f"explicit vs fused {inf['max_abs_logit_diff_explicit_vs_fused']:.2e}")
        if "int8" in inf:
            q = inf["int8"]
            lines.append(f"int8 vs fp32 on {q['clips']} clips: top-1 agreement {q['top1_agreement']:.3f}, relative logit "
                         f"error {q['relative_logit_error']:.3f}, min cosine {q['cosine_similarity_min']:.4f} ({q['note']})")
        lines.append("")
    train = report.get("train")
    if train:
        lines += [f"| training step (batch {train['batch']}) | s/step | × HF speed | step peak MB | × HF memory | % of peak |",
                  "|---|---|---|---|---|---|"]
        configs = train["configs"]
        hf = configs.get("hf") if "error" not in configs.get("hf", {"error": 1}) else None
        for name, row in configs.items():
            if "error" in row:
                lines.append(f"| {name} | error: {row['error'][:80]} | | | | |")
                continue
            speed = hf["median_s"] / row["median_s"] if hf else None
            mem = row.get("step_peak_mb")
            mem_ratio = mem / hf["step_peak_mb"] if hf and mem and hf.get("step_peak_mb") else None
            lines.append(f"| {name} | {_fmt(row['median_s'])} | {_fmt(speed)} | {_fmt(mem)} | {_fmt(mem_ratio)} | "
                         f"{100 * row['fraction_of_peak']:.0f}% |")
        lines.append("")
    data = report.get("data")
    if data is not None:
        if "error" in data:
            lines += [f"data: {data['error']}", ""]
        else:
            lines += [f"data loading, one worker: {data['settings']['video']}; {data['settings']['clip']}", "",
                      "| keyframe every | reader | tsf clips/s | whole-video decoding clips/s | speedup |",
                      "|---|---|---|---|---|"]
            for gop, readers in data["by_gop"].items():
                lines += [f"| {gop} frames | {reader} | {row['tsf_clips_per_s']} | {row['full_decode_clips_per_s']} | "
                          f"{row['speedup']}x |" for reader, row in readers.items()]
            lines.append("")
    lines += ["| target | goal | value | met |", "|---|---|---|---|"]
    for t in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['name']} | {_fmt(t['goal'])} | {_fmt(t['value'])} | {met}{note} |")
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)


__all__ = ["benchmark", "measure_peak", "markdown", "gpu_bf16_peak_tflops", "GPU_BF16_PEAK_TFLOPS", "TARGETS"]
