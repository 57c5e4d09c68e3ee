"""Video readers: decord, torchcodec and PyAV, plus folders of extracted frames.

Every reader answers the same questions the same way: how many frames the video has, their
timestamps, and the frames at given indices as uint8 RGB ``(T, H, W, 3)``. Frame ``i`` is the
``i``-th frame in presentation order, counted from the container's packet index rather than its
header (headers over-report, variable-frame-rate files have no fixed step), so the readers
return identical frames for identical indices (``tests/test_data_readers.py``; ``python -m tsf
data readers VIDEO`` checks a file of yours). Readers seek to the keyframe before the first
wanted frame and decode forward only as far as the last one; they decode on one thread, since
data-loading parallelism comes from DataLoader workers.

One module per backend: ``base`` (the interface, ``VideoReadError``, ``VideoInfo``),
``decord_reader``, ``torchcodec_reader``, ``pyav_reader``, ``images`` (frame folders); this
package picks among them (``open_video``, ``AutoReader``). Importing it loads no decoder and no torch.

Readers are opened where they are used (inside ``Dataset.__getitem__``) and closed right after,
so datasets stay picklable and safe to use in worker processes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .base import PathLike, ReaderUnavailable, VideoInfo, VideoReader, VideoReadError, check_file, short_message
from .decord_reader import DecordReader, decord_available
from .images import IMAGE_EXTENSIONS, ImageSequenceReader
from .pyav_reader import PyAVReader
from .torchcodec_reader import TorchCodecReader, torchcodec_available, torchcodec_problem

READERS = ("auto", "decord", "torchcodec", "pyav")
BACKENDS = ("decord", "pyav", "torchcodec")  # the readers of files; ``auto`` takes decord, else PyAV
__all__ = ["BACKENDS", "IMAGE_EXTENSIONS", "READERS", "AutoReader", "DecordReader", "ImageSequenceReader", "PathLike",
           "PyAVReader", "ReaderUnavailable", "TorchCodecReader", "VideoInfo", "VideoReadError", "VideoReader", "available_readers",
           "check_file", "decord_available", "open_video", "read_video_frames", "short_message",
           "torchcodec_available", "torchcodec_problem", "video_info"]


def available_readers() -> list[str]:
    """The file readers that work here (PyAV always; decord and torchcodec when installed)."""
    present = {"decord": decord_available(), "torchcodec": torchcodec_available(), "pyav": True}
    return [name for name in BACKENDS if present[name]]


class AutoReader(VideoReader):
    """decord when it is installed and reads the file, PyAV otherwise (also when decord fails
    on a later read: the frames then come from PyAV, and they are the same frames).

    torchcodec is not among the choices: it returns the same frames, but on the CPU it was the
    slowest of the three here (README, "Which reader"); name it (``reader="torchcodec"``) to use it.

    Args:
        path: the video file.
    """

    def __init__(self, path: PathLike):
        self.path = str(path)
        check_file(self.path)
        self._reader: VideoReader
        if decord_available():
            try:
                self._reader = DecordReader(path)
            except VideoReadError:
                self._reader = PyAVReader(path)  # its error names the problem better than decord's
        else:
            self._reader = PyAVReader(path)

    @property
    def num_frames(self) -> int:
        return self._reader.num_frames

    @property
    def fps(self) -> Optional[float]:
        return self._reader.fps

    @property
    def info(self) -> VideoInfo:
        return self._with_fallback(lambda reader: reader.info)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self._with_fallback(lambda reader: reader.read(indices))

    def frame_times(self) -> np.ndarray:
        return self._with_fallback(lambda reader: reader.frame_times())

    def _with_fallback(self, action):
        try:
            return action(self._reader)
        except VideoReadError:
            if isinstance(self._reader, PyAVReader):
                raise
            self._reader.close()
            self._reader = PyAVReader(self.path)
            return action(self._reader)

    def close(self) -> None:
        self._reader.close()


def open_video(path: PathLike, reader: str = "auto", frames: Optional[Sequence[PathLike]] = None) -> VideoReader:
    """Open a video for reading frames.

    Args:
        path: a video file, or a folder of image files (one per frame, in name order).
        reader: ``"auto"`` (decord, falling back to PyAV), ``"decord"``,
            ``"torchcodec"`` or ``"pyav"``; ignored for frames.
        frames: the image files of a frame-list video (SSv2); ``path`` then only names it.

    Returns:
        A reader; close it (or use ``with``) when done.

    Raises:
        VideoReadError: missing file, not a video, no video stream, truncated file.
        ReaderUnavailable: the reader named is not installed here (an ``ImportError``).
    """
    if reader not in READERS:
        raise ValueError(f"reader={reader!r}: use one of {', '.join(READERS)}")
    if frames is not None:
        return ImageSequenceReader(frames, path)
    if os.path.isdir(path):
        images = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise VideoReadError(path, "zero_frames", f"is a folder without image files ({', '.join(IMAGE_EXTENSIONS)})")
        return ImageSequenceReader(images, path)
    if reader == "decord":
        if not decord_available():
            raise ReaderUnavailable("reader='decord' but decord is not installed (pip install decord); reader='auto' uses "
                              "PyAV instead")
        return DecordReader(path)
    if reader == "torchcodec":
        return TorchCodecReader(path)
    if reader == "pyav":
        return PyAVReader(path)
    return AutoReader(path)


def read_video_frames(path: PathLike, indices: Sequence[int], reader: str = "auto") -> np.ndarray:
    """Frames ``indices`` of a video as uint8 RGB ``(T, H, W, 3)``.

    Args:
        path: a video file or a folder of frames.
        indices: frame numbers (presentation order, from 0); any order, repeats allowed.
        reader: ``"auto"``, ``"decord"``, ``"torchcodec"`` or ``"pyav"``.
    """
    with open_video(path, reader) as video:
        return video.read(indices)


def video_info(path: PathLike, reader: str = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video (reads the packet index, decodes one frame at most).

    Args:
        path: a video file or a folder of frames.
        reader: ``"auto"``, ``"decord"``, ``"torchcodec"`` or ``"pyav"``.
    """
    with open_video(path, reader) as video:
        return video.info
