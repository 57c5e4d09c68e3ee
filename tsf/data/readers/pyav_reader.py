"""PyAV (FFmpeg): the reader that always works, with an exact frame index built from the packets."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .base import PathLike, VideoInfo, VideoReader, VideoReadError, check_file, short_message


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
        check_file(self.path)
        try:
            self._container = av.open(self.path)
        except av.error.FFmpegError as error:
            raise VideoReadError(self.path, "unreadable", f"not a video FFmpeg can open ({short_message(error)})") from error
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
            raise VideoReadError(self.path, "unreadable", f"its packets cannot be read ({short_message(error)})") from error
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
        detail = f": {short_message(error)}" if error is not None else ""
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
