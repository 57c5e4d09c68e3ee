"""Training clips streamed from WebDataset shards (``tsf data shard``): ``ShardStream``; and
``ShardVideos``, a split read by offset (validation, evaluation). Either reads a
``tsf.data.sources.ShardSource``: a shard folder, or a brace pattern of shard paths or URLs.

Each epoch has one plan, the same on every process: the shards in a seeded order (``seed +
epoch``) laid end to end, the samples in that sequence cut into equal contiguous ranges, one per
rank, and each rank's range into equal ranges, one per DataLoader worker. A range starts and ends
inside at most two partial shards, so a worker streams its shards front to back and skips at
most one shard's head; no sample is read by two workers, every rank gets the same number of
samples (``per_rank``: the tail of ``N / (ranks x workers x batch)`` is left out, a different
tail each epoch), and DDP never waits on an uneven rank. Within a worker a seeded buffer shuffle
(``buffer`` samples, seeded with ``(seed, epoch, rank, worker)``) mixes neighbours.

Clips are the file dataset's: the same sampling, scale jitter, crop and flip, drawn from a
generator seeded with ``(seed, epoch, manifest position)``, so a video gives the same clip in
the same epoch whether it comes from its file or from a shard. A sample that fails to decode is
counted in ``item["bad"]`` and replaced by another of the buffer, keeping the count per rank.

Resume is exact: ``set_epoch(epoch, start)`` with ``start`` the samples this rank has consumed
replays the plan and the buffer shuffle without decoding, skips what the DataLoader's workers
had delivered (batches are taken from the workers in turn, so the worker whose batch is next plays
the first worker's part), and continues with the next sample.
"""
from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .dataset import BadVideosError, VideoClipDataset
from .manifest import Manifest, VideoSample
from .readers import VideoReader, VideoReadError, open_video
from .sources import ShardSource


