"""Evaluation with the paper's multi-view protocol: the softmax of every view of a video
(``temporal_clips`` clips x ``spatial_crops`` crops) is averaged, then scored.

Reports top-1, top-5, mean-class accuracy (the mean of per-class recalls over the classes
present), the loss of the averaged prediction, a confusion matrix (rows: true class, columns:
predicted) and one row per video. The paper's Kinetics protocol is 1 temporal clip x 3 spatial
crops (left/centre/right) at the training crop size, which is this module's default. Long
videos (the paper's HowTo100M protocol): ``temporal_clips="cover"`` takes, per video, as many
clips as cover it and averages them all.

``python -m tsf evaluate --checkpoint CKPT --data DIR`` (or ``--config RECIPE``, see
``python -m tsf recipes``) or, in Python::

    result = tsf.evaluate.evaluate(model, "data/appearance", temporal_clips=1, spatial_crops=3)
    result.top1, result.confusion_matrix, result.save("eval/")
"""
from __future__ import annotations

import contextlib
import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import runtime, zoo
from .data import normalize, video_dataset
from .errors import DataError
from .model import TimeSformer
from .outputs import atomic_path, atomic_write_text, refuse_to_overwrite
from .runtime import PathLike
from .weights import from_pretrained, load_checkpoint_file


