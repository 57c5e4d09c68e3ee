"""The training section: one AdamW step of tsf and of transformers, plain and with gradient
checkpointing, and on a CPU with bf16 matrix units both under bf16 autocast; each configuration in
a fresh process so that neither heaps nor peak-memory counters mix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from .. import cpu, runtime
from ..cost import peak_memory, resident_memory_mib
from ..weights import from_pretrained
from .models import load_hf
from .settings import BenchSettings
from .timing import summary, timed


TRAIN_CONFIGS = ("tsf", "tsf_checkpointing", "hf", "hf_checkpointing")
BF16_CONFIGS = ("tsf_bf16", "hf_bf16")  # CPU: the same steps under bf16 autocast (weights, grads, AdamW fp32)
# Passes over the configurations (A B C D A B C D): a burst of load on a shared machine hits one
# pass of one configuration, and the median over the passes shrugs it off.
ROUNDS = 2
_RESULT_PREFIX = "TSF_BENCH "  # marks the child's one line of JSON among whatever else it prints


def bench_train(tsf_path: Path, hf_dir: Optional[Path], settings: BenchSettings, flops: int) -> dict:
    """Time each configuration's steps in fresh processes, ``ROUNDS`` passes; peak memory in the first.

    Args:
        tsf_path: the benchmarked model's tsf checkpoint.
        hf_dir: its Hugging Face export (None: no baseline).
        settings: the run's settings, device, precision and training batch resolved.
        flops: the architecture's forward FLOPs per clip (a step counts 3x).
    """
    device = torch.device(settings.device)
    precision = runtime.resolve_precision(settings.precision, device, purpose="training")
    configs = list(TRAIN_CONFIGS)
    if device.type == "cpu" and precision == "fp32" and settings.precision != "fp32" and (
            cpu.matrix_units().bf16 or settings.full):
        configs += BF16_CONFIGS
    configs = [c for c in configs if hf_dir or not c.startswith("hf")]
    if settings.compile and device.type == "cuda":
        configs.insert(1, "tsf_compiled")
    warmup = max(settings.warmup, 2)  # the first AdamW steps allocate the gradients and the optimiser state
    rounds = min(ROUNDS, settings.repeats)
    per_round = [settings.repeats // rounds + (1 if r < settings.repeats % rounds else 0) for r in range(rounds)]
    batch = settings.train_batch
    out: dict = {"batch": batch, "configs": {}, "drop_path_rate": 0.0, "warmup_steps": warmup, "rounds": rounds,
                 "precision": precision, "bf16_configs": "under bf16 autocast (tsf_bf16, hf_bf16)",
                 "step": "AdamW; forward, cross-entropy, backward, optimiser step; drop path off in both models",
                 "timing": "steady-state steps in a fresh process per configuration and round; memory: one "
                           "more step in the first round's process"}
    results: dict[str, dict] = {name: {"step_times_s": []} for name in configs}
    for r, steps in enumerate(per_round):
        for name in configs:
            if "error" in results[name]:
                continue
            child = _run_child(_ChildSpec(config=name, device=settings.device,
                                          precision="bf16" if name.endswith("_bf16") else precision,
                                          batch=batch, warmup=warmup, repeats=steps, threads=settings.threads,
                                          memory=r == 0, tsf_path=str(tsf_path),
                                          hf_dir=str(hf_dir) if hf_dir else None))
            times = child.pop("step_times_s", [])
            results[name].update(child)
            results[name]["step_times_s"] += times
    for name, result in results.items():
        times = result.pop("step_times_s")
        if times:
            result.update(summary(times))
            result["clips_per_s"] = batch / result["median_s"]
            result["flops_per_s"] = 3 * flops * batch / result["median_s"]
        out["configs"][name] = result
    return out


@dataclass(frozen=True)
class _ChildSpec:
    """One training configuration's run in a child process (sent as JSON)."""

    config: str  # one of TRAIN_CONFIGS or BF16_CONFIGS, or tsf_compiled
    device: str
    precision: str
    batch: int
    warmup: int
    repeats: int
    threads: Optional[int]
    memory: bool  # also measure one more step's peak memory
    tsf_path: str
    hf_dir: Optional[str]