def epoch_plan(counts: Sequence[int], epoch: int, seed: int, slots: int, per_slot: int) -> list[list[tuple[int, int, int]]]:
    """Which samples each of ``slots`` (rank x worker, rank-major) reads in ``epoch``.

    Args:
        counts: samples in each shard.
        epoch: the epoch (the shard order is seeded with ``seed + epoch``).
        seed: the run's seed.
        slots: ranks x workers.
        per_slot: samples per slot (``sum(counts) // slots`` at most).

    Returns:
        Per slot, segments ``(shard, skip, take)``: read shard ``shard``, skip its first ``skip``
        samples, take the next ``take``.
    """
    order = torch.randperm(len(counts), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    starts = np.concatenate([[0], np.cumsum([counts[s] for s in order])])
    plans = []
    for slot in range(slots):
        low, high, segments = slot * per_slot, (slot + 1) * per_slot, []
        for position, shard in enumerate(order):
            first, last = max(low, starts[position]), min(high, starts[position + 1])
            if first < last:
                segments.append((shard, int(first - starts[position]), int(last - first)))
        plans.append(segments)
    return plans


class ShardStream(IterableDataset):
    """Training clips of one split of a shard folder, split across ranks and DataLoader workers.

    Args:
        folder: the shard folder (with ``shards.json``), or a brace pattern of shard paths or URLs
            (``tsf.data.sources``).
        split: which split (``"train"``).
        batch_size: clips per batch of the DataLoader that reads it (each worker gives whole batches).
        num_workers: that DataLoader's workers (0: the main process reads).
        rank: this process's rank (default: from the process group, else 0).
        world_size: processes (default: from the process group, else 1).
        seed: seeds the shard order, the buffer shuffles and the clips.
        buffer: samples held by the buffer shuffle of each worker.
        **clip_options: ``VideoClipDataset``'s training options (``num_frames``, ``sampling_rate``,
            ``sampling``, ``crop_size``, ``short_side_range``, ``inverse_scale_jitter``, ``hflip``,
            ``reader``, ``target_fps``, ``max_bad_fraction``).
    """

    def __init__(self, folder, split: str = "train", batch_size: int = 1, num_workers: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None, seed: int = 0, buffer: int = 64,
                 **clip_options):
        self.source = ShardSource(folder)
        self.folder = self.source.where
        if rank is None or world_size is None:
            initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if initialized else 0
            world_size = torch.distributed.get_world_size() if initialized else 1
        self.split, self.rank, self.world_size, self.seed = split, int(rank), int(world_size), int(seed)
        self.batch_size, self.num_workers, self.buffer = int(batch_size), int(num_workers), max(1, int(buffer))
        self.shards = self.source.shards(split)
        self.classes = self.source.classes
        self.total = sum(s["samples"] for s in self.shards)
        chunk = self.world_size * max(1, self.num_workers) * self.batch_size
        if self.total < chunk:
            raise DataError(f"{self.folder}: {self.total} {split} samples cannot fill one batch of {self.batch_size} "
                            f"on each of {max(1, self.num_workers)} worker(s) x {self.world_size} process(es)")
        self.per_worker = self.total // chunk * self.batch_size
        placeholder = Manifest([VideoSample(self.folder, 0)], self.classes, self.source.index_name, "shards")
        self.clips = VideoClipDataset(placeholder, train=True, seed=seed, **clip_options)
        self.epoch, self.start = 0, 0

    def per_rank(self) -> int:
        """Samples each rank reads per epoch (the same on every rank)."""
        return self.per_worker * max(1, self.num_workers)

    def __len__(self) -> int:
        return self.per_rank()

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Read ``epoch``, from this rank's sample ``start`` on (resuming mid-epoch; a multiple of the batch)."""
        if start % self.batch_size:
            raise ValueError(f"start={start}: resume at a whole batch of {self.batch_size}")
        self.epoch, self.start = int(epoch), int(start)
        self.clips.set_epoch(epoch)

    def _skip(self, worker: int) -> int:
        """Samples worker ``worker`` delivered before ``start`` (the DataLoader takes batches from its workers in turn)."""
        workers, batches = max(1, self.num_workers), self.start // self.batch_size
        return (batches // workers + (worker < batches % workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if (info.num_workers if info is not None else 0) != self.num_workers:
            raise ValueError(f"ShardStream(num_workers={self.num_workers}) is read by "
                             f"{info.num_workers if info is not None else 0} DataLoader workers: give it the loader's count")
        workers = max(1, self.num_workers)
        # the DataLoader asks worker 0 first: after k batches, worker 0 plays the part of worker k % workers
        worker = (worker + self.start // self.batch_size) % workers
        slot = self.rank * workers + worker
        plan = epoch_plan([s["samples"] for s in self.shards], self.epoch, self.seed, self.world_size * workers,
                          self.per_worker)[slot]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        skip, bad = self._skip(worker), 0
        for number, (record, data, buffered) in enumerate(self._shuffled(plan, rng)):
            if number >= skip:
                item = self._item(record, data, buffered, rng)
                bad += item["bad"]
                if bad > self.clips.max_bad_fraction * self.per_worker:
                    raise BadVideosError(f"{self.folder}: {bad} of this worker's {self.per_worker} samples of epoch "
                                         f"{self.epoch} failed to decode, more than max_bad_fraction="
                                         f"{self.clips.max_bad_fraction} allows (last: {record['source']}); write the "
                                         f"shards again (python -m tsf data shard checks every video)")
                yield item

    def _shuffled(self, plan, rng: np.random.Generator):
        buffer: list[tuple[dict, bytes]] = []
        for sample in self._samples(plan):
            if len(buffer) < self.buffer:
                buffer.append(sample)
                continue
            chosen = int(rng.integers(len(buffer)))
            out, buffer[chosen] = buffer[chosen], sample
            yield (*out, buffer)
        for chosen in rng.permutation(len(buffer)).tolist():
            yield (*buffer[chosen], buffer)

    def _samples(self, plan) -> Iterator[tuple[dict, bytes]]:
        for shard, skip, take in plan:
            name = self.shards[shard]["name"]
            seen = 0
            try:
                with self.source.open(name) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                    pending: dict[str, dict] = {}
                    for member in tar:
                        key, _, extension = member.name.partition(".")
                        parts = pending.setdefault(key, {})
                        parts[extension] = tar.extractfile(member).read() if seen >= skip else b""
                        if "json" in parts and len(parts) == 2:
                            del pending[key]
                            if seen >= skip:
                                record = json.loads(parts.pop("json"))
                                record["key"] = key
                                yield record, next(iter(parts.values()))
                            seen += 1
                            if seen >= skip + take:
                                break
            except (OSError, tarfile.TarError) as error:
                raise DataError(f"{self.source.url(name)}: reading the shard failed after {seen} samples ({error}); "
                                f"check that it is reachable and whole (shards.json lists its SHA-256)") from error
            if seen < skip + take:
                raise DataError(f"{self.source.url(name)}: ended after {seen} samples, but {self.source.index_name} "
                                f"lists {self.shards[shard]['samples']}: a truncated or replaced shard; copy it again")

    def _item(self, record: dict, data: bytes, buffered: list, rng: np.random.Generator) -> dict:
        bad = 0
        while True:
            try:
                return {**self._clip(record, data), "bad": bad}
            except VideoReadError as error:
                bad += 1
                if bad > len(buffered) + 1:
                    raise DataError(f"{self.folder}: no sample near {record['source']} decodes ({error.reason})") from error
                record, data = buffered[int(rng.integers(len(buffered)))]

    def _clip(self, record: dict, data: bytes) -> dict:
        position = int(record["key"])
        suffix = Path(record["source"]).suffix
        with tempfile.NamedTemporaryFile(suffix=suffix, dir=_scratch()) as file:
            file.write(data)
            file.flush()
            sample = VideoSample(file.name, int(record["label"]), record.get("start"), record.get("end"))
            clip_rng = np.random.default_rng([self.seed, self.epoch, position])  # the file dataset's, for this video
            clip = self.clips.load_clip(sample, rng=clip_rng)
        return {"clip": clip, "label": int(record["label"]), "index": position, "view": 0}


def _scratch() -> Optional[str]:
    """Memory-backed scratch space for the one video being decoded, where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class ShardVideos(VideoClipDataset):
    """A split of a local shard folder as a map-style ``VideoClipDataset`` (validation, evaluation):
    opening it reads the shards' tar headers and JSONs once; an item reads its video's bytes at
    their offset in the shard. Items are numbered by manifest position, as from the files.

    Args:
        folder: the shard folder, or a brace pattern of shard paths or URLs (remote shards are
            copied into the cache first: ``ShardSource.local_copy``).
        split: which split (``"val"``).
        **options: ``VideoClipDataset``'s options.
    """

    def __init__(self, folder, split: str = "val", **options):
        source = ShardSource(folder)
        self.folder = source.where
        found = []
        for shard in source.shards(split):
            path = source.local_copy(shard["name"])
            with tarfile.open(path) as tar:
                members: dict[str, dict] = {}
                for member in tar.getmembers():
                    key, _, extension = member.name.partition(".")
                    members.setdefault(key, {})[extension] = member
                for key, parts in members.items():
                    record = json.loads(tar.extractfile(parts.pop("json")).read())
                    (video,) = parts.values()
                    found.append((int(key), record, (path, video.offset_data, video.size)))
        found.sort(key=lambda entry: entry[0])
        self._where = {record["source"]: where for _, record, where in found}
        samples = [VideoSample(r["source"], int(r["label"]), r.get("start"), r.get("end"), line=r.get("line"))
                   for _, r, _ in found]
        super().__init__(Manifest(samples, source.classes, source.index_name, "shards"), **options)

    def open_video(self, sample: VideoSample) -> VideoReader:
        path, offset, size = self._where[sample.path]
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read(size)
        handle, path = tempfile.mkstemp(suffix=Path(sample.path).suffix, dir=_scratch())
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        try:
            return _TemporaryFileReader(open_video(path, self.reader), path, sample.path)
        except VideoReadError as error:
            os.unlink(path)
            raise VideoReadError(sample.path, error.kind, error.reason) from error


class _TemporaryFileReader(VideoReader):
    """A reader of a temporary copy that deletes it when closed and names the original in errors."""

    def __init__(self, reader: VideoReader, temporary: str, name: str):
        self._reader, self._temporary, self.path = reader, temporary, name

    @property
    def info(self):
        return self._reader.info

    def read(self, indices):
        try:
            return self._reader.read(indices)
        except VideoReadError as error:
            raise VideoReadError(self.path, error.kind, error.reason) from error

    def frame_times(self):
        return self._reader.frame_times()

    def close(self) -> None:
        self._reader.close()
        if os.path.exists(self._temporary):
            os.unlink(self._temporary)
