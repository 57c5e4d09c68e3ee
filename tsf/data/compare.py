"""The decoder-consistency check behind ``python -m tsf data readers VIDEO...``: every reader
available here against PyAV (the reference, always installed), frame by frame, and how fast each
one loads a clip."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from .readers import BACKENDS, PathLike, ReaderUnavailable, VideoReadError, available_readers, open_video, torchcodec_problem

REFERENCE = "pyav"


def compare_readers(videos: Sequence[PathLike], readers: Optional[Sequence[str]] = None, max_frames: int = 64,
                    clip_frames: int = 8, repeats: int = 3) -> list[dict]:
    """Compare the readers on each video.

    Args:
        videos: video files.
        readers: the readers to compare (default: every one available here); PyAV is always the reference.
        max_frames: frames compared per video: all of them when the video has no more, else this
            many spread evenly from the first to the last.
        clip_frames: frames of the timed clip (spread evenly over the video, as uniform sampling does).
        repeats: timed openings and clip reads per reader; the median is reported.

    Returns:
        One dict per video: ``path``, ``frames_compared``, ``error`` (None, or why the reference
        cannot read the file: the readers' rows then hold only their own ``error``), and ``readers``: ``{name: {"num_frames",
        "max_abs_diff", "frames_differing", "worst_frame", "clip_ms", "error"}}`` (``error`` is
        None, or why that reader failed on the file; the reference's own row has differences 0).
    """
    names = list(readers) if readers is not None else available_readers()
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise ValueError(f"readers {unknown}: use some of {', '.join(BACKENDS)}")
    missing = [name for name in names if name not in available_readers()]
    if missing:
        why = {"decord": "decord is not installed (pip install decord)", "torchcodec": torchcodec_problem()}
        raise ReaderUnavailable("; ".join(f"{name}: {why[name]}" for name in missing))
    names = [REFERENCE] + [name for name in names if name != REFERENCE]
    return [_compare_one(str(video), names, max_frames, clip_frames, repeats) for video in videos]


def _compare_one(path: str, names: list[str], max_frames: int, clip_frames: int, repeats: int) -> dict:
    try:
        with open_video(path, REFERENCE) as video:
            count = video.num_frames
            indices = _spread(count, max_frames)
            reference = video.read(indices)
    except VideoReadError as error:  # a bad file: say whether each reader refuses it too
        return {"path": path, "frames_compared": 0, "reference": REFERENCE, "error": error.reason,
                "readers": {name: {"error": _refusal(path, name)} for name in names if name != REFERENCE}}
    rows = {}
    for name in names:
        row: dict = {"num_frames": None, "max_abs_diff": None, "frames_differing": None, "worst_frame": None,
                     "clip_ms": None, "error": None}
        try:
            with open_video(path, name) as video:
                row["num_frames"] = video.num_frames
                frames = video.read(indices) if video.num_frames == count else None
            if frames is None:
                row["error"] = f"counts {row['num_frames']} frames where {REFERENCE} counts {count}"
            elif frames.shape != reference.shape:
                row["error"] = f"frames of shape {frames.shape[1:]} where {REFERENCE} gives {reference.shape[1:]}"
            else:
                difference = np.abs(frames.astype(np.int16) - reference.astype(np.int16)).reshape(len(indices), -1).max(axis=1)
                row.update(max_abs_diff=int(difference.max(initial=0)), frames_differing=int((difference > 0).sum()),
                           worst_frame=int(indices[int(difference.argmax())]) if len(difference) else None)
            row["clip_ms"] = round(_clip_ms(path, name, _spread(count, clip_frames), repeats), 2)
        except VideoReadError as error:
            row["error"] = error.reason
        rows[name] = row
    return {"path": path, "frames_compared": len(indices), "reference": REFERENCE, "error": None, "readers": rows}


def _refusal(path: str, name: str) -> Optional[str]:
    try:
        with open_video(path, name) as video:
            video.read([video.num_frames - 1] if video.num_frames else [])
    except VideoReadError as error:
        return error.reason
    return None


def _spread(count: int, wanted: int) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return np.linspace(0, count - 1, wanted).round().astype(int).tolist()


def _clip_ms(path: str, name: str, indices: list[int], repeats: int) -> float:
    """Median milliseconds to open the video and read one clip, after one warm-up (library loading, page cache)."""
    times = []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        with open_video(path, name) as video:
            video.read(indices)
        if repeat:
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))
