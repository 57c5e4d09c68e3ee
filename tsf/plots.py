"""Figures the notebooks show about data and results: frame strips, class balance, where a clip's
frames come from on a video's timeline, per-class accuracy and the most confident mistakes.

Every function returns a matplotlib ``Figure`` (no pyplot state, so they work headless and in
JupyterLab alike); ``fig.savefig(path)`` keeps one. Attention overlays live in ``tsf.viz``.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure

ArrayLike = Union[np.ndarray, torch.Tensor]


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
