"""``VideoClipDataset``: clips for training and the multi-view test protocol, robust to bad videos.

Bad videos never stop a run by themselves. A video that is missing, unreadable (damaged,
truncated), empty or shorter than the clip is logged once (path and reason) and flagged; in
training its place is taken by another video, in testing it is left out (evaluation reports it,
never scores a stand-in). Each item says how many bad videos were skipped to produce it (``item["bad"]``),
so a trainer summing that field over an epoch's batches gets the epoch's count whatever the
number of DataLoader workers. The flags live in shared memory, so ``dataset.bad_videos`` in the
main process lists every bad video the workers met, and the limit ``max_bad_fraction`` applies
to all of them together: above it the dataset raises ``BadVideosError`` naming the files (a
broken dataset rather than a few broken files).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import TsfError
from .manifest import Manifest, VideoSample
from .readers import READERS, VideoReader, VideoReadError, open_video
from .sampling import COVER, SAMPLINGS, clip_indices, covering_clips
from .transforms import horizontal_flip, random_crop, short_side_scale, spatial_crop

log = logging.getLogger("tsf.data")

# reason kinds, stored as small codes in the shared flags (0: not known to be bad)
BAD_KINDS = ("missing", "unreadable", "zero_frames", "too_short")


class BadVideosError(TsfError, RuntimeError):
    """More videos failed than the dataset's ``max_bad_fraction`` allows; the message names them."""


