"""The attention schemes side by side: the paper's Table 1 and Figure 3 in miniature.

Table 1 of Bertasius et al. (ICML 2021) trains one architecture with each attention scheme: on
Kinetics-400 (appearance-heavy) all schemes are close; on Something-Something-v2 (motion-heavy)
space-only attention collapses while joint and divided space-time attention do not.
``compare_schemes`` does the same with a small model on the synthetic ``appearance`` and ``motion``
tasks (``tsf.data.synth``): the same model, data and budget for every scheme, trained by
``tsf.training.Trainer``; it returns plain results (``results.json``) and the trained models.

Figure 3 compares the cost of joint and divided attention as clips get longer or larger: joint
attention compares all ``N x T`` patch tokens with each other, ``O((N T)^2)``; divided attention
compares each patch with itself across the ``T`` frames and each frame's ``N`` patches with each
other, ``O(N T (N + T))``. ``attention_cost`` counts each model's FLOPs (``tsf.cost.count_flops``:
the architecture's, attention matmuls included), computes the memory its attention matrices
take (``tsf.cost.attention_memory_bytes``), and measures the time and peak
memory of a training step (forward and backward), except where the estimated memory exceeds a
cap: those points are reported as ``would exceed`` instead of run.

Measured costs use the explicit attention (softmax of the full score matrix, as the official
code does and as the paper measured): fused kernels (flash attention) avoid storing the matrix,
which removes joint attention's quadratic memory but not its quadratic FLOPs.

Tables come from here (``scheme_table``, ``cost_table``, ``attention_memory_table``), the figures from
``tsf.plots`` (``plot_scheme_accuracy``, ``plot_cost``); whether the trained divided model's attention
follows a moving object is ``tsf.following``'s question.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .build import build_model
from .cost import attention_memory_bytes, count_flops, peak_memory
from .data import (VideoDataConfig, build_video_datasets, data_folder_classes, load_classes, read_manifest,
                   read_video_frames)
from .model import ATTENTION_TYPES, PRESETS, TimeSformer
from .training import Trainer

PathLike = Union[str, Path]
SCHEMES = ("space_only", "joint_space_time", "divided_space_time")  # the order of the paper's Table 1
SCHEME_NAMES = {"space_only": "Space", "joint_space_time": "Joint Space-Time",
                "divided_space_time": "Divided Space-Time"}
# Table 1 of the paper: ViT-B/16 TimeSformer, 8 x 224, ImageNet-21k initialisation; top-1 %
PAPER_TABLE1 = {
    "space_only": {"params_m": 85.9, "k400": 76.9, "ssv2": 36.6},
    "joint_space_time": {"params_m": 85.9, "k400": 77.4, "ssv2": 58.5},
    "divided_space_time": {"params_m": 121.4, "k400": 78.0, "ssv2": 59.5},
}


def growth_exponents(xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """Local power-law exponents ``log(y2 / y1) / log(x2 / x1)`` between consecutive points: 1 where
    ``y`` grows linearly with ``x``, 2 where it grows quadratically.

    Args:
        xs: increasing positive values (frames, pixels...).
        ys: the positive quantity at each (FLOPs, seconds...).
    """
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"growth_exponents needs two or more (x, y) pairs; got {len(xs)} xs and {len(ys)} ys")
    return [math.log(y2 / y1) / math.log(x2 / x1) for x1, x2, y1, y2 in zip(xs, xs[1:], ys, ys[1:])]


# -- cost curves (Figure 3) -------------------------------------------------------------------------
def training_step_cost(model: TimeSformer, num_frames: int, img_size: int, batch_size: int = 1, repeats: int = 2,
                       device: Union[str, torch.device] = "cpu") -> dict:
    """Time and peak memory of one training step (forward, cross-entropy, backward) on random clips.

    Args:
        model: the model (moved to ``device``; its gradients are left set).
        num_frames: T.
        img_size: frame side in pixels.
        batch_size: clips per step.
        repeats: timed steps after one warm-up step (the median is reported), at least 1.
        device: where to run.

    Returns:
        ``step_time_s`` (median), ``step_times_s``, ``peak_memory_mib`` (during the timed steps,
        above the model, its gradients and the input: see ``peak_memory``) and ``memory_method``.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: time at least one step")
    device = torch.device(device)
    model = model.to(device).train()
    clip = torch.randn(batch_size, model.config.in_chans, num_frames, img_size, img_size, device=device)
    label = torch.zeros(batch_size, dtype=torch.long, device=device)

    def step() -> float:
        start = time.perf_counter()
        F.cross_entropy(model(clip), label).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    step()  # warm-up: allocates the gradients, which stay allocated (accumulated into) from here on
    with peak_memory(device) as memory:
        times = [step() for _ in range(repeats)]
    return {"step_time_s": statistics.median(times), "step_times_s": times,
            "peak_memory_mib": memory["peak_mib"], "memory_method": memory["method"]}


