"""decord: the fastest CPU reader where it installs (no wheels for ARM macOS or aarch64 Linux;
no release since 2021; its bundled FFmpeg has no AV1 decoder)."""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np

from .base import PathLike, VideoInfo, VideoReader, VideoReadError, check_file, short_message


@functools.cache
def decord_available() -> bool:
    """Whether decord imports (it has no wheels for some platforms, e.g. ARM macOS)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


class DecordReader(VideoReader):
    """decord's ``VideoReader`` on one thread.

    Args:
        path: the video file.
    """

    def __init__(self, path: PathLike):
        import decord

        self.path = str(path)
        check_file(self.path)
        try:
            self._video = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(self.path, "unreadable", f"decord cannot open it ({short_message(error)})") from error
        self._info: Optional[VideoInfo] = None

    @property
    def num_frames(self) -> int:
        return len(self._video)

    @property
    def fps(self) -> float:
        return float(self._video.get_avg_fps())

    @property
    def info(self) -> VideoInfo:
        # decord tells the frame size only by decoding a frame: done on demand, not on every open
        if self._info is None:
            height, width = self.read([0]).shape[1:3] if self.num_frames else (0, 0)
            self._info = VideoInfo(self.num_frames, self.fps, width, height)
        return self._info

    def read(self, indices: Sequence[int]) -> np.ndarray:
        import decord

        wanted = self._check_indices(indices)
        if not wanted:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        try:
            return self._video.get_batch(wanted).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(self.path, "unreadable",
                                 f"decord cannot decode frames {wanted} ({short_message(error)})") from error

    def frame_times(self) -> np.ndarray:
        starts = self._video.get_frame_timestamp(np.arange(self.num_frames))[:, 0]
        return starts - starts[0] if len(starts) else starts

    def close(self) -> None:
        self._video = None