class VideoClipDataset(Dataset):
    """Clips of the videos of a manifest, uint8 ``(3, T, H, W)``.

    Training (``train=True``): one clip per video, sampled at random (dense: random window;
    uniform: random frame per segment), short side scaled to a random length in
    ``short_side_range``, random square crop, optional horizontal flip. Testing: ``num_temporal_clips
    x num_spatial_crops`` deterministic views per video, short side scaled to ``crop_size``, and the
    dataset's length is the sum of the videos' views (``views_per_video``); with
    ``num_temporal_clips="cover"`` each video gets as many clips as cover it (long videos), so the
    count differs between videos.

    Items are ``{"clip": uint8 (3, T, H, W), "label": int, "index": int, "view": int, "bad": int}``:
    ``index`` is the manifest row the clip comes from (evaluation averages a video's views by it),
    ``view = temporal_clip * num_spatial_crops + spatial_crop``, ``bad`` the number of bad videos
    skipped to produce the item (0 almost always). Training replaces a bad video by another one
    (the replacement's index and label are given); testing returns a blank stand-in with
    ``bad=1`` and the bad video's own index, which evaluation leaves out and reports.

    Random choices come from a generator seeded with ``(seed, epoch, item)``: call
    ``set_epoch(epoch)`` before each epoch's DataLoader iterator is created (the trainer does;
    persistent workers would keep the epoch they started with).

    Args:
        manifest: the videos (``read_manifest``).
        num_frames: frames per clip.
        sampling_rate: dense sampling: video frames per clip frame (official Kinetics: 32 at
            ``target_fps=30``; the synthetic data: 1).
        sampling: ``"dense"`` or ``"uniform"``.
        train: training augmentation and one random clip per video, or the test views.
        crop_size: side of the square clip.
        short_side_range: training scale jitter ``(min, max)`` of the shorter side; default
            ``crop_size x (256, 320) / 224``, the official ratio.
        inverse_scale_jitter: draw the shorter side as ``1 / uniform(1/max, 1/min)`` instead of
            uniformly in ``short_side_range`` (the official SSv2 configs' ``INV_UNIFORM_SAMPLE``).
        hflip: random horizontal flips in training (off for direction-sensitive labels such as SSv2).
        num_temporal_clips: test views along time; ``"cover"`` (dense sampling only): per video,
            as many clips as cover it (``sampling.covering_clips``; each video is opened once here
            to count its frames).
        num_spatial_crops: test crops along the longer side (1: centre; 3: the official three).
        reader: ``"auto"``, ``"decord"``, ``"torchcodec"`` or ``"pyav"``.
        max_bad_fraction: stop with ``BadVideosError`` once more than this share of the
            manifest's videos turned out bad (1.0: never).
        seed: seeds the random choices (with the epoch and the item).
        target_fps: dense sampling counts ``sampling_rate`` at this frame rate, converting from
            each video's own (the official recipes use 30); None: in the video's own frames.
    """

    def __init__(self, manifest: Manifest, num_frames: int = 8, sampling_rate: float = 1, sampling: str = "dense",
                 train: bool = True, crop_size: int = 224, short_side_range: Optional[Sequence[int]] = None,
                 inverse_scale_jitter: bool = False, hflip: bool = False, num_temporal_clips: Union[int, str] = 1,
                 num_spatial_crops: int = 1, reader: str = "auto", max_bad_fraction: float = 0.05, seed: int = 0,
                 target_fps: Optional[float] = None):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r}: use one of {', '.join(SAMPLINGS)}")
        if reader not in READERS:
            raise ValueError(f"reader={reader!r}: use one of {', '.join(READERS)}")
        cover = num_temporal_clips == COVER
        if cover and (train or sampling != "dense"):
            raise ValueError(f"num_temporal_clips={COVER!r} places test clips of dense sampling; use it with "
                             f"train=False and sampling='dense' (uniform sampling already spans the whole video)")
        counts = [("num_frames", num_frames), ("crop_size", crop_size), ("num_spatial_crops", num_spatial_crops)]
        for name, value in counts + ([] if cover else [("num_temporal_clips", num_temporal_clips)]):
            if isinstance(value, str) or int(value) != value or value < 1:
                alternative = f" (or {COVER!r})" if name == "num_temporal_clips" else ""
                raise ValueError(f"{name}={value!r}: use a positive integer{alternative}")
        if sampling_rate <= 0:
            raise ValueError(f"sampling_rate={sampling_rate}: use a positive number of frames")
        if train and (num_temporal_clips != 1 or num_spatial_crops != 1):
            raise ValueError("num_temporal_clips and num_spatial_crops are test views; use 1 with train=True")
        if short_side_range is None:
            short_side_range = (round(crop_size * 256 / 224), round(crop_size * 320 / 224))
        if not crop_size <= short_side_range[0] <= short_side_range[1]:
            raise ValueError(f"short_side_range={tuple(short_side_range)}: use (min, max) with "
                             f"crop_size={crop_size} <= min <= max")
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction={max_bad_fraction}: use a fraction in [0, 1]")
        if seed < 0:
            raise ValueError(f"seed={seed}: use a non-negative integer")
        if not manifest.samples:
            raise ValueError(f"{manifest.source} lists no videos")
        self.manifest = manifest
        self.num_frames, self.sampling_rate, self.sampling = int(num_frames), sampling_rate, sampling
        self.train, self.crop_size, self.short_side_range = train, int(crop_size), tuple(short_side_range)
        self.inverse_scale_jitter = inverse_scale_jitter
        self.hflip, self.reader, self.seed, self.target_fps = hflip, reader, int(seed), target_fps
        self.num_temporal_clips = COVER if cover else int(num_temporal_clips)
        self.num_spatial_crops = int(num_spatial_crops)
        self.max_bad_fraction = max_bad_fraction
        self.epoch = 0
        # one byte per video, in shared memory so DataLoader workers (fork or spawn) and the
        # main process see the same flags: 0 = not known bad, else 1 + index into BAD_KINDS
        self._bad_flags = torch.zeros(len(manifest.samples), dtype=torch.uint8).share_memory_()
        self._reasons: dict[int, str] = {}  # this process's detailed reasons, for messages
        # temporal clips of each video, and the first item of each video (item -> video lookup)
        self.clips_per_video = (np.array([self._count_covering_clips(s) for s in manifest.samples], dtype=np.int64)
                                if cover else np.full(len(manifest.samples), self.num_temporal_clips, dtype=np.int64))
        self._first_item = np.concatenate([[0], np.cumsum(self.views_per_video)])

    @property
    def views_per_video(self) -> np.ndarray:
        """Items of each video: its temporal clips x ``num_spatial_crops`` (1 in training)."""
        return self.clips_per_video * self.num_spatial_crops

    def _count_covering_clips(self, sample: VideoSample) -> int:
        """``covering_clips`` of one video; 1 for a video that cannot be opened (it is flagged
        and replaced when its item is loaded, as in any mode)."""
        try:
            with self.open_video(sample) as video:
                _, length = usable_frames(video, sample, self.num_frames)
                return covering_clips(length, self.num_frames, self._rate(video))
        except VideoReadError:
            return 1

    def _rate(self, video: VideoReader) -> float:
        """Video frames per clip frame in this video: ``sampling_rate`` converted to its frame rate."""
        if self.target_fps and video.fps:
            return self.sampling_rate * video.fps / self.target_fps
        return self.sampling_rate

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def __len__(self) -> int:
        return int(self._first_item[-1])

    def set_epoch(self, epoch: int) -> None:
        """Use the random choices of ``epoch`` (reproducible and resumable runs)."""
        self.epoch = int(epoch)

    @property
    def bad_videos(self) -> dict[str, str]:
        """Bad videos met so far by this process and its DataLoader workers: ``{path: reason}``
        (the full reason where this process met the video, else its kind)."""
        flagged = torch.nonzero(self._bad_flags).flatten().tolist()
        return {self.manifest.samples[i].path: self._reasons.get(i, BAD_KINDS[int(self._bad_flags[i]) - 1])
                for i in flagged}

    @property
    def bad_count(self) -> int:
        """How many of the manifest's videos are known to be bad."""
        return int(torch.count_nonzero(self._bad_flags))

    def __getitem__(self, item: int) -> dict:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} is outside 0..{len(self) - 1}")
        video = int(np.searchsorted(self._first_item, item, side="right")) - 1
        view = item - int(self._first_item[video])
        temporal, spatial = divmod(view, self.num_spatial_crops)
        rng = np.random.default_rng([self.seed, self.epoch, item] if self.train else [self.seed, video])
        skipped = 0
        while True:
            if not self._bad_flags[video]:
                try:
                    clip = self.load_clip(self.manifest.samples[video], temporal, spatial, rng)
                    return {"clip": clip, "label": self.manifest.samples[video].label, "index": video,
                            "view": view, "bad": skipped}
                except VideoReadError as error:
                    self._flag(video, error)
            if not self.train:  # testing scores each video by itself: a bad one is marked, never replaced
                blank = torch.zeros(3, self.num_frames, self.crop_size, self.crop_size, dtype=torch.uint8)
                return {"clip": blank, "label": self.manifest.samples[video].label, "index": video, "view": view,
                        "bad": 1}
            skipped += 1
            candidates = torch.nonzero(self._bad_flags == 0).flatten()
            if len(candidates) == 0:
                raise BadVideosError(self._bad_message("no video of the manifest can be read"))
            video = int(candidates[rng.integers(len(candidates))])

    def open_video(self, sample: VideoSample) -> VideoReader:
        """The opened video of ``sample`` (with the dataset's reader)."""
        return open_video(sample.path, self.reader, frames=sample.frames)

    def load_clip(self, sample: VideoSample, temporal: int = 0, spatial: int = 0,
                  rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        """One clip of ``sample``: uint8 ``(3, T, crop, crop)``.

        Args:
            sample: the video.
            temporal: test view along time (ignored in training).
            spatial: test crop (ignored in training).
            rng: the random choices of training.

        Raises:
            VideoReadError: the video cannot give the clip (missing, unreadable, too short).
        """
        with self.open_video(sample) as video:
            frames = video.read(self._indices(video, sample, temporal, rng).tolist())
        clip = torch.from_numpy(frames).permute(3, 0, 1, 2)  # (T, H, W, 3) -> (3, T, H, W)
        if self.train:
            low, high = self.short_side_range
            if self.inverse_scale_jitter:  # as the official INV_UNIFORM_SAMPLE: smaller sizes slightly favoured
                side = int(round(1.0 / rng.uniform(1.0 / high, 1.0 / low)))
            else:
                side = int(rng.integers(low, high + 1))
            clip = short_side_scale(clip, side)
            clip = random_crop(clip, self.crop_size, rng)
            if self.hflip and rng.random() < 0.5:
                clip = horizontal_flip(clip)
        else:
            clip = spatial_crop(short_side_scale(clip, self.crop_size), self.crop_size, spatial, self.num_spatial_crops)
        return clip.contiguous()

    def view_indices(self, sample: VideoSample, temporal: int = 0,
                     rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The frame indices ``load_clip`` reads for ``sample``: test view ``temporal``, or a
        training draw from ``rng`` (e.g. to show the frames behind a prediction)."""
        with self.open_video(sample) as video:
            return self._indices(video, sample, temporal, rng)

    def _indices(self, video: VideoReader, sample: VideoSample, temporal: int,
                 rng: Optional[np.random.Generator]) -> np.ndarray:
        first, length = usable_frames(video, sample, self.num_frames)
        rate = self._rate(video)
        num_clips = self.num_temporal_clips
        if num_clips == COVER:
            # this video's own count: a replacement for a bad video may have fewer clips
            num_clips = covering_clips(length, self.num_frames, rate)
            temporal = min(temporal, num_clips - 1)
        return first + clip_indices(self.sampling, length, self.num_frames, rate,
                                    rng if self.train else None, temporal, num_clips)

    def _flag(self, video: int, error: VideoReadError) -> None:
        if not self._bad_flags[video]:
            log.warning("bad video %s: %s (%s)", "skipped and replaced" if self.train else "left out",
                        error.path, error.reason)
        self._bad_flags[video] = 1 + BAD_KINDS.index(error.kind)
        self._reasons[video] = error.reason
        if self.bad_count > self.max_bad_fraction * len(self.manifest.samples):
            raise BadVideosError(self._bad_message(
                f"{self.bad_count} of the {len(self.manifest.samples)} videos are bad, more than "
                f"max_bad_fraction={self.max_bad_fraction} allows"))

    def _bad_message(self, what: str) -> str:
        listed = [f"  {path}: {reason}" for path, reason in list(self.bad_videos.items())[:20]]
        more = f"\n  ... and {self.bad_count - len(listed)} more" if self.bad_count > len(listed) else ""
        if self.manifest.format == "shards":
            return (f"{self.manifest.source}: {what}:\n" + "\n".join(listed) + more +
                    "\nWrite the shards again (python -m tsf data shard checks every video and leaves the bad ones "
                    "out), or raise max_bad_fraction (--max-bad-fraction) if these losses are acceptable")
        source = Path(str(self.manifest.source))
        clean = source.with_name(f"{source.stem}.clean{source.suffix or '.csv'}")
        return (f"{source}: {what}:\n" + "\n".join(listed) + more +
                f"\nRun `python -m tsf data check {source} --write-clean {clean}` to list the good rows and use that "
                f"file in place of {source.name} (keep the original), or raise max_bad_fraction "
                f"(--max-bad-fraction) if these losses are acceptable")


def usable_frames(video: VideoReader, sample: VideoSample, num_frames: int) -> tuple[int, int]:
    """``(first frame, number of frames)`` of ``video`` within the sample's start/end seconds.

    Args:
        video: the opened video.
        sample: its manifest row.
        num_frames: frames a clip needs.

    Raises:
        VideoReadError: no frames (``zero_frames``) or fewer than ``num_frames`` (``too_short``).
    """
    first, length = 0, video.num_frames
    if sample.start is not None or sample.end is not None:
        times = video.frame_times()
        first = int(np.searchsorted(times, sample.start or 0.0))
        stop = int(np.searchsorted(times, sample.end)) if sample.end is not None else len(times)
        length = max(stop - first, 0)
    if length == 0:
        window = f" between {sample.start} s and {sample.end} s" if video.num_frames else ""
        raise VideoReadError(sample.path, "zero_frames", f"no frames{window}")
    if length < num_frames:
        raise VideoReadError(sample.path, "too_short", f"{length} frame{'s' * (length != 1)}, the clip needs {num_frames}")
    return first, length
