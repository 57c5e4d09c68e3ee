"""Prediction on your own videos: class names and probabilities, a timeline over a long video,
and ``forward_features`` embeddings.

A whole video is scored like evaluation does (``temporal_clips`` clips x ``spatial_crops`` crops,
softmax averaged); a timeline scores windows of ``window`` seconds every ``stride`` seconds, each
window as one clip of ``num_frames`` frames spread evenly over it (pick ``window`` close to
``num_frames x sampling_rate / fps`` to show the model clips like those it was trained on).

``python -m tsf predict VIDEO... --checkpoint CKPT`` or, in Python::

    from tsf.prediction import predict, timeline

    prediction = predict(model, "video.mp4")   # also tsf.predict(model, "video.mp4")
    prediction.top                             # [("class", probability), ...]
    windows = timeline(model, "long.mp4", window=2.0, stride=1.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import runtime
from .data import clip_indices, normalize, open_video
from .data.transforms import short_side_scale, spatial_crop
from .errors import ConfigError
from .runtime import PathLike


@dataclass
class Prediction:
    """The prediction for one video, or one window of it.

    Args:
        video: the file.
        top: the ``topk`` most probable classes as ``(name, probability)``, best first.
        probabilities: softmax over all classes, averaged over the views.
        features: the ``forward_features`` embedding ``(D,)``, averaged over the views.
        start: window start in seconds (0 for a whole video).
        end: window end in seconds (a whole video: its duration; None for a folder of frames).
    """

    video: str
    top: list[tuple[str, float]]
    probabilities: np.ndarray = field(repr=False)
    features: np.ndarray = field(repr=False)
    start: float
    end: Optional[float]

    def to_dict(self) -> dict:
        return {"video": self.video, "start": round(self.start, 3), "end": None if self.end is None else round(self.end, 3),
                "top": [{"class": name, "probability": round(p, 6)} for name, p in self.top]}


def predict(
    model: nn.Module,
    video: PathLike,
    topk: int = 5,
    temporal_clips: int = 1,
    spatial_crops: int = 1,
    sampling_rate: float = 1,
    sampling: str = "dense",
    target_fps: Optional[float] = None,
    device: str = "auto",
    precision: str = "auto",
) -> Prediction:
    """Class probabilities for a whole video, from the same views ``tsf.evaluate`` scores.

    Args:
        model: a TimeSformer; frames per clip, crop size, normalisation and class names come from
            its config (classes are called ``class_<id>`` when it has no names).
        video: a video file (or a folder of frames) any ``tsf.data`` reader decodes.
        topk: how many classes ``Prediction.top`` lists.
        temporal_clips: clips evenly spaced over the video, averaged.
        spatial_crops: crops along the long side (1: centre; 3: the paper's test crops), averaged.
        sampling_rate: video frames per clip frame in dense sampling (as in training; the synthetic data: 1).
        sampling: ``dense`` or ``uniform`` (frames spread over the whole video, as for SSv2).
        target_fps: count ``sampling_rate`` at this frame rate (the official recipes: 30); None:
            in the video's own frames.
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16``.

    Raises:
        ConfigError: a count below 1.
        VideoReadError: the video cannot be read whole (missing, damaged, truncated).
    """
    _check_counts(topk=topk, temporal_clips=temporal_clips, spatial_crops=spatial_crops)
    with open_video(video) as reader:
        frames, fps = reader.num_frames, reader.info.fps
        rate = sampling_rate * fps / target_fps if target_fps and fps else sampling_rate
        views = [(clip_indices(sampling, frames, model.config.num_frames, rate, None, clip, temporal_clips).tolist(),
                  crop, spatial_crops)
                 for clip in range(temporal_clips) for crop in range(spatial_crops)]
        probabilities, features = _run_views(model, reader, views, device, precision)
    return _prediction(model, video, probabilities.mean(0), features.mean(0), topk, 0.0, frames / fps if fps else None)


def timeline(
    model: nn.Module,
    video: PathLike,
    window: float,
    stride: Optional[float] = None,
    topk: int = 5,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = False,
) -> list[Prediction]:
    """Predictions for consecutive windows of a long video.

    Args:
        model: a TimeSformer.
        video: a video file.
        window: window length in seconds; each window is one centre-cropped clip of
            ``num_frames`` frames spread evenly over it.
        stride: seconds between window starts (default: ``window``, no overlap).
        topk: classes listed per window.
        batch_size: windows decoded together and run in one forward pass.
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16``.
        progress: a progress bar over the windows.
    """
    _check_counts(topk=topk, batch_size=batch_size)
    stride = window if stride is None else stride
    if window <= 0 or stride <= 0:
        raise ValueError(f"window={window} and stride={stride} must be positive seconds")
    predictions = []
    with open_video(video) as reader:
        frames, fps = reader.num_frames, reader.info.fps
        if not fps:
            raise ValueError(f"{video} has no frame rate (a folder of frames?): a timeline in seconds needs a video file")
        duration = frames / fps
        # every window lies inside the video; a video shorter than one window is one window
        spans = [(float(start), min(float(start) + window, duration))
                 for start in np.arange(0.0, max(duration - window, 0.0) + 1e-9, stride)]
        with model.fixed_weights():  # the lean path checks its weight caches once, not per batch
            for first in tqdm(range(0, len(spans), batch_size), desc=f"windows of {Path(video).name}", unit="batch",
                              disable=not progress):
                chunk = spans[first:first + batch_size]
                views = []
                for start, end in chunk:
                    begin = int(round(start * fps))
                    last = min(max(begin, int(round(end * fps)) - 1), frames - 1)
                    views.append((np.linspace(begin, last, model.config.num_frames).round().astype(int).tolist(), 0, 1))
                probabilities, features = _run_views(model, reader, views, device, precision)
                predictions += [_prediction(model, video, p, f, topk, start, end)
                                for (start, end), p, f in zip(chunk, probabilities, features)]
    return predictions


@torch.no_grad()
def _run_views(model: nn.Module, reader, views: list[tuple[list[int], int, int]], device: str,
               precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Softmax ``(views, classes)`` and ``forward_features`` ``(views, D)`` of ``views`` of an open
    video (``tsf.data.open_video``), decoded in one read and run in one batch. A view is ``(frame
    indices, crop, crops)``: the short side is scaled to the crop size, then crop ``crop`` of
    ``crops`` along the long side is taken, as ``tsf.data.VideoClipDataset`` does in testing."""
    config = model.config
    resolved = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, resolved)
    model = model.to(resolved).eval()
    needed = sorted({i for indices, _, _ in views for i in indices})
    frames = torch.from_numpy(reader.read(needed)).permute(3, 0, 1, 2)  # (T, H, W, 3) -> (3, T, H, W)
    row = {index: k for k, index in enumerate(needed)}
    size = config.img_size
    batch = torch.stack([spatial_crop(short_side_scale(frames[:, [row[i] for i in indices]], size), size, crop, crops)
                         for indices, crop, crops in views])
    clip = normalize(batch.to(resolved), config.mean, config.std)
    with runtime.autocast(precision, resolved):
        features = model.forward_features(clip)
        logits = model.forward_head(features)
    return logits.float().softmax(-1).cpu().numpy(), features.float().cpu().numpy()


def _prediction(model: nn.Module, video: PathLike, probabilities: np.ndarray, features: np.ndarray, topk: int,
                start: float, end: Optional[float]) -> Prediction:
    names = model.config.class_names or [f"class_{i}" for i in range(len(probabilities))]
    order = np.argsort(-probabilities, kind="stable")[: max(1, min(topk, len(probabilities)))]
    return Prediction(str(video), [(names[i], float(probabilities[i])) for i in order], probabilities, features,
                      start, end)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"{name}={value}: give at least 1")
