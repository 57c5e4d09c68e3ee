"""What every reader shares: the error it raises, what it learns on opening, the interface."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from ...errors import ConfigError, DataError

PathLike = Union[str, os.PathLike]


class VideoReadError(DataError):
    """A video that cannot give the frames asked of it.

    Args:
        path: the file (or frame folder).
        kind: ``"missing"``, ``"unreadable"``, ``"zero_frames"`` or ``"too_short"``; the
            pre-flight report and the dataset's bad-video count group by it.
        reason: what went wrong, in words.
    """

    def __init__(self, path: PathLike, kind: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.kind, self.reason = str(path), kind, reason


class ReaderUnavailable(ConfigError, ImportError):
    """A reader asked for by name that is not installed here (the message says how to install it);
    an ``ImportError`` too, and a ``ConfigError``, so that the command line says it in one line."""


@dataclass(frozen=True)
class VideoInfo:
    """What a reader learns when it opens a video.

    Args:
        num_frames: frames in presentation order (from the packet index, not the header).
        fps: average frames per second (None for a folder of frames).
        width: frame width in pixels.
        height: frame height in pixels.
    """

    num_frames: int
    fps: Optional[float]
    width: int
    height: int


class VideoReader:
    """The interface every reader implements; use it as a context manager."""

    path: str
    info: VideoInfo

    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    @property
    def fps(self) -> Optional[float]:
        return self.info.fps

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as uint8 RGB ``(T, H, W, 3)``."""
        raise NotImplementedError

    def frame_times(self) -> np.ndarray:
        """Presentation time of every frame in seconds from the first, shape ``(num_frames,)``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file; the reader cannot be used afterwards."""

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        wanted = [int(i) for i in indices]
        outside = [i for i in wanted if not 0 <= i < self.num_frames]
        if outside:
            raise IndexError(f"{self.path}: frame indices {outside[:5]} are outside 0..{self.num_frames - 1}")
        return wanted


def check_file(path: str) -> None:
    """A missing or empty file, said in words before any decoder sees it."""
    if not os.path.exists(path):
        raise VideoReadError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "unreadable", "empty file (0 bytes)")


def short_message(error: BaseException) -> str:
    """The decoder's message without decord's ``[time] source.cc:line:`` prefix and stack trace,
    or torchcodec's ``function, /path/source.cpp:line,`` prefix."""
    if getattr(error, "strerror", None):  # FFmpeg errors: the message without errno and file name
        return str(error.strerror)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = re.sub(r"^\[[\d:]+\] \S+:\d+: (Check failed: )?", "", lines[0])
    return re.sub(r"^\w+, \S+\.(cpp|cc|h):\d+, ", "", line)