@dataclass
class EvaluationResult:
    """Per-video averaged predictions and the metrics computed from them.

    Args:
        video_ids: each video's ``index`` in the dataset's manifest, ascending.
        labels: true class per video.
        probabilities: ``(videos, classes)`` softmax averaged over the video's views.
        views: number of views averaged per video.
        class_names: class id -> name (``class_<id>`` when the model and data carry none).
        paths: video file per video, when the dataset knows them.
        bad_videos: videos left out because they could not be read: path -> reason.
    """

    video_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    views: np.ndarray
    class_names: list[str]
    paths: Optional[list[str]] = None
    bad_videos: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        num_classes = self.probabilities.shape[1]
        predicted = self.probabilities.argmax(1)
        k = min(5, num_classes)
        top_k = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        self.num_videos = len(self.labels)
        self.top1 = float((predicted == self.labels).mean()) if self.num_videos else 0.0
        self.top5 = float((top_k == self.labels[:, None]).any(1).mean()) if self.num_videos else 0.0
        true_prob = self.probabilities[np.arange(self.num_videos), self.labels]
        self.loss = float(-np.log(np.clip(true_prob, 1e-12, None)).mean()) if self.num_videos else 0.0
        self.confusion_matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(self.confusion_matrix, (self.labels, predicted), 1)
        present = self.confusion_matrix.sum(1) > 0
        recalls = self.confusion_matrix.diagonal()[present] / self.confusion_matrix.sum(1)[present]
        self.mean_class_accuracy = float(recalls.mean()) if present.any() else 0.0
        self.predicted = predicted
        self.top_k = top_k

    def summary(self) -> dict:
        """The metrics as plain JSON-ready values."""
        return {
            "videos": self.num_videos,
            "views_per_video": int(self.views.max()) if self.num_videos else 0,
            # differs from the maximum when videos have different view counts (temporal_clips="cover")
            "mean_views_per_video": round(float(self.views.mean()), 3) if self.num_videos else 0.0,
            "top1": self.top1,
            "top5": self.top5,
            "top5_k": self.top_k.shape[1],  # 5, or the class count when there are fewer classes
            "mean_class_accuracy": self.mean_class_accuracy,
            "loss": self.loss,
            "classes": len(self.class_names),
            "bad_videos": len(self.bad_videos),  # left out, never scored
            "bad_video_reasons": dict(self.bad_videos),
        }

    def rows(self) -> list[dict]:
        """One dict per video: id, path, true and predicted class, its probability, the top-k."""
        names = self.class_names
        rows = []
        for i in range(self.num_videos):
            label, pred = int(self.labels[i]), int(self.predicted[i])
            rows.append({
                "index": int(self.video_ids[i]),
                "path": self.paths[i] if self.paths else "",
                "label": label, "label_name": names[label],
                "predicted": pred, "predicted_name": names[pred],
                "probability": round(float(self.probabilities[i, pred]), 6),
                "correct": int(label == pred),
                "views": int(self.views[i]),
                "top_k": " ".join(names[c] for c in self.top_k[i]),
            })
        return rows

    def save(self, out_dir: PathLike, prefix: str = "eval") -> dict[str, Path]:
        """Write ``<prefix>_summary.json``, ``<prefix>_predictions.csv`` and ``<prefix>_confusion.csv``.

        Returns:
            The written paths by kind (``summary``, ``predictions``, ``confusion``).
        """
        paths = self.files(out_dir, prefix)
        atomic_write_text(paths["summary"], json.dumps(self.summary(), indent=2) + "\n")
        rows = self.rows()
        with atomic_path(paths["predictions"]) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["index"])
            writer.writeheader()
            writer.writerows(rows)
        with atomic_path(paths["confusion"]) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *self.class_names])
            for name, counts in zip(self.class_names, self.confusion_matrix):
                writer.writerow([name, *counts.tolist()])
        return paths

    @staticmethod
    def files(out_dir: PathLike, prefix: str = "eval") -> dict[str, Path]:
        """The files ``save`` writes, by kind."""
        return {kind: Path(out_dir) / f"{prefix}_{kind}.{ext}" for kind, ext in
                (("summary", "json"), ("predictions", "csv"), ("confusion", "csv"))}

    def plot_confusion(self, ax=None, normalize: bool = True):
        """The confusion matrix as an image (rows normalised to recall when ``normalize``)."""
        import matplotlib.pyplot as plt

        if ax is None:
            size = min(12, 2 + 0.4 * len(self.class_names))
            _, ax = plt.subplots(figsize=(size, size))
        matrix = self.confusion_matrix.astype(float)
        if normalize:
            matrix = matrix / np.clip(matrix.sum(1, keepdims=True), 1, None)
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        ticks = range(len(self.class_names))
        ax.set_xticks(ticks, self.class_names, rotation=90)
        ax.set_yticks(ticks, self.class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"top-1 {self.top1:.3f}, mean class accuracy {self.mean_class_accuracy:.3f}")
        ax.figure.colorbar(image, ax=ax, fraction=0.046)
        return ax


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    num_workers: int = 2,
    device: Union[str, torch.device] = "auto",
    precision: str = "auto",
    normalization: Optional[tuple[Sequence[float], Sequence[float]]] = None,
    class_names: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> EvaluationResult:
    """Run ``model`` over every view of ``dataset`` and average each video's softmax.

    Under ``torchrun`` every process takes every world-size-th item and the per-video sums are
    gathered, so all processes return the same result.

    Args:
        model: maps a normalised float clip batch to logits; left in the mode it came in.
        dataset: items ``{"clip": uint8 (3, T, H, W), "label", "index" (video id), ...}``.
        batch_size: clips per forward pass.
        num_workers: data-loading processes.
        device: where to run (``"auto"``: CUDA when available).
        precision: ``"auto"`` (bf16/fp16 autocast on CUDA; on CPU bf16 where it has bf16 matrix units,
            else fp32: ``tsf.runtime.resolve_precision``), ``fp32``, ``bf16``, ``fp16``.
        normalization: ``(mean, std)``; default ``model.config.mean``/``std``.
        class_names: default the model's, else the dataset manifest's, else ``class_<id>``.
        progress: show a progress bar (rank 0).
    """
    device = device if isinstance(device, torch.device) else runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    config = getattr(model, "config", None)
    if normalization is None:
        if config is None or not hasattr(config, "mean"):
            raise ValueError(f"{type(model).__name__} has no config.mean/config.std: pass normalization=(mean, std)")
        normalization = (config.mean, config.std)
    mean, std = normalization
    rank, world = runtime.rank_and_world()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=range(rank, len(dataset), world),
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=runtime.ignore_stop_signals)
    local_sums: dict[int, np.ndarray] = {}  # video id -> sum of its views' softmax
    local_counts: dict[int, int] = {}
    local_labels: dict[int, int] = {}
    was_training = model.training
    model.eval()
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader), unit="batch", desc="evaluate", dynamic_ncols=True)
    # no user code edits the weights between these batches: the lean path checks its weight caches once
    fixed = model.fixed_weights() if isinstance(model, TimeSformer) else contextlib.nullcontext()
    try:
        with torch.no_grad(), fixed:
            for batch in loader:
                if bar is not None:
                    bar.update()
                good = batch["bad"] == 0 if "bad" in batch else torch.ones(len(batch["label"]), dtype=torch.bool)
                if not good.any():  # only stand-ins for videos that could not be read
                    continue
                clip = normalize(batch["clip"][good].to(device, non_blocking=True), mean, std)
                with runtime.autocast(precision, device):
                    logits = model(clip)
                probs = logits.float().softmax(-1).cpu().numpy()
                for video, label, p in zip(batch["index"][good].tolist(), batch["label"][good].tolist(), probs):
                    local_sums[video] = local_sums[video] + p if video in local_sums else p.astype(np.float64)
                    local_counts[video] = local_counts.get(video, 0) + 1
                    local_labels[video] = label
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    # views of one video may have been scored on different processes: merge the per-video sums
    sums, counts, labels = {}, {}, {}
    for part_sums, part_counts, part_labels in runtime.all_gather_objects((local_sums, local_counts, local_labels)):
        for video, p in part_sums.items():
            sums[video] = sums[video] + p if video in sums else p
            counts[video] = counts.get(video, 0) + part_counts[video]
            labels[video] = part_labels[video]
    ids = np.array(sorted(sums), dtype=np.int64)
    num_classes = next(iter(sums.values())).shape[0] if sums else len(class_names or [])
    probabilities = (np.stack([sums[v] / counts[v] for v in ids]) if len(ids)
                     else np.zeros((0, num_classes))).astype(np.float32)
    label_array = np.array([labels[v] for v in ids], dtype=np.int64)
    if len(label_array) and label_array.max() >= num_classes:
        raise DataError(
            f"the data has label {int(label_array.max())} but the model predicts {num_classes} classes; "
            f"fine-tune it on this label set first (python -m tsf train --init CKPT --data DIR)"
        )
    names = _class_names(class_names, config, dataset, num_classes)
    bad: dict[str, str] = {}
    for part in runtime.all_gather_objects(getattr(dataset, "bad_videos", {})):
        bad.update(part)
    if bad and progress and rank == 0:
        listed = "; ".join(f"{path} ({reason})" for path, reason in list(bad.items())[:5])
        warnings.warn(f"{len(bad)} video(s) could not be read and were left out of the evaluation: {listed}"
                      + (f"; and {len(bad) - 5} more (summary: bad_video_reasons)" if len(bad) > 5 else ""))
    return EvaluationResult(ids, label_array, probabilities, np.array([counts[v] for v in ids]), names,
                            _video_paths(dataset, ids), bad)


