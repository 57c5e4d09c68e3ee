"""Shards against files: ``python -m tsf data bench --shards N``.

``N`` copies of one short test video (``bench.encode_test_video``) as separate files, and the
same videos packed into shards (``write_shards``); one worker, one thread, reads one training clip
of every video per pass, from the files (``VideoClipDataset``, in the sampler's random order) and
from the shards (``ShardStream``, streamed). Each is timed warm (page cache full: what a second
epoch on one machine sees) and cold: before the pass every file's cached pages are dropped
(``posix_fadvise(DONTNEED)``, no root needed), which is as close as one machine gets to a shared
file system's first read; a network file system's per-file latency is not reproduced.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .bench import encode_test_video
from .dataset import VideoClipDataset
from .manifest import read_manifest
from .shards import write_shards
from .stream import ShardStream


def benchmark_shards(videos: int = 64, seconds: float = 2, height: int = 128, num_frames: int = 8, crop_size: int = 112,
                     sampling_rate: int = 4, repeats: int = 2) -> dict:
    """Clips/s of one worker from files and from shards, warm and cold.

    Args:
        videos: how many video files.
        seconds: length of each.
        height: their frame height.
        num_frames: frames per clip.
        crop_size: clip side.
        sampling_rate: dense sampling stride.
        repeats: timed passes of each kind; the median is reported.

    Returns:
        ``{"rows": {"files": {"warm_clips_per_s", "cold_clips_per_s"}, "shards": {...}}, "settings": {...}}``.
    """
    options = dict(num_frames=num_frames, crop_size=crop_size, sampling_rate=sampling_rate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            first = encode_test_video(root / "source.mp4", seconds=seconds, height=height, gop=60)
            (root / "videos").mkdir()
            rows = []
            for number in range(videos):
                copy = root / "videos" / f"video{number:05d}.mp4"
                shutil.copyfile(first, copy)
                rows.append(f"videos/{copy.name},{'ab'[number % 2]}")
            (root / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
            (root / "classes.txt").write_text("a\nb\n")
            write_shards(root / "train.csv", root / "shards", shard_size="256MB", workers=1, progress=False)
            manifest = read_manifest(root / "train.csv")
            files = VideoClipDataset(manifest, train=True, **options)
            stream = ShardStream(root / "shards", "train", **options)
            every_file = sorted((root / "videos").iterdir()) + sorted((root / "shards").glob("*.tar"))
            result = {}
            for name, run in (("files", lambda epoch: _files_pass(files, epoch)),
                              ("shards", lambda epoch: _stream_pass(stream, epoch))):
                warm, cold = [], []
                run(0)  # warm-up: libraries, page cache
                for repeat in range(repeats):
                    warm.append(run(repeat + 1))
                    _drop_from_cache(every_file)
                    cold.append(run(repeat + 1))
                result[name] = {"warm_clips_per_s": round(float(np.median(warm)), 2),
                                "cold_clips_per_s": round(float(np.median(cold)), 2)}
            size = first.stat().st_size
    finally:
        torch.set_num_threads(threads)
    return {"rows": result, "settings": {"videos": videos, "video": f"{height}p H.264, {seconds} s, {size / 1e3:.0f} kB",
                                         "clip": f"{num_frames} frames every {sampling_rate}, {crop_size} px crop",
                                         "workers": 1, "threads": 1, "repeats": repeats,
                                         "cold": "posix_fadvise(DONTNEED) on every video and shard before the pass"}}


def _files_pass(dataset: VideoClipDataset, epoch: int) -> float:
    dataset.set_epoch(epoch)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch)).tolist()
    started = time.perf_counter()
    for item in order:
        dataset[item]
    return len(order) / (time.perf_counter() - started)


def _stream_pass(stream: ShardStream, epoch: int) -> float:
    stream.set_epoch(epoch)
    started = time.perf_counter()
    count = sum(1 for _ in stream)
    return count / (time.perf_counter() - started)


def _drop_from_cache(paths) -> None:
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