def attention_cost(attention_type: str, points: Sequence[tuple[int, int]], preset: str = "tiny",
                   memory_cap_gib: float = 4.0, measure: bool = True, batch_size: int = 1, repeats: int = 2,
                   device: Union[str, torch.device] = "cpu") -> list[dict]:
    """Cost of ``preset`` with ``attention_type`` at each ``(num_frames, img_size)``: counted FLOPs,
    estimated attention memory, and (``measure``) the measured time and peak memory of a training step.

    The model at each point is ``preset`` built for that clip size (its embeddings sized to it),
    with the explicit attention path. A point whose estimated training attention memory
    (``attention_memory_bytes``) exceeds ``memory_cap_gib`` is not run: its row says so
    (``measured`` False, ``skipped``), its FLOPs and estimate are still given.

    Args:
        attention_type: one of ``tsf.model.ATTENTION_TYPES``.
        points: ``(num_frames, img_size)`` pairs; sizes must be multiples of the patch size.
        preset: a name in ``tsf.PRESETS``.
        memory_cap_gib: largest estimated attention memory that is run.
        measure: time and measure the steps; False gives FLOPs and estimates only.
        batch_size: clips per measured step.
        repeats: timed steps per point (after a warm-up step).
        device: where to measure.

    Returns:
        One dict per point: ``attention_type``, ``num_frames``, ``img_size``, ``tokens`` (N x T),
        ``gflops`` (one clip's forward), ``attention_gib`` (estimate for the step), ``measured``,
        ``skipped`` (None or why), ``step_time_s``, ``peak_memory_gib`` (None where not measured).
    """
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"attention_type={attention_type!r}: use one of {ATTENTION_TYPES}")
    base = PRESETS[preset]
    rows = []
    for num_frames, img_size in points:
        if img_size % base.patch_size:
            raise ValueError(f"img_size={img_size} is not a multiple of {preset}'s patch size {base.patch_size}")
        config = replace(base, attention_type=attention_type, num_frames=num_frames, img_size=img_size)
        estimate = attention_memory_bytes(config, num_frames, img_size, batch_size) / 2**30
        row = {"attention_type": attention_type, "num_frames": num_frames, "img_size": img_size,
               "tokens": config.num_patches * num_frames, "gflops": count_flops(config) / 1e9,
               "attention_gib": estimate, "measured": False, "skipped": None,
               "step_time_s": None, "peak_memory_gib": None}
        if not measure:
            row["skipped"] = "not measured (measure=False)"
        elif estimate > memory_cap_gib:
            row["skipped"] = f"would exceed the {memory_cap_gib:g} GiB cap (estimated {estimate:.1f} GiB)"
        else:
            model = TimeSformer.from_config(config)
            with model.explicit_attention():
                cost = training_step_cost(model, num_frames, img_size, batch_size, repeats, device)
            del model
            peak = cost["peak_memory_mib"]
            row.update(measured=True, step_time_s=cost["step_time_s"],
                       peak_memory_gib=None if peak is None else peak / 1024)
        rows.append(row)
    return rows


def cost_table(rows: Sequence[dict]) -> str:
    """``attention_cost`` rows as a markdown table, one line per point: the counted GFLOPs, the attention
    memory estimate, and the measured step time and peak memory, or why the point was not run.

    Args:
        rows: ``attention_cost`` rows (several schemes' and sweeps' together, in the order to list them).
    """
    lines = ["| scheme | frames | px | patch tokens | GFLOPs | attention GiB (est.) | step s | peak GiB |", "|---" * 8 + "|"]
    for r in rows:
        peak = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.3f}"
        lines.append(f"| {SCHEME_NAMES[r['attention_type']]} | {r['num_frames']} | {r['img_size']} | {r['tokens']} | "
                     f"{r['gflops']:.2f} | {r['attention_gib']:.3f} | "
                     + (f"{r['step_time_s']:.2f} | {peak} |" if r["measured"] else f"{r['skipped']} | |"))
    return "\n".join(lines)