def _class_names(given, config, dataset, num_classes: int) -> list[str]:
    manifest = getattr(dataset, "manifest", None)
    for names in (given, getattr(config, "class_names", None), getattr(manifest, "classes", None)):
        if names is not None and len(names) == num_classes:
            return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def _video_paths(dataset, ids: np.ndarray) -> Optional[list[str]]:
    manifest = getattr(dataset, "manifest", None)
    samples = getattr(manifest, "samples", None)
    if samples is None:
        return None
    return [str(samples[i].path) for i in ids]


def evaluate(
    model: nn.Module,
    data: Union[PathLike, Dataset],
    split: str = "val",
    temporal_clips: Union[int, str] = 1,
    spatial_crops: int = 3,
    sampling_rate: float = 1,
    sampling: str = "dense",
    target_fps: Optional[float] = None,
    batch_size: int = 8,
    num_workers: int = 2,
    device: str = "auto",
    precision: str = "auto",
    out_dir: Optional[PathLike] = None,
    progress: bool = True,
    max_bad_fraction: float = 0.05,
    overwrite: bool = False,
) -> EvaluationResult:
    """Evaluate ``model`` on a data folder's split (or any dataset) with the multi-view protocol.

    Args:
        model: a TimeSformer (frames, crop size, normalisation and class names come from its config).
        data: a data folder (``<split>.csv`` + ``classes.txt``) or a dataset yielding views
            (items with ``clip``, ``label``, ``index``).
        split: which CSV of the folder.
        temporal_clips: clips per video, evenly spaced in time (paper, Kinetics: 1), or ``"cover"``:
            per video as many as cover it (``tsf.data.sampling.covering_clips``; paper, HowTo100M).
        spatial_crops: crops per clip across the frame's long side (paper: 3).
        sampling_rate: video frames per clip frame in dense sampling (Kinetics 8x224: 32 at
            ``target_fps=30``; the synthetic data: 1).
        sampling: ``dense`` or ``uniform`` (frames spread over the whole video, as for SSv2).
        target_fps: count ``sampling_rate`` at this frame rate; None: in each video's own frames.
        batch_size: clips per forward pass.
        num_workers: data-loading processes.
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16``.
        out_dir: if given, ``EvaluationResult.save`` writes the summary, predictions and confusion there.
        progress: show a progress bar.
        max_bad_fraction: videos that cannot be read are left out and reported; more than this
            share of them stops the evaluation (``tsf.data.BadVideosError``).
        overwrite: replace result files already in ``out_dir`` (otherwise ``OutputExistsError``,
            raised before any work).
    """
    resolved = runtime.resolve_device(device)
    prefix = f"eval_{split}"
    if out_dir is not None:
        refuse_to_overwrite(EvaluationResult.files(out_dir, prefix).values(), overwrite, "evaluation results")
    dataset = data if isinstance(data, Dataset) else video_dataset(
        model, data, split, temporal_clips, spatial_crops, sampling_rate, sampling, target_fps, max_bad_fraction)
    result = evaluate_dataset(model.to(resolved), dataset, batch_size=batch_size, num_workers=num_workers,
                              device=resolved, precision=precision, progress=progress)
    if out_dir is not None:
        result.save(out_dir, prefix=prefix)
    return result