class _TrainCase:
    """A model, its AdamW and one fixed batch; ``step(config)`` runs one training step of that
    configuration (tsf: plain, checkpointing or compiled; hf: plain or checkpointing)."""

    def __init__(self, spec: _ChildSpec):
        self.device = torch.device(spec.device)
        self.precision = spec.precision
        self.family = spec.config.split("_")[0]
        torch.manual_seed(0)
        tsf_model = from_pretrained(spec.tsf_path, drop_path_rate=0.0)
        cfg = tsf_model.config
        self.model = (load_hf(Path(spec.hf_dir)) if self.family == "hf" else tsf_model).to(self.device).train()
        del tsf_model
        self.compiled, self.checkpointing = None, False
        generator = torch.Generator().manual_seed(7)
        x = torch.randn(spec.batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=generator)
        self.y = torch.randint(0, max(cfg.num_classes, 1), (spec.batch,), generator=generator).to(self.device)
        # HF takes (B, T, C, H, W): laid out once, outside the timing
        self.x = (x.permute(0, 2, 1, 3, 4).contiguous() if self.family == "hf" else x).to(self.device)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, **fused)

    def _forward(self, config: str) -> torch.Tensor:
        if self.family == "hf":
            on = config == "hf_checkpointing"
            if on != self.checkpointing:  # transformers >= 5 renamed gradient_ to activation_checkpointing_*
                prefix = "activation" if hasattr(self.model, "activation_checkpointing_enable") else "gradient"
                getattr(self.model, f"{prefix}_checkpointing_{'enable' if on else 'disable'}")()
                self.checkpointing = on
            return self.model(pixel_values=self.x).logits
        self.model.set_gradient_checkpointing(config == "tsf_checkpointing")
        if config == "tsf_compiled":
            if self.compiled is None:
                self.compiled = torch.compile(self.model)
            return self.compiled(self.x)
        return self.model(self.x)

    def step(self, config: str) -> None:
        self.optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the steady state
        with runtime.autocast(self.precision, self.device):
            loss = torch.nn.functional.cross_entropy(self._forward(config), self.y)
        loss.backward()
        self.optimizer.step()


def _run_child(spec: _ChildSpec) -> dict:
    """One training configuration in a fresh interpreter (clean heap, clean peak counters)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import json, sys; from tsf.bench.training import train_child; "
            f"print({_RESULT_PREFIX!r} + json.dumps(train_child(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(spec))], capture_output=True, text=True,
                          env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"child exited with {proc.returncode}: " + " | ".join(tail)}


def train_child(spec: dict) -> dict:
    """The child process's work: ``repeats`` timed steps of ``config`` after warm-up, then (with
    ``memory``) the peak memory of one more step.

    Args:
        spec: a ``_ChildSpec`` as a dict (its JSON).
    """
    spec = _ChildSpec(**spec)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    case = _TrainCase(spec)
    rss_start = resident_memory_mib()
    for _ in range(spec.warmup):
        case.step(spec.config)
    result: dict = {"step_times_s": [timed(lambda: case.step(spec.config), case.device) for _ in range(spec.repeats)],
                    "parameters": sum(p.numel() for p in case.model.parameters())}
    if not spec.memory:
        return result
    with peak_memory(case.device) as memory:
        case.step(spec.config)
    if memory["peak_mib"] is not None:
        result["step_peak_mb"] = round(memory["peak_mib"], 1)
    result["memory_method"] = memory["method"]
    base = None if memory["base_mib"] is None else round(memory["base_mib"], 1)
    if case.device.type == "cuda":
        result["steady_state_allocated_mb"] = base
    else:
        result["rss_before_first_step_mb"] = None if rss_start is None else round(rss_start, 1)
        result["steady_state_rss_mb"] = base  # weights, grads, AdamW state
    return result
