"""Video readers: decord (default) and PyAV (fallback), plus folders of extracted frames.

Every reader answers the same questions the same way: how many frames the video has, their
timestamps, and the frames at given indices as uint8 RGB ``(T, H, W, 3)``. Frame ``i`` is the
``i``-th frame in presentation order, counted from the container's packet index rather than its
header (headers over-report, variable-frame-rate files have no fixed step), so decord and PyAV
return identical frames for identical indices. Readers seek to the keyframe before the first
wanted frame and decode forward only as far as the last one; they decode on one thread, since
data-loading parallelism comes from DataLoader workers.

Readers are opened where they are used (inside ``Dataset.__getitem__``) and closed right after,
so datasets stay picklable and safe to use in worker processes.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import DataError

PathLike = Union[str, os.PathLike]
READERS = ("auto", "decord", "pyav")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
        _check_file(self.path)
        try:
            self._video = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoReadError(self.path, "unreadable", f"decord cannot open it ({_short_message(error)})") from error
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
                                 f"decord cannot decode frames {wanted} ({_short_message(error)})") from error

    def frame_times(self) -> np.ndarray:
        starts = self._video.get_frame_timestamp(np.arange(self.num_frames))[:, 0]
        return starts - starts[0] if len(starts) else starts

    def close(self) -> None:
        self._video = None


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) with an exact frame index built from the packets.

    Opening demuxes the video stream's packets (no decoding) to list every frame's presentation
    timestamp and the keyframes. ``read`` seeks to the last keyframe at or before each wanted
    frame that is not already ahead of the decoder, decodes forward, and converts to RGB only the
    frames asked for.

    Args:
        path: the video file.
    """

    def __init__(self, path: PathLike):
        import av

        self.path = str(path)
        _check_file(self.path)
        try:
            self._container = av.open(self.path)
        except av.error.FFmpegError as error:
            raise VideoReadError(self.path, "unreadable", f"not a video FFmpeg can open ({_short_message(error)})") from error
        try:
            if not self._container.streams.video:
                audio = " (it has only audio)" if self._container.streams.audio else ""
                raise VideoReadError(self.path, "unreadable", f"no video stream{audio}")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "NONE"
            self._stream.codec_context.thread_count = 1
            self._index_packets()
            context = self._stream.codec_context
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.info = VideoInfo(len(self._pts), float(rate) if rate else None, context.width, context.height)
            self._check_complete()
        except av.error.FFmpegError as error:
            self.close()
            raise VideoReadError(self.path, "unreadable", f"its packets cannot be read ({_short_message(error)})") from error
        except VideoReadError:
            self.close()
            raise
        # numbers the frames the decoder returns (by timestamp: decoding order differs with B-frames)
        self._frame_of_pts = {int(p): i for i, p in enumerate(self._pts)}

    def _index_packets(self) -> None:
        """Presentation timestamps of all frames (sorted) and which of them are keyframes."""
        timestamps, keyframes, missing_pts = [], [], False
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:  # the flush packet; frames an edit list drops
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            missing_pts |= stamp is None
            timestamps.append(stamp if stamp is not None else len(timestamps))
            keyframes.append(bool(packet.is_keyframe))
        order = np.argsort(np.asarray(timestamps, dtype=np.int64), kind="stable")
        self._pts = np.asarray(timestamps, dtype=np.int64)[order]
        self._keyframe = np.asarray(keyframes, dtype=bool)[order]
        self._sequential = missing_pts or len(np.unique(self._pts)) != len(self._pts)

    def _check_complete(self) -> None:
        """A file cut short (an interrupted copy or download) whose index, at the front (``faststart``
        mp4), still lists every frame: demuxing finds fewer packets than the index declares. A few
        frames fewer can be edit-list trimming, not damage."""
        declared, found = self._stream.frames, len(self._pts)
        if declared and declared - found > max(2, declared // 100):
            fps = self.info.fps or 0.0
            seconds = f" ({found / fps:.1f} s of {declared / fps:.1f} s)" if fps else ""
            raise VideoReadError(self.path, "unreadable",
                                 f"truncated: its index lists {declared} frames but the file holds {found}{seconds}; "
                                 f"copy or download it again")

    def frame_times(self) -> np.ndarray:
        if self._sequential:
            return np.arange(self.num_frames) / (self.info.fps or 1.0)
        return (self._pts - self._pts[0]) * float(self._stream.time_base) if len(self._pts) else np.zeros(0)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = self._check_indices(indices)
        if not wanted:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        frames = self._decode_sequentially(set(wanted)) if self._sequential else self._decode_by_seeking(set(wanted))
        return np.stack([frames[i] for i in wanted])

    def _decode_by_seeking(self, wanted: set[int]) -> dict[int, np.ndarray]:
        import av

        frames: dict[int, np.ndarray] = {}
        position = None  # index of the last frame the decoder produced; None: not decoding
        decoder = None
        for target in sorted(wanted):
            if target in frames:
                continue
            keyframe = self._keyframe_before(target)
            if position is None or target <= position or keyframe > position + 1:
                decoder = self._seek(keyframe)
            try:
                for frame in decoder:
                    position = self._frame_of_pts.get(frame.pts)
                    if position is None:  # a timestamp the index does not list: not one of its frames
                        continue
                    if position in wanted and position not in frames:
                        frames[position] = self._to_rgb(frame)
                    if position >= target:
                        break
            except av.error.FFmpegError as error:
                raise self._broken(target, error) from error
            if target not in frames:  # the seek landed late or the stream ended early
                return self._decode_sequentially(wanted)
        return frames

    def _keyframe_before(self, index: int) -> int:
        keyframes = np.flatnonzero(self._keyframe[: index + 1])
        return int(keyframes[-1]) if len(keyframes) else 0

    def _seek(self, keyframe: int):
        self._container.seek(int(self._pts[keyframe]), stream=self._stream, backward=True, any_frame=False)
        return self._container.decode(self._stream)

    def _decode_sequentially(self, wanted: set[int]) -> dict[int, np.ndarray]:
        """Decode from the start, numbering frames in output order: for streams without usable
        timestamps, and for files whose seeking does not land where the index says."""
        import av

        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        frames, last = {}, max(wanted)
        try:
            for position, frame in enumerate(self._container.decode(self._stream)):
                if position in wanted:
                    frames[position] = self._to_rgb(frame)
                if position >= last:
                    break
        except av.error.FFmpegError as error:
            raise self._broken(min(wanted - frames.keys()), error) from error
        missing = sorted(wanted - frames.keys())
        if missing:
            raise self._broken(missing[0], None)
        return frames

    def _broken(self, frame: int, error: Optional[Exception]) -> VideoReadError:
        detail = f": {_short_message(error)}" if error is not None else ""
        return VideoReadError(self.path, "unreadable",
                              f"frame {frame} of the {self.num_frames} its index lists cannot be decoded "
                              f"(truncated or damaged file){detail}")

    def _to_rgb(self, frame) -> np.ndarray:
        # frames whose size changes mid-stream are scaled to the first size, as decord does
        return frame.to_ndarray(format="rgb24", width=self.info.width, height=self.info.height)

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None


class ImageSequenceReader(VideoReader):
    """A video stored as image files, one per frame (the SSv2 frame lists, extracted frames).

    Args:
        frames: the image files in frame order.
        path: what the video is called in messages (its frame folder).
    """

    def __init__(self, frames: Sequence[PathLike], path: Optional[PathLike] = None):
        self._frames = [str(f) for f in frames]
        self.path = str(path if path is not None else (Path(self._frames[0]).parent if self._frames else "<no frames>"))
        if self._frames:
            first = self._load(0)
            height, width = first.shape[:2]
        else:
            height = width = 0
        self.info = VideoInfo(len(self._frames), None, width, height)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        file = self._frames[index]
        try:
            with Image.open(file) as image:
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError as error:
            raise VideoReadError(self.path, "missing", f"frame {index} ({file}) does not exist") from error
        except (UnidentifiedImageError, OSError) as error:
            raise VideoReadError(self.path, "unreadable", f"frame {index} ({file}) is not a readable image ({error})") from error
        return rgb

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = self._check_indices(indices)
        cache = {i: self._load(i) for i in set(wanted)}
        shapes = {a.shape for a in cache.values()}
        if len(shapes) > 1:
            raise VideoReadError(self.path, "unreadable", f"its frames have different sizes {sorted(shapes)}")
        return np.stack([cache[i] for i in wanted]) if wanted else np.zeros((0, self.info.height, self.info.width, 3), np.uint8)

    def frame_times(self) -> np.ndarray:
        raise VideoReadError(self.path, "unreadable", "a folder of frames has no timestamps; drop start/end for it")


class AutoReader(VideoReader):
    """decord when it is installed and reads the file, PyAV otherwise (also when decord fails
    on a later read: the frames then come from PyAV, and they are the same frames).

    Args:
        path: the video file.
    """

    def __init__(self, path: PathLike):
        self.path = str(path)
        _check_file(self.path)
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
            if not isinstance(self._reader, DecordReader):
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
        reader: ``"auto"`` (decord, falling back to PyAV), ``"decord"`` or ``"pyav"``; ignored for frames.
        frames: the image files of a frame-list video (SSv2); ``path`` then only names it.

    Returns:
        A reader; close it (or use ``with``) when done.

    Raises:
        VideoReadError: missing file, not a video, no video stream.
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
            raise ImportError("reader='decord' but decord is not installed (pip install decord); reader='auto' uses PyAV instead")
        return DecordReader(path)
    if reader == "pyav":
        return PyAVReader(path)
    return AutoReader(path)


def read_video_frames(path: PathLike, indices: Sequence[int], reader: str = "auto") -> np.ndarray:
    """Frames ``indices`` of a video as uint8 RGB ``(T, H, W, 3)``.

    Args:
        path: a video file or a folder of frames.
        indices: frame numbers (presentation order, from 0); any order, repeats allowed.
        reader: ``"auto"``, ``"decord"`` or ``"pyav"``.
    """
    with open_video(path, reader) as video:
        return video.read(indices)


def video_info(path: PathLike, reader: str = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video (reads the packet index, decodes one frame at most).

    Args:
        path: a video file or a folder of frames.
        reader: ``"auto"``, ``"decord"`` or ``"pyav"``.
    """
    with open_video(path, reader) as video:
        return video.info


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoReadError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "unreadable", "empty file (0 bytes)")


def _short_message(error: BaseException) -> str:
    """The decoder's message without decord's ``[time] source.cc:line:`` prefix and stack trace."""
    if getattr(error, "strerror", None):  # FFmpeg errors: the message without errno and file name
        return str(error.strerror)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Check failed: )?", "", lines[0])
