"""The attention schemes side by side: the paper's Table 1 and Figure 3 in miniature.

Table 1 of Bertasius et al. (ICML 2021) trains one architecture with each attention scheme: on
Kinetics-400 (appearance-heavy) all schemes are close; on Something-Something-v2 (motion-heavy)
space-only attention collapses while joint and divided space-time attention do not.
``compare_schemes`` does the same with a small model on the synthetic ``appearance`` and ``motion``
tasks (``tsf.data.synth``): the same model, data and budget for every scheme, trained by
``tsf.train.Trainer``; it returns plain results (``results.json``) and the trained models.

Figure 3 compares the cost of joint and divided attention as clips get longer or larger: joint
attention compares all ``N x T`` patch tokens with each other, ``O((N T)^2)``; divided attention
compares each patch with itself across the ``T`` frames and each frame's ``N`` patches with each
other, ``O(N T (N + T))``. ``attention_cost`` counts each model's FLOPs (``count_architecture_flops``:
``torch.utils.flop_counter`` on a meta-device copy, attention matmuls included), computes the
memory its attention matrices take (``attention_memory_bytes``), and measures the time and peak
memory of a training step (forward and backward), except where the estimated memory exceeds a
cap: those points are reported as ``would exceed`` instead of run.

Measured costs use the explicit attention (softmax of the full score matrix, as the official
code does and as the paper measured): fused kernels (flash attention) avoid storing the matrix,
which removes joint attention's quadratic memory but not its quadratic FLOPs.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .bench import peak_memory
from .model import ATTENTION_TYPES, PRESETS, TimeSformer, TimeSformerConfig, count_flops

PathLike = Union[str, Path]
SCHEMES = ("space_only", "joint_space_time", "divided_space_time")  # the order of the paper's Table 1
SCHEME_NAMES = {"space_only": "Space", "joint_space_time": "Joint Space-Time",
                "divided_space_time": "Divided Space-Time"}
SCHEME_COLOURS = {"space_only": "tab:gray", "joint_space_time": "tab:orange", "divided_space_time": "tab:blue"}
# Table 1 of the paper: ViT-B/16 TimeSformer, 8 x 224, ImageNet-21k initialisation; top-1 %
PAPER_TABLE1 = {
    "space_only": {"params_m": 85.9, "k400": 76.9, "ssv2": 36.6},
    "joint_space_time": {"params_m": 85.9, "k400": 77.4, "ssv2": 58.5},
    "divided_space_time": {"params_m": 121.4, "k400": 78.0, "ssv2": 59.5},
}
BYTES_FP32 = 4


# -- memory ---------------------------------------------------------------------------------------
def attention_memory_bytes(config: TimeSformerConfig, num_frames: int, img_size: int, batch_size: int = 1,
                           training: bool = True) -> int:
    """Bytes of fp32 attention probabilities the explicit attention path holds at its peak.

    One block's probabilities are ``batch x heads x sum over its sequences of L^2``: joint, one
    sequence of ``1 + N T`` tokens; space-only, ``T`` sequences of ``1 + N``; divided, ``T``
    spatial sequences of ``1 + N`` plus ``N`` temporal sequences of ``T``. Inference holds one
    block's scores and probabilities at a time (2 blocks' worth); training keeps every block's
    probabilities for the backward pass and, at the last block's backward, their gradients and
    those of the scores too (``depth + 2`` blocks' worth). The rest of the activations grow
    linearly with the tokens and are not included.

    Args:
        config: the architecture (``attention_type``, patch size, heads, depth).
        num_frames: T.
        img_size: side of the square frames in pixels.
        batch_size: clips per step.
        training: a training step (forward and backward) rather than a forward pass.
    """
    grid = img_size // config.patch_size
    patches, frames = grid * grid, num_frames
    if config.attention_type == "joint_space_time":
        squares = (1 + patches * frames) ** 2
    elif config.attention_type == "space_only":
        squares = frames * (1 + patches) ** 2
    else:
        squares = frames * (1 + patches) ** 2 + patches * frames**2
    per_block = batch_size * config.num_heads * squares * BYTES_FP32
    return per_block * (config.depth + 2 if training else 2)


# -- FLOPs ------------------------------------------------------------------------------------------
def count_architecture_flops(model_or_config: Union[TimeSformer, TimeSformerConfig], num_frames: Optional[int] = None,
                             img_size: Optional[int] = None) -> int:
    """FLOPs of one clip's forward pass (multiply-add = 2), attention matmuls included.

    ``tsf.count_flops`` counts whatever kernels run: on CPU the fused attention kernel
    (``scaled_dot_product_attention``) has no FLOP formula in ``torch.utils.flop_counter`` and
    counts as zero. Here the model runs on the meta device (no memory, no time, any size) with the
    explicit attention path, whose two matmuls per attention are counted.

    Args:
        model_or_config: a model (copied, not changed) or an architecture.
        num_frames: frames per clip (default: the model's).
        img_size: frame side in pixels (default: the model's).
    """
    if isinstance(model_or_config, TimeSformerConfig):
        meta = TimeSformer.from_config(model_or_config).to("meta")
    else:
        meta = copy.deepcopy(model_or_config).to("meta")
    meta.set_fused_attention(False)
    return int(count_flops(meta.eval(), num_frames, img_size))


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
               "tokens": config.num_patches * num_frames, "gflops": count_architecture_flops(config) / 1e9,
               "attention_gib": estimate, "measured": False, "skipped": None,
               "step_time_s": None, "peak_memory_gib": None}
        if not measure:
            row["skipped"] = "not measured (measure=False)"
        elif estimate > memory_cap_gib:
            row["skipped"] = f"would exceed the {memory_cap_gib:g} GiB cap (estimated {estimate:.1f} GiB)"
        else:
            model = TimeSformer.from_config(config)
            model.set_fused_attention(False)
            cost = training_step_cost(model, num_frames, img_size, batch_size, repeats, device)
            del model
            peak = cost["peak_memory_mib"]
            row.update(measured=True, step_time_s=cost["step_time_s"],
                       peak_memory_gib=None if peak is None else peak / 1024)
        rows.append(row)
    return rows


def plot_cost(frame_rows: Sequence[dict], size_rows: Sequence[dict], memory_cap_gib: Optional[float] = None) -> Figure:
    """Figure 3 in miniature: GFLOPs, step time and peak memory against frames (top) and frame size
    (bottom), one line per scheme; points not run are drawn hollow at their estimate, on the
    memory panels, and marked ``x`` on the time panels' axis.

    Args:
        frame_rows: ``attention_cost`` rows of a sweep over frames (every scheme's rows together).
        size_rows: rows of a sweep over frame sizes.
        memory_cap_gib: draw the cap on the memory panels.
    """
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    for axes_row, rows, key, label in ((axes[0], frame_rows, "num_frames", "frames per clip"),
                                       (axes[1], size_rows, "img_size", "frame size (px)")):
        fixed = _fixed_setting(rows, key)
        for scheme in [s for s in SCHEMES if any(r["attention_type"] == s for r in rows)]:
            mine = sorted((r for r in rows if r["attention_type"] == scheme), key=lambda r: r[key])
            xs = [r[key] for r in mine]
            style = {"color": SCHEME_COLOURS[scheme], "label": SCHEME_NAMES[scheme]}
            flops = [r["gflops"] for r in mine]
            axes_row[0].plot(xs, flops, marker="o", **style)
            linear = [flops[0] * (x / xs[0]) ** (2 if key == "img_size" else 1) for x in xs]
            axes_row[0].plot(xs, linear, linestyle=":", color=style["color"], linewidth=1)
            ran = [r for r in mine if r["measured"]]
            axes_row[1].plot([r[key] for r in ran], [r["step_time_s"] for r in ran], marker="o", **style)
            axes_row[2].plot([r[key] for r in ran], [r["peak_memory_gib"] for r in ran], marker="o", **style)
            axes_row[2].plot(xs, [r["attention_gib"] for r in mine], linestyle="--", color=style["color"], linewidth=1)
            skipped = [r for r in mine if not r["measured"]]
            if skipped:
                axes_row[2].scatter([r[key] for r in skipped], [r["attention_gib"] for r in skipped], s=70,
                                    facecolors="none", edgecolors=style["color"], zorder=3)
                axes_row[1].scatter([r[key] for r in skipped], [0] * len(skipped), marker="x", color=style["color"],
                                    zorder=3, clip_on=False)
        titles = (f"GFLOPs per clip (counted; dotted: {'area' if key == 'img_size' else 'linear'} growth)",
                  "training step time, s (measured; x: not run)",
                  "peak memory, GiB (measured; dashed: attention estimate)")
        for ax, title in zip(axes_row, titles):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(f"{label} ({fixed})")
            ax.set_title(title, fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes_row[1].set_yscale("linear")
        axes_row[1].set_ylim(bottom=0)
        if memory_cap_gib is not None:
            axes_row[2].axhline(memory_cap_gib, color="red", linewidth=1, label=f"cap {memory_cap_gib:g} GiB")
        axes_row[0].legend(fontsize=8)
        axes_row[2].legend(fontsize=8)
    fig.suptitle("Cost of joint vs divided space-time attention "
                 "(cf. the paper's Figure 3: joint explodes, divided grows gently)", fontsize=11)
    return fig


def _fixed_setting(rows: Sequence[dict], varied: str) -> str:
    """The sweep's fixed setting, for the axis label: '64 px' when frames vary, '8 frames' when sizes vary."""
    if varied == "num_frames":
        return ", ".join(f"{s} px" for s in sorted({r["img_size"] for r in rows}))
    return ", ".join(f"{t} frames" for t in sorted({r["num_frames"] for r in rows}))


# -- training (Table 1) ------------------------------------------------------------------------------
@dataclass
class SchemeRun:
    """One trained scheme: ``result`` (plain values, see ``train_scheme``) and the trained ``model``."""

    result: dict
    model: TimeSformer


def train_scheme(data_dir: PathLike, attention_type: str, config, preset: str = "tiny", data=None,
                 callbacks: Sequence = ()) -> SchemeRun:
    """Train ``preset`` with ``attention_type`` from scratch on a data folder with ``tsf.train.Trainer``.

    The model's initial weights come from ``config.seed``, so every scheme trained with one seed
    starts from the same draw of the layers it shares with the others.

    Args:
        data_dir: a folder with ``train.csv``, ``val.csv`` and ``classes.txt`` (``tsf.data.ensure_synthetic``).
        attention_type: one of ``tsf.model.ATTENTION_TYPES``.
        config: a ``tsf.train.TrainConfig``; validation runs at least after the last epoch.
        preset: a name in ``tsf.PRESETS``.
        data: a ``tsf.train.VideoDataConfig`` (default: dense sampling at rate 1 and no scale jitter,
            the short side scaled to the crop size, as the synthetic motion task needs).
        callbacks: ``Trainer`` callbacks (none: nothing printed, nothing written).

    Returns:
        The run; ``result`` holds ``attention_type``, ``seed``, ``val_top1`` (after the last
        epoch), ``best_val_top1``, ``params``, ``gflops`` (one clip's forward), ``train_time_s``,
        ``clips_per_s``, ``steps``, ``peak_memory_mib`` and ``memory_method`` (``peak_memory``).
    """
    from .train import Trainer, VideoDataConfig, build_model, build_video_datasets, data_folder_classes

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
        "gflops": count_architecture_flops(model) / 1e9,
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
        configs: task name -> ``tsf.train.TrainConfig`` used for every scheme on it; its ``seed``
            is replaced by each of ``seeds``.
        schemes: attention types, in the order to report them.
        seeds: one run per scheme, task and seed.
        preset: a name in ``tsf.PRESETS``.
        data: a ``tsf.train.VideoDataConfig`` for every task (default: ``train_scheme``'s).
        log: called with one line per finished run (None: silent).

    Returns:
        ``results`` holds, per task and scheme, means over the seeds: ``val_top1`` (fractions),
        ``train_time_s``, ``peak_memory_mib`` (the largest); ``val_top1_per_seed``; per scheme
        ``params`` and ``gflops``; ``chance`` per task (1 / classes); ``seeds``; ``train_config``
        per task; ``memory_method``; and the paper's ``paper_table1``.
    """
    from .data import load_classes

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


def plot_scheme_accuracy(results: Mapping, thresholds: Optional[Mapping[str, float]] = None) -> Figure:
    """Bars of top-1 per task and scheme: the paper's Table 1 (left) beside this run (right), chance dashed.

    Args:
        results: ``Comparison.results`` (or the loaded ``results.json``).
        thresholds: task -> a top-1 level to draw as a dotted line (e.g. the 90% the claims check).
    """
    tasks = list(results["val_top1"])
    schemes = [s for s in SCHEMES if s in results["params"]]
    paper = results.get("paper_table1", PAPER_TABLE1)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    paper_ax, ours_ax = fig.subplots(1, 2)
    width = 0.8 / len(schemes)
    for ax, groups, values in (
        (paper_ax, ["Kinetics-400\n(appearance)", "SSv2\n(motion)"],
         {s: [paper[s]["k400"] / 100, paper[s]["ssv2"] / 100] for s in schemes}),
        (ours_ax, tasks, {s: [results["val_top1"][t][s] for t in tasks] for s in schemes}),
    ):
        for i, scheme in enumerate(schemes):
            xs = np.arange(len(groups)) + (i - (len(schemes) - 1) / 2) * width
            bars = ax.bar(xs, values[scheme], width, color=SCHEME_COLOURS[scheme], label=SCHEME_NAMES[scheme])
            ax.bar_label(bars, labels=[f"{100 * v:.0f}" for v in values[scheme]], fontsize=8)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("top-1")
    for j, task in enumerate(tasks):
        span = (j - 0.45, j + 0.45)
        ours_ax.plot(span, [results["chance"][task]] * 2, color="black", linestyle="--", linewidth=1,
                     label="chance" if j == 0 else None)
        if thresholds and task in thresholds:
            ours_ax.plot(span, [thresholds[task]] * 2, color="green", linestyle=":", linewidth=1.2,
                         label="claim threshold" if j == 0 else None)
    paper_ax.set_title("Paper, Table 1 (ViT-B, ImageNet-21k init, 8 x 224)", fontsize=10)
    ours_ax.set_title("Here: tiny model from scratch, synthetic tasks, same budget per task", fontsize=10)
    fig.legend(*ours_ax.get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=8)
    return fig


# -- divided attention follows the object --------------------------------------------------------
def divided_attention_follows(model: TimeSformer, clip: torch.Tensor, frames: np.ndarray,
                              query_frame: Optional[int] = None, block: int = -1) -> dict:
    """Where one token of a divided model looks, for a clip of the moving square: the query is the
    patch holding the square at ``query_frame``.

    Args:
        model: a ``divided_space_time`` model.
        clip: its normalised input ``(1, 3, T, H, W)``.
        frames: the same clip as uint8 ``(T, H, W, 3)`` (to find the square: ``tsf.attention.object_patches``).
        query_frame: the query's frame (default: the middle one).
        block: which block's attention.

    Returns:
        ``temporal`` ``(T, h, w)``: the query's temporal attention over the frames, drawn at its own
        patch (``tsf.attention.attention_map(kind="temporal")``); ``space_time`` ``(T, h, w)``: where
        its temporal-then-spatial path reaches in each frame (``kind="patch"``); ``track`` ``(T, 2)``:
        the square's patch per frame; ``on_object`` per frame: the share of that frame's space-time
        weight on the square's patch; ``uniform``: that share if the weight were spread evenly;
        ``query`` ``(frame, row, col)``; ``probabilities`` of the classes; ``block``.
    """
    from .attention import attention_map, object_patches, record_attention

    if model.config.attention_type != "divided_space_time":
        raise ValueError(f"divided_attention_follows needs a divided_space_time model; "
                         f"this one is {model.config.attention_type}")
    grid = (clip.shape[-2] // model.config.patch_size, clip.shape[-1] // model.config.patch_size)
    track = object_patches(frames, grid)
    query_frame = len(track) // 2 if query_frame is None else query_frame
    patch = tuple(track[query_frame].tolist())
    model.eval()
    with torch.no_grad(), record_attention(model) as recording:
        probabilities = model(clip).softmax(-1)[0]
    temporal = attention_map(recording, "temporal", block=block, patch=patch, frame=query_frame)
    space_time = attention_map(recording, "patch", block=block, patch=patch, frame=query_frame)
    per_frame = space_time.flatten(1)
    on_object = per_frame[torch.arange(len(track)), track[:, 0] * grid[1] + track[:, 1]] / per_frame.sum(1)
    return {"temporal": temporal, "space_time": space_time, "track": track, "on_object": on_object.tolist(),
            "uniform": 1.0 / per_frame.shape[1], "query": (query_frame, *patch),
            "probabilities": probabilities.tolist(), "block": range(len(model.blocks))[block]}


def follows_moving_square(model: TimeSformer, num_clips: int = 32, seed: int = 7, block: int = 0) -> dict:
    """How closely a divided model's attention follows a moving square, over clips of the one-square
    ``motion`` task of ``tsf.data.synth`` rendered in memory (label ``i % 4`` for clip ``i``).

    For each clip, ``divided_attention_follows`` from the square's patch in the middle frame; the
    clip counts the share of the space-time path on the square's patch over the frames in which the
    square has left the query's patch (a clip whose square never leaves it is skipped).

    Args:
        model: a ``divided_space_time`` model sized for the task (``tiny``: 8 frames of 32 px).
        num_clips: clips rendered.
        seed: their generator seed: ``np.random.default_rng([seed, i])`` for clip i.
        block: which block's attention.

    Returns:
        ``share``: the mean over the counted clips; ``clips``: how many counted; ``uniform``: the
        share of an even spread; ``block``; ``example``: ``(label, frames, follows)`` of the clip
        followed best among those the model classifies right (all of them if it gets none right,
        or has no class names to check against).
    """
    from .data import normalize
    from .data.synth import TASKS, render

    cfg = model.config
    right_names = cfg.class_names is not None and tuple(cfg.class_names) == TASKS["motion"]
    counted = []  # (classified right, share, (label, frames, follows)) of each clip whose square left the patch
    for video in range(num_clips):
        label = video % len(TASKS["motion"])
        frames = render("motion", label, cfg.num_frames, cfg.img_size, np.random.default_rng([seed, video]))
        clip = normalize(torch.from_numpy(frames).permute(3, 0, 1, 2)[None], cfg.mean, cfg.std)
        follows = divided_attention_follows(model, clip, frames, block=block)
        track, query_frame = follows["track"], follows["query"][0]
        moved = (track != track[query_frame]).any(1).numpy()
        if moved.any():
            share = float(np.mean(np.asarray(follows["on_object"])[moved]))
            right = right_names and int(np.argmax(follows["probabilities"])) == label
            counted.append((right, share, (label, frames, follows)))
    if not counted:
        raise ValueError(f"no square left its patch in {num_clips} clips: use more clips")
    example = max(counted, key=lambda c: (c[0], c[1]))[2]
    return {"share": statistics.fmean(c[1] for c in counted), "clips": len(counted), "uniform": example[2]["uniform"],
            "block": example[2]["block"], "example": example}
