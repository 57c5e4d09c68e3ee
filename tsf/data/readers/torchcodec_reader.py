"""torchcodec: PyTorch's own video decoder (what torchvision's video reading became), on the CPU
and, with a CUDA build and an NVIDIA GPU, on NVDEC.

It needs the FFmpeg shared libraries (4 to 7) of the system: on Debian 12 ``apt-get install
libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8``.
Its exact seek mode scans the packets on opening, so frame ``i`` is the ``i``-th frame in
presentation order, the same frame decord and PyAV return.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np

from .base import PathLike, ReaderUnavailable, VideoInfo, VideoReader, VideoReadError, check_file, short_message
from .pyav_reader import PyAVReader


@functools.cache
def torchcodec_problem() -> Optional[str]:
    """Why torchcodec cannot be used here (not installed, or its FFmpeg libraries missing); None when it can."""
    try:
        import torchcodec.decoders  # noqa: F401  (loads libtorchcodec, which loads FFmpeg's libraries)
    except ImportError as error:
        if getattr(error, "name", None) == "torchcodec":
            return "torchcodec is not installed (pip install torchcodec)"
        return f"torchcodec does not load ({short_message(error)})"
    except (RuntimeError, OSError) as error:  # raised when no libavcodec of a supported FFmpeg is found
        return ("torchcodec cannot load FFmpeg's shared libraries (Debian: apt-get install libavcodec59 libavformat59 "
                f"libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8): {short_message(error)}")
    return None


def torchcodec_available() -> bool:
    """Whether torchcodec imports and finds the FFmpeg libraries it needs."""
    return torchcodec_problem() is None


class TorchCodecReader(VideoReader):
    """torchcodec's ``VideoDecoder`` in exact seek mode, on one FFmpeg thread.

    Args:
        path: the video file.
        device: ``"cpu"`` (default) or a CUDA device (``"cuda"``, ``"cuda:1"``): NVDEC decodes and
            :meth:`read_tensor` returns the frames on that device. (The CUDA path is not covered by
            the tests, which run on CPU machines.)
    """

    def __init__(self, path: PathLike, device: str = "cpu"):
        problem = torchcodec_problem()
        if problem is not None:
            raise ReaderUnavailable(f"reader='torchcodec' but {problem}; reader='auto' uses decord or PyAV, which give the same frames")
        from torchcodec.decoders import VideoDecoder

        self.path, self.device = str(path), str(device)
        check_file(self.path)
        try:
            self._decoder = VideoDecoder(self.path, dimension_order="NHWC", num_ffmpeg_threads=1, device=self.device,
                                         seek_mode="exact")
        except (RuntimeError, ValueError) as error:
            raise VideoReadError(self.path, "unreadable", f"not a video FFmpeg can open ({short_message(error)})") from error
        metadata = self._decoder.metadata
        fps = metadata.average_fps  # over first to last frame start: for a variable rate, a little above PyAV's
        self.info = VideoInfo(int(metadata.num_frames or 0), float(fps) if fps else None, int(metadata.width or 0),
                              int(metadata.height or 0))
        self._check_complete(metadata.num_frames_from_header)
        self._times: Optional[np.ndarray] = None

    def _check_complete(self, declared: Optional[int]) -> None:
        """The same test as PyAV's: a cut file whose index (at the front) lists more frames than its packets hold."""
        found = self.info.num_frames
        if declared and declared - found > max(2, declared // 100):
            fps = self.info.fps or 0.0
            seconds = f" ({found / fps:.1f} s of {declared / fps:.1f} s)" if fps else ""
            self.close()
            raise VideoReadError(self.path, "unreadable",
                                 f"truncated: its index lists {declared} frames but the file holds {found}{seconds}; "
                                 f"copy or download it again")

    def read_tensor(self, indices: Sequence[int]):
        """Frames ``indices`` as a uint8 torch tensor ``(T, H, W, 3)`` on the reader's device."""
        import torch

        wanted = self._check_indices(indices)
        if not wanted:
            return torch.zeros((0, self.info.height, self.info.width, 3), dtype=torch.uint8, device=self.device)
        unique = sorted(set(wanted))
        try:
            batch = self._decoder.get_frames_at(unique).data
        except (RuntimeError, IndexError) as error:
            raise VideoReadError(self.path, "unreadable",
                                 f"frames {unique} of the {self.num_frames} its index lists cannot be decoded "
                                 f"(truncated or damaged file): {short_message(error)}") from error
        position = {index: i for i, index in enumerate(unique)}
        return batch[[position[i] for i in wanted]]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.read_tensor(indices).cpu().numpy()

    def frame_times(self) -> np.ndarray:
        # torchcodec tells a frame's timestamp only by decoding it: the packet index (PyAV, no decoding) tells all
        if self._times is None:
            with PyAVReader(self.path) as index:
                self._times = index.frame_times()
        return self._times

    def close(self) -> None:
        self._decoder = None
