"""Figures the notebooks show about data and results: frame strips, class balance, where a clip's
frames come from on a video's timeline, per-class accuracy, and the attention-scheme comparison of
``tsf.schemes`` (accuracy beside the paper's Table 1, cost against clip length and size as in its
Figure 3).

Every function returns a matplotlib ``Figure`` (no pyplot state, so they work headless and in
JupyterLab alike); ``fig.savefig(path)`` keeps one. Attention overlays live in ``tsf.viz``.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure

from .schemes import PAPER_TABLE1, SCHEME_NAMES, SCHEMES

ArrayLike = Union[np.ndarray, torch.Tensor]
SCHEME_COLOURS = {"space_only": "tab:gray", "joint_space_time": "tab:orange", "divided_space_time": "tab:blue"}


def _frames(clip: ArrayLike) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` from a dataset clip ``(3, T, H, W)`` or decoded frames ``(T, H, W, 3)``."""
    array = clip.cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if array.ndim == 4 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 3, 0)  # (3, T, H, W) -> (T, H, W, 3)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"a clip must be uint8 (3, T, H, W) or (T, H, W, 3); got {array.dtype} {array.shape}")
    return array


def frame_strip(clips: Sequence[ArrayLike], row_labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
                frame_labels: Optional[Sequence[str]] = None, panel_inches: float = 1.2) -> Figure:
    """Clips as rows of frames.

    Args:
        clips: each uint8 ``(3, T, H, W)`` (as datasets yield) or ``(T, H, W, 3)`` (as readers
            return); every clip has the same number of frames.
        row_labels: a label per clip (its class, its file...).
        title: figure title.
        frame_labels: a label per frame column (default ``t = i``).
        panel_inches: size of one frame's panel.
    """
    strips = [_frames(clip) for clip in clips]
    num_frames = len(strips[0])
    if any(len(s) != num_frames for s in strips):
        raise ValueError(f"every clip needs the same number of frames; got {[len(s) for s in strips]}")
    fig = Figure(figsize=(panel_inches * num_frames, panel_inches * len(strips) + (0.4 if title else 0.0)),
                 layout="constrained")
    axes = fig.subplots(len(strips), num_frames, squeeze=False)
    for r, frames in enumerate(strips):
        for t, image in enumerate(frames):
            axes[r, t].imshow(image)
            axes[r, t].set_xticks([])
            axes[r, t].set_yticks([])
            if r == 0:
                axes[r, t].set_title(frame_labels[t] if frame_labels is not None else f"t = {t}", fontsize=8)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def class_balance(label_counts: Mapping[str, Sequence[int]], class_names: Sequence[str]) -> Figure:
    """Videos per class, one group of bars per class and one bar per split.

    Args:
        label_counts: split name -> videos per class id (e.g. ``np.bincount`` of the labels).
        class_names: class id -> name.
    """
    fig = Figure(figsize=(max(4.0, 0.5 * len(class_names) * len(label_counts)), 3.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(label_counts)
    positions = np.arange(len(class_names))
    for k, (split, counts) in enumerate(label_counts.items()):
        ax.bar(positions + k * width, counts, width, label=split)
    ax.set_xticks(positions + width * (len(label_counts) - 1) / 2, class_names, rotation=45 if len(class_names) > 8 else 0)
    ax.set_ylabel("videos")
    ax.set_title("class balance")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(class_names) <= 8 else -0.3),
              ncol=len(label_counts), frameon=False)  # below the axes: never over a bar
    return fig


def sampling_timeline(video_frames: int, views: Mapping[str, Sequence[int]], fps: Optional[float] = None) -> Figure:
    """Which frames of a video each clip reads: one row per clip on the video's timeline.

    Args:
        video_frames: frames in the video.
        views: clip name -> the frame indices it reads (``tsf.data.clip_indices``).
        fps: frames per second, to label the axis in seconds too.
    """
    fig = Figure(figsize=(8.0, 0.5 + 0.4 * len(views)), layout="constrained")
    ax = fig.subplots()
    for row, (name, indices) in enumerate(views.items()):
        ax.plot([0, video_frames - 1], [row, row], color="0.85", linewidth=6, solid_capstyle="butt")
        ax.scatter(indices, [row] * len(indices), s=18, zorder=3)
    ax.set_yticks(range(len(views)), list(views))
    ax.set_ylim(len(views) - 0.5, -0.5)
    ax.set_xlim(-1, video_frames)
    seconds = f" ({video_frames / fps:.1f} s at {fps:g} fps)" if fps else ""
    ax.set_xlabel(f"frame of the video, 0 .. {video_frames - 1}{seconds}")
    return fig


def per_class_accuracy(confusion_matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Recall of each class (the diagonal of the confusion matrix over its row sums).

    Args:
        confusion_matrix: ``(classes, classes)``, rows true, columns predicted.
        class_names: class id -> name.
    """
    counts = confusion_matrix.sum(1)
    recall = np.divide(confusion_matrix.diagonal(), counts, out=np.zeros(len(counts)), where=counts > 0)
    fig = Figure(figsize=(max(4.0, 0.45 * len(class_names)), 3.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(class_names)), recall)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45 if len(class_names) > 8 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (recall)")
    ax.set_title("per-class accuracy")
    return fig


# -- the attention schemes (tsf.schemes) -----------------------------------------------------------
def plot_scheme_accuracy(results: Mapping, thresholds: Optional[Mapping[str, float]] = None) -> Figure:
    """Bars of top-1 per task and scheme: the paper's Table 1 (left) beside this run (right), chance dashed.

    Args:
        results: ``tsf.schemes.compare_schemes(...).results`` (or the loaded ``results.json``).
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


def plot_cost(frame_rows: Sequence[dict], size_rows: Sequence[dict], memory_cap_gib: Optional[float] = None) -> Figure:
    """Figure 3 in miniature: GFLOPs, step time and peak memory against frames (top) and frame size
    (bottom), one line per scheme; points not run are drawn hollow at their estimate, on the
    memory panels, and marked ``x`` on the time panels' axis.

    Args:
        frame_rows: ``tsf.schemes.attention_cost`` rows of a sweep over frames (every scheme's rows together).
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
