"""Prediction on your own videos: class names and probabilities, a timeline over a long video,
and ``forward_features`` embeddings.

A whole video is scored like evaluation does (``temporal_clips`` clips x ``spatial_crops`` crops,
softmax averaged); a timeline scores windows of ``window`` seconds every ``stride`` seconds, each
window as one clip of ``num_frames`` frames spread evenly over it (pick ``window`` close to
``num_frames x sampling_rate / fps`` to show the model clips like those it was trained on).

``python -m tsf predict VIDEO... --checkpoint CKPT`` or, in Python::

    from tsf.predict import predict, timeline

    prediction = predict(model, "video.mp4")   # also tsf.predict(model, "video.mp4")
    prediction.top                             # [("class", probability), ...]
    windows = timeline(model, "long.mp4", window=2.0, stride=1.0)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from . import distributed

PathLike = Union[str, Path]


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
    """
    from .data import clip_indices, open_video

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
    """
    from .data import open_video

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
        for first in range(0, len(spans), batch_size):
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
    from .data import normalize
    from .data.transforms import short_side_scale, spatial_crop
    from .train import _AUTOCAST_DTYPE, resolve_precision

    config = model.config
    resolved = distributed.resolve_device(device)
    precision = resolve_precision(precision, resolved)
    model = model.to(resolved).eval()
    needed = sorted({i for indices, _, _ in views for i in indices})
    frames = torch.from_numpy(reader.read(needed)).permute(3, 0, 1, 2)  # (T, H, W, 3) -> (3, T, H, W)
    row = {index: k for k, index in enumerate(needed)}
    size = config.img_size
    batch = torch.stack([spatial_crop(short_side_scale(frames[:, [row[i] for i in indices]], size), size, crop, crops)
                         for indices, crop, crops in views])
    clip = normalize(batch.to(resolved), config.mean, config.std)
    with torch.autocast(resolved.type, dtype=_AUTOCAST_DTYPE.get(precision, torch.float32), enabled=precision != "fp32"):
        features = model.forward_features(clip)
        logits = model.forward_head(features)
    return logits.float().softmax(-1).cpu().numpy(), features.float().cpu().numpy()


def _prediction(model: nn.Module, video: PathLike, probabilities: np.ndarray, features: np.ndarray, topk: int,
                start: float, end: Optional[float]) -> Prediction:
    names = model.config.class_names or [f"class_{i}" for i in range(len(probabilities))]
    order = np.argsort(-probabilities, kind="stable")[: max(1, min(topk, len(probabilities)))]
    return Prediction(str(video), [(names[i], float(probabilities[i])) for i in order], probabilities, features,
                      start, end)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files")
    parser.add_argument("--checkpoint", required=True,
                        help="a run's best.pt, an official .pyth, a Hugging Face folder or a zoo name")
    parser.add_argument("--topk", type=int, default=5, help="classes listed per video or window (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--window", type=float, metavar="SECONDS",
                        help="a timeline: predict windows of this many seconds (one clip each) instead of the whole video")
    parser.add_argument("--stride", type=float, metavar="SECONDS", help="seconds between window starts (default: --window)")
    parser.add_argument("--features", type=Path, metavar="OUT.npy",
                        help="save the forward_features embeddings: (videos, D), or (windows of all videos in order, D)")
    parser.add_argument("--temporal-clips", type=int, default=1, help="whole-video mode: clips averaged (default 1)")
    parser.add_argument("--spatial-crops", type=int, default=1, help="whole-video mode: crops averaged (default 1; the paper's test: 3)")
    parser.add_argument("--sampling-rate", type=float,
                        help="video frames per clip frame, dense sampling (default: the training run's or zoo entry's, else 1)")
    parser.add_argument("--target-fps", type=float,
                        help="count --sampling-rate at this frame rate (default: the training run's or zoo entry's, else the video's own)")
    parser.add_argument("--sampling", choices=("dense", "uniform"), help="clip sampling (default: as --sampling-rate)")
    parser.add_argument("--num-heads", type=int, help="attention heads of a checkpoint whose heads are not 64 wide")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16/fp16 autocast on CUDA, fp32 on CPU")


def run(args: argparse.Namespace) -> int:
    from .data import VideoReadError
    from .evaluate import load_model, sampling_with_flags

    missing = [str(v) for v in args.videos if not v.exists()]
    if missing:
        print(f"tsf predict: no such video file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        model, sampling = load_model(args.checkpoint, args.num_heads)
        sampling = sampling_with_flags(sampling, args)
        results = []
        for video in args.videos:
            if args.window is not None:
                results.append(timeline(model, video, args.window, args.stride, args.topk, device=args.device,
                                        precision=args.precision))
            else:
                results.append(predict(model, video, args.topk, args.temporal_clips, args.spatial_crops,
                                       device=args.device, precision=args.precision, **sampling))
    except (ValueError, FileNotFoundError, VideoReadError) as error:
        print(f"tsf predict: {error}", file=sys.stderr)
        return 2
    flat = [p for r in results for p in (r if isinstance(r, list) else [r])]
    if args.features is not None:
        args.features.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.features, np.stack([p.features for p in flat]))
    if args.json:
        out, row = [], 0
        for video, result in zip(args.videos, results):
            entries = result if isinstance(result, list) else [result]
            dicts = [{**p.to_dict(), "feature_row": row + i} if args.features else p.to_dict() for i, p in enumerate(entries)]
            row += len(entries)
            if args.window is not None:
                out.append({"video": str(video), "timeline": [{k: v for k, v in d.items() if k != "video"} for d in dicts]})
            else:
                out.append(dicts[0])
        print(json.dumps(out, indent=2))
    else:
        for p in flat:
            when = f" [{p.start:.2f}-{p.end:.2f} s]" if args.window is not None else ""
            print(f"{p.video}{when}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in p.top))
        if args.features is not None:
            print(f"wrote {args.features} ({len(flat)} x {flat[0].features.shape[0]})")
    return 0