def load_model(checkpoint: str, num_heads: Optional[int] = None, trust_checkpoint: bool = False) -> tuple[nn.Module, dict]:
    """The model in ``checkpoint`` (anything ``tsf.from_pretrained`` reads) and the sampling it was
    trained with, when the checkpoint says (a tsf training run or a zoo entry).

    Args:
        checkpoint: a file, a Hugging Face folder or a zoo name.
        num_heads: attention heads, for checkpoints that do not record them and whose heads are not 64 wide.
        trust_checkpoint: allow files holding Python objects (unpickling can run code).
    """
    model = from_pretrained(checkpoint, trust_checkpoint, **({"num_heads": num_heads} if num_heads else {}))
    sampling: dict = {}
    entry = zoo.ZOO.get(checkpoint)
    if entry is not None and entry.sampling_rate:  # the official dense recipes count frames at 30 fps
        sampling = {"sampling_rate": entry.sampling_rate, "sampling": "dense", "target_fps": 30.0}
    elif entry is not None:  # SSv2: one frame per segment
        sampling = {"sampling": "uniform"}
    elif Path(checkpoint).is_file():
        saved = load_checkpoint_file(checkpoint, trust_checkpoint)
        data_config = saved.get("run_info", {}).get("data_config") if isinstance(saved, dict) else None
        if data_config:
            sampling = {"sampling_rate": data_config["sampling_rate"], "sampling": data_config["sampling"],
                        "target_fps": data_config["target_fps"] or None}
    return model, sampling