def flops_growth(rows: Sequence[dict], varied: str = "num_frames") -> dict[str, list[float]]:
    """How each scheme's counted FLOPs grow along a sweep: ``growth_exponents`` of its rows' ``gflops``
    against ``varied``, per scheme in the order the rows name them.

    Args:
        rows: ``attention_cost`` rows of one sweep, each scheme's in increasing ``varied``.
        varied: the swept setting, ``"num_frames"`` or ``"img_size"``.
    """
    schemes = list(dict.fromkeys(r["attention_type"] for r in rows))
    return {s: growth_exponents([r[varied] for r in rows if r["attention_type"] == s],
                                [r["gflops"] for r in rows if r["attention_type"] == s]) for s in schemes}


def attention_memory_table(points: Sequence[tuple[int, int]], preset: str = "base_8x224") -> str:
    """The attention memory of one training clip at ``preset``'s scale (``tsf.cost.attention_memory_bytes``,
    fp32, explicit attention), joint beside divided, as a markdown table.

    Args:
        points: ``(num_frames, img_size)`` pairs.
        preset: a name in ``tsf.PRESETS`` (its heads, depth and patch size).
    """
    base = {s: replace(PRESETS[preset], attention_type=s) for s in ("joint_space_time", "divided_space_time")}
    lines = ["| frames | px | patch tokens | joint GiB / clip | divided GiB / clip |", "|---|---|---|---|---|"]
    for frames, size in points:
        gib = {s: attention_memory_bytes(config, frames, size) / 2**30 for s, config in base.items()}
        tokens = (size // PRESETS[preset].patch_size) ** 2 * frames
        lines.append(f"| {frames} | {size} | {tokens:,} | {gib['joint_space_time']:.1f} | {gib['divided_space_time']:.2f} |")
    return "\n".join(lines)


# -- training (Table 1) ------------------------------------------------------------------------------
def steps_per_epoch(train_size: int, config, world_size: int = 1) -> int:
    """Optimiser steps in one epoch of ``train_size`` training clips, counted as the Trainer counts them:
    each of ``world_size`` processes gets ``train_size // world_size`` clips, and a step takes
    ``batch_size x grad_accum_steps`` of them (``config.for_world``; the incomplete last batch is dropped).

    Args:
        train_size: clips (videos) in the training set.
        config: a ``tsf.training.TrainConfig``.
        world_size: processes.
    """
    executed = config.for_world(world_size)
    steps = train_size // world_size // (executed.batch_size * executed.grad_accum_steps)
    if steps == 0:
        raise ValueError(f"{train_size} training clips make no step of batch_size {executed.batch_size} x "
                         f"grad_accum_steps {executed.grad_accum_steps} x {world_size} processes")
    return steps


def step_budget(config, train_size: int, steps: int, warmup_fraction: float = 0.0):
    """``config`` set to train for ``steps`` optimiser steps on ``train_size`` clips and validate once,
    after the last step: the epochs that take (rounded up), ``max_steps``, ``val_every`` = the epochs, and
    a warmup over ``warmup_fraction`` of the steps (in epochs, as ``TrainConfig`` counts it).

    Args:
        config: a ``tsf.training.TrainConfig`` with the recipe (batch size, optimiser, schedule...).
        train_size: clips (videos) in the training set.
        steps: optimiser steps.
        warmup_fraction: share of the steps that warm the learning rate up.

    Returns:
        A new ``TrainConfig``.
    """
    per_epoch = steps_per_epoch(train_size, config)
    epochs = -(-steps // per_epoch)  # rounded up
    return replace(config, epochs=epochs, max_steps=steps, val_every=epochs,
                   warmup_epochs=warmup_fraction * steps / per_epoch)


def task_examples(tasks: Mapping[str, PathLike], num_frames: int = 8) -> tuple[list, list[str]]:
    """The first validation video of every class of every task, for ``tsf.plots.frame_strip``.

    Args:
        tasks: task name -> data folder (``tsf.data.ensure_synthetic``).
        num_frames: frames read from the start of each video.

    Returns:
        ``(clips, labels)``: uint8 ``(T, H, W, 3)`` frames and a ``"task\nclass"`` label per video, task by
        task and class by class.
    """
    clips, labels = [], []
    for task, folder in tasks.items():
        samples = read_manifest(Path(folder) / "val.csv").samples
        for label, name in enumerate(load_classes(Path(folder) / "classes.txt")):
            clips.append(read_video_frames(next(s for s in samples if s.label == label).path, range(num_frames)))
            labels.append(f"{task}\n{name}")
    return clips, labels


@dataclass
class SchemeRun:
    """One trained scheme: ``result`` (plain values, see ``train_scheme``) and the trained ``model``."""

    result: dict
    model: TimeSformer


def train_scheme(data_dir: PathLike, attention_type: str, config, preset: str = "tiny", data=None,
                 callbacks: Sequence = ()) -> SchemeRun:
    """Train ``preset`` with ``attention_type`` from scratch on a data folder with ``tsf.training.Trainer``.

    The model's initial weights come from ``config.seed``, so every scheme trained with one seed
    starts from the same draw of the layers it shares with the others.

    Args:
        data_dir: a folder with ``train.csv``, ``val.csv`` and ``classes.txt`` (``tsf.data.ensure_synthetic``).
        attention_type: one of ``tsf.model.ATTENTION_TYPES``.
        config: a ``tsf.training.TrainConfig``; validation runs at least after the last epoch.
        preset: a name in ``tsf.PRESETS``.
        data: a ``tsf.data.VideoDataConfig`` (default: dense sampling at rate 1 and no scale jitter,
            the short side scaled to the crop size, as the synthetic motion task needs).
        callbacks: ``Trainer`` callbacks (none: nothing printed, nothing written).

    Returns:
        The run; ``result`` holds ``attention_type``, ``seed``, ``val_top1`` (after the last
        epoch), ``best_val_top1``, ``params``, ``gflops`` (one clip's forward), ``train_time_s``,
        ``clips_per_s``, ``steps``, ``peak_memory_mib`` and ``memory_method`` (``peak_memory``).
    """
    classes = data_folder_classes(Path(data_dir))
    torch.manual_seed(config.seed)
    model = build_model(preset, class_names=classes, attention_type=attention_type)
    if data is None:  # no scale jitter: a random rescale changes the synthetic squares' speed and size
        data = VideoDataConfig(short_side_range=(model.config.img_size, model.config.img_size))
    train_set, val_set = build_video_datasets(data_dir, model.config, data, config.seed)
    if val_set is None:
        raise FileNotFoundError(f"{Path(data_dir) / 'val.csv'} does not exist: comparing schemes needs a validation set")
    trainer = Trainer(model, config, train_set, val_set, callbacks=list(callbacks))
    with peak_memory(trainer.device) as memory:
        summary = trainer.fit()
    result = {
        "attention_type": attention_type,
        "seed": config.seed,
        "val_top1": summary["final"]["val_top1"],
        "best_val_top1": summary["best_val_top1"],
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(model) / 1e9,
        "train_time_s": summary["train_time_s"],
        "clips_per_s": summary["clips_per_s"],
        "steps": summary["steps"],
        "peak_memory_mib": memory["peak_mib"],
        "memory_method": memory["method"],
    }
    return SchemeRun(result, model.cpu().eval())


@dataclass
class Comparison:
    """What ``compare_schemes`` returns: ``results`` (JSON-ready) and the models of the first seed,
    ``models[task][attention_type]``."""

    results: dict
    models: dict[str, dict[str, TimeSformer]]


def compare_schemes(tasks: Mapping[str, PathLike], configs: Mapping[str, object], schemes: Sequence[str] = SCHEMES,
                    seeds: Sequence[int] = (0,), preset: str = "tiny", data=None,
                    log: Optional[Callable[[str], None]] = print) -> Comparison:
    """Train every scheme on every task with the same budget (the task's config) and seeds.

    Args:
        tasks: task name -> data folder (``tsf.data.ensure_synthetic(task)``).
        configs: task name -> ``tsf.training.TrainConfig`` used for every scheme on it; its ``seed``
            is replaced by each of ``seeds``.
        schemes: attention types, in the order to report them.
        seeds: one run per scheme, task and seed.
        preset: a name in ``tsf.PRESETS``.
        data: a ``tsf.data.VideoDataConfig`` for every task (default: ``train_scheme``'s).
        log: called with one line per finished run (None: silent).

    Returns:
        ``results`` holds, per task and scheme, means over the seeds: ``val_top1`` (fractions),
        ``train_time_s``, ``peak_memory_mib`` (the largest); ``val_top1_per_seed``; per scheme
        ``params`` and ``gflops``; ``chance`` per task (1 / classes); ``seeds``; ``train_config``
        per task; ``memory_method``; and the paper's ``paper_table1``.
    """
    missing = set(tasks) - set(configs)
    if missing:
        raise ValueError(f"no TrainConfig for the tasks {sorted(missing)}: configs needs one per task")
    unknown = [s for s in schemes if s not in ATTENTION_TYPES]
    if unknown:
        raise ValueError(f"schemes {unknown} are not attention types {ATTENTION_TYPES}")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    results: dict = {key: {} for key in ("val_top1", "val_top1_per_seed", "train_time_s", "peak_memory_mib",
                                         "chance", "train_config")}
    results.update(params={}, gflops={}, seeds=list(seeds), memory_method=None, paper_table1=PAPER_TABLE1)
    models: dict[str, dict[str, TimeSformer]] = {}
    for task, folder in tasks.items():
        results["chance"][task] = 1.0 / len(load_classes(Path(folder) / "classes.txt"))
        results["train_config"][task] = configs[task].to_dict()
        models[task] = {}
        for key in ("val_top1", "val_top1_per_seed", "train_time_s", "peak_memory_mib"):
            results[key][task] = {}
        for scheme in schemes:
            runs = []
            for seed in seeds:
                run = train_scheme(folder, scheme, replace(configs[task], seed=seed), preset, data)
                if not runs:
                    models[task][scheme] = run.model
                runs.append(run.result)
            accuracies = [r["val_top1"] for r in runs]
            results["val_top1"][task][scheme] = statistics.fmean(accuracies)
            results["val_top1_per_seed"][task][scheme] = accuracies
            results["train_time_s"][task][scheme] = statistics.fmean(r["train_time_s"] for r in runs)
            memories = [r["peak_memory_mib"] for r in runs if r["peak_memory_mib"] is not None]
            results["peak_memory_mib"][task][scheme] = max(memories) if memories else None
            results["params"][scheme] = runs[0]["params"]
            results["gflops"][scheme] = runs[0]["gflops"]
            results["memory_method"] = runs[0]["memory_method"]
            if log is not None:
                log(f"{task:>10} {SCHEME_NAMES[scheme]:<18} val top-1 "
                    + ", ".join(f"{a:.3f}" for a in accuracies)
                    + f"  ({statistics.fmean(r['train_time_s'] for r in runs):.0f} s per run)")
    return Comparison(results, models)


def scheme_table(results: Mapping) -> str:
    """``compare_schemes`` results as a markdown table in the layout of the paper's Table 1, the
    paper's numbers beside this run's.

    Args:
        results: ``Comparison.results`` (or the ``results.json`` it was saved to, loaded).
    """
    tasks = list(results["val_top1"])
    schemes = [s for s in SCHEMES if s in results["params"]]
    header = (["Attention", "Params", "GFLOPs"] + [f"{task} top-1" for task in tasks]
              + ["train s (" + " / ".join(tasks) + ")", "peak MiB (" + " / ".join(tasks) + ")",
                 "paper params", "paper K400", "paper SSv2"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scheme in schemes:
        paper = results.get("paper_table1", PAPER_TABLE1)[scheme]
        memories = [results["peak_memory_mib"][task][scheme] for task in tasks]
        cells = ([SCHEME_NAMES[scheme], f"{results['params'][scheme] / 1e3:.0f} k", f"{results['gflops'][scheme]:.3f}"]
                 + [f"{100 * results['val_top1'][task][scheme]:.1f}%" for task in tasks]
                 + [" / ".join(f"{results['train_time_s'][task][scheme]:.0f}" for task in tasks),
                    " / ".join("n/a" if m is None else f"{m:.0f}" for m in memories),
                    f"{paper['params_m']} M", f"{paper['k400']}%", f"{paper['ssv2']}%"])
        lines.append("| " + " | ".join(cells) + " |")
    chance = ", ".join(f"{task} {100 * results['chance'][task]:.0f}%" for task in tasks)
    seeds = results["seeds"]
    lines.append("")
    lines.append(f"Chance: {chance}. Top-1 on the validation videos after the last epoch"
                 + (f", mean of seeds {seeds}." if len(seeds) > 1 else f", seed {seeds[0]}."))
    return "\n".join(lines)
