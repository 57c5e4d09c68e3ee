"""Which frames of a video make a clip.

- ``dense``: ``num_frames`` frames spread over a window of ``num_frames x sampling_rate``
  frames (the official Kinetics sampling). Training draws the window's start at random;
  testing places ``num_temporal_clips`` windows evenly from the start to the end of the video
  (one window: the centre).
- ``uniform``: the video is cut into ``num_frames`` equal segments and one frame is taken from
  each (TSN, the official SSv2 sampling). Training takes a random frame of each segment;
  testing takes evenly spaced offsets within the segments (one view: the middle).

Indices are relative to the first usable frame; callers add the offset of a ``start`` time.

Long videos (the paper's HowTo100M protocol): ``num_temporal_clips=COVER`` asks for as many
dense clips as cover the whole video, ``covering_clips`` of them, spread as above.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

SAMPLINGS = ("dense", "uniform")
COVER = "cover"  # num_temporal_clips: as many clips as cover each video (covering_clips)


def dense_indices(length: int, num_frames: int, sampling_rate: float, rng: Optional[np.random.Generator] = None,
                  clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Frame indices of a dense clip, as the official loader computes them.

    The window covers ``num_frames x sampling_rate`` frames; its ``num_frames`` samples are
    spaced evenly from its first to its last frame. A video shorter than the window gives the
    whole video, its last frame repeated where the window runs past it.

    Args:
        length: frames available.
        num_frames: frames in the clip.
        sampling_rate: frames of the video per clip frame (may be fractional after frame-rate conversion).
        rng: draws the window's start (training); None places it by ``clip`` (testing).
        clip: which of the ``num_clips`` evenly spaced windows (testing).
        num_clips: windows per video in testing.
    """
    window = num_frames * sampling_rate
    room = max(length - window, 0.0)
    if rng is not None:
        start = rng.uniform(0, room)
    elif num_clips == 1:
        start = room / 2
    else:
        start = room * clip / (num_clips - 1)
    positions = np.linspace(start, start + window - 1, num_frames) if num_frames > 1 else np.array([start])
    return np.clip(np.floor(positions).astype(np.int64), 0, length - 1)  # truncation, as the official .long()


def covering_clips(length: int, num_frames: int, sampling_rate: float) -> int:
    """How many dense clips cover a video of ``length`` frames: its length over one clip's span
    (``num_frames x sampling_rate`` frames), rounded up; at least 1. Placed by ``dense_indices``
    with ``num_clips`` of this, consecutive clips start at most one span apart, so together they
    see every part of the video (the paper, HowTo100M: "as many non-overlapping temporal clips as
    needed to cover the full temporal extent of a video").

    Args:
        length: frames available.
        num_frames: frames in the clip.
        sampling_rate: frames of the video per clip frame (after frame-rate conversion).
    """
    return max(1, math.ceil(length / (num_frames * sampling_rate)))


def uniform_indices(length: int, num_frames: int, rng: Optional[np.random.Generator] = None,
                    clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Frame indices of a segment-sampled clip (the official SSv2 ``get_seq_frames``).

    Args:
        length: frames available.
        num_frames: frames in the clip (= segments).
        rng: picks a random frame in each segment (training); None takes offset ``(clip + 0.5) /
            num_clips`` of each segment (testing; one clip: the middle, as the official code).
        clip: which of the ``num_clips`` offsets (testing).
        num_clips: views per video in testing.
    """
    segment = (length - 1) / num_frames
    starts = np.round(segment * np.arange(num_frames)).astype(np.int64)
    ends = np.round(segment * np.arange(1, num_frames + 1)).astype(np.int64)
    if rng is not None:
        return rng.integers(starts, ends + 1)
    return starts + ((ends - starts) * (clip + 0.5) / num_clips).astype(np.int64)


def clip_indices(sampling: str, length: int, num_frames: int, sampling_rate: float = 1.0,
                 rng: Optional[np.random.Generator] = None, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """``dense_indices`` or ``uniform_indices`` by name (``sampling_rate`` is used by dense only)."""
    if sampling == "dense":
        return dense_indices(length, num_frames, sampling_rate, rng, clip, num_clips)
    if sampling == "uniform":
        return uniform_indices(length, num_frames, rng, clip, num_clips)
    raise ValueError(f"sampling={sampling!r}: use one of {', '.join(SAMPLINGS)}")


def crop_offsets(size: int, crop: int, num_crops: int) -> list[int]:
    """Start of each of ``num_crops`` crops along one side: the centre for one crop, else evenly
    spaced from one end to the other (3: the official left/centre/right or top/centre/bottom).

    Args:
        size: length of the side.
        crop: crop length.
        num_crops: crops along the side.
    """
    room = size - crop
    if num_crops == 1:
        return [room // 2]
    return [round(room * i / (num_crops - 1)) for i in range(num_crops)]
