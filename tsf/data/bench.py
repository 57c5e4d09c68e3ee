"""Data-loading throughput: tsf's loader (seek, decode only up to the clip's last frame, convert
only the clip's frames) against decoding the whole video, one worker, one thread.

The test video is encoded here: ``seconds`` of ``height``-p H.264 at ``fps`` with a keyframe
every ``gop`` frames and x264's default quality (about 400 kbit/s, like Kinetics at 256p), a
textured picture panning so the decoder does real work.
Both sides open the file, pick the same clip (dense training sampling) and apply the same training
transforms to ``crop_size``; the baseline decodes every frame to RGB first, as loaders that read the
whole video do (``torchvision.io.read_video``, ``decord``'s ``vr[:]``).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .dataset import VideoClipDataset
from .manifest import Manifest, VideoSample
from .readers import VideoInfo, VideoReader, decord_available, open_video

PathLike = Union[str, os.PathLike]


def encode_test_video(path: PathLike, seconds: float = 10, fps: int = 30, height: int = 256, gop: int = 60) -> Path:
    """A textured, moving ``height``-p 4:3 H.264 video (x264 defaults but the keyframe interval).

    Args:
        path: the ``.mp4`` to write.
        seconds: duration.
        fps: frame rate.
        height: frame height (the width is 4/3 of it, rounded to even).
        gop: frames between keyframes.
    """
    import av

    width = round(height * 4 / 3 / 2) * 2
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    texture = np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(texture).permute(2, 0, 1).float()[None], 5, 1, 2)[0]
                         .permute(1, 2, 0).to(torch.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for t in range(round(seconds * fps)):
            y, x = int(height / 2 * (1 + np.sin(t / 40))), int(width / 2 * (1 + np.cos(t / 55)))
            frame = np.ascontiguousarray(texture[y:y + height, x:x + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return Path(path)


class _FullDecode(VideoReader):
    """The baseline's reader: decodes every frame to RGB, then hands out the ones asked for."""

    def __init__(self, video: VideoReader):
        self.video, self.path = video, video.path

    @property
    def info(self) -> VideoInfo:
        return self.video.info

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.video.read(range(self.num_frames))[list(indices)]

    def close(self) -> None:
        self.video.close()


class _FullDecodeDataset(VideoClipDataset):
    """The same clips and transforms as ``VideoClipDataset``, from fully decoded videos."""

    def open_video(self, sample: VideoSample) -> VideoReader:
        return _FullDecode(super().open_video(sample))


def benchmark_loading(num_frames: int = 8, crop_size: int = 224, sampling_rate: int = 8, seconds: float = 10,
                      fps: int = 30, height: int = 256, gops: Sequence[int] = (60, 250), clips: int = 24,
                      repeats: int = 3, readers: Optional[Sequence[str]] = None) -> dict:
    """Clips per second of one loading worker: tsf's loader vs decoding the whole video.

    The keyframe interval decides how much seeking saves: streaming encodes put one every 2 s
    (60 frames at 30 fps); x264's default is 250 frames, which in a 10 s clip leaves seeking
    little to skip, so the gain then comes mostly from stopping early and converting only the
    clip's frames.

    Args:
        num_frames: frames per clip.
        crop_size: side of the clip's square crop.
        sampling_rate: dense sampling stride (window ``num_frames x sampling_rate`` frames).
        seconds: length of the test video.
        fps: its frame rate.
        height: its frame height (256: Kinetics' usual short side).
        gops: keyframe intervals (frames) to test; the first gives the headline figure.
        clips: clips loaded per timed repetition.
        repeats: timed repetitions; the median is reported.
        readers: which readers to time (default: decord if installed, and PyAV); the first gives
            the headline figure.

    Returns:
        ``{"speedup_per_worker": x, "by_gop": {gop: {reader: {"tsf_clips_per_s",
        "full_decode_clips_per_s", "speedup"}}}, "settings": {...}}``.
    """
    readers = list(readers) if readers is not None else (["decord"] if decord_available() else []) + ["pyav"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    by_gop: dict[int, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for gop in gops:
                video = encode_test_video(Path(folder) / f"gop{gop}.mp4", seconds, fps, height, gop)
                # the same video once per timed clip, so that every item draws its own random clip
                manifest = Manifest([VideoSample(str(video), 0)] * clips, ["bench"], video, "csv")
                by_gop[gop] = {}
                for reader in readers:
                    settings = dict(num_frames=num_frames, sampling_rate=sampling_rate, crop_size=crop_size, reader=reader)
                    tsf_rate = _clips_per_s(VideoClipDataset(manifest, **settings), clips, repeats)
                    full_rate = _clips_per_s(_FullDecodeDataset(manifest, **settings), max(1, clips // 4), repeats)
                    by_gop[gop][reader] = {"tsf_clips_per_s": round(tsf_rate, 2),
                                           "full_decode_clips_per_s": round(full_rate, 2),
                                           "speedup": round(tsf_rate / full_rate, 2)}
            with open_video(video, "pyav") as opened:
                width = opened.info.width
    finally:
        torch.set_num_threads(threads)
    return {
        "speedup_per_worker": by_gop[gops[0]][readers[0]]["speedup"],
        "headline": f"{readers[0]}, keyframe every {gops[0]} frames",
        "by_gop": by_gop,
        "settings": {"video": f"{width}x{height} H.264 (x264 crf 23), {seconds} s at {fps} fps",
                     "clip": f"{num_frames} frames, dense sampling every {sampling_rate} frames, random start, "
                             f"scale jitter and {crop_size}x{crop_size} crop",
                     "workers": 1, "threads": 1, "clips": clips, "repeats": repeats},
    }


def _clips_per_s(dataset: VideoClipDataset, clips: int, repeats: int) -> float:
    """Median clips/s over ``repeats`` epochs of ``clips`` items (after one warm-up item)."""
    dataset[0]
    rates = []
    for repeat in range(repeats):
        dataset.set_epoch(repeat + 1)
        started = time.perf_counter()
        for item in range(clips):
            dataset[item]
        rates.append(clips / (time.perf_counter() - started))
    return float(np.median(rates))
