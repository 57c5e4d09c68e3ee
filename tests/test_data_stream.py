"""Streaming from shards: ranks and workers read disjoint, equal shares that cover the epoch; the
clips are the file dataset's; a resumed epoch continues with exactly the next samples."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tsf.data.dataset import VideoClipDataset
from tsf.data.manifest import read_manifest
from tsf.data.stream import ShardStream, epoch_plan

OPTIONS = dict(num_frames=4, crop_size=16, short_side_range=(16, 20), hflip=True)


@pytest.fixture(scope="module")
def shards(small_shards):
    return small_shards


def _indices(stream, epoch, workers, batch, start=0):
    stream.set_epoch(epoch, start)
    loader = DataLoader(stream, batch_size=batch, num_workers=workers)
    return [i for b in loader for i in b["index"].tolist()]


def test_the_plan_splits_an_epoch_without_overlap():
    counts = [5, 3, 7, 1, 4]
    for slots in (1, 2, 3, 4):
        per_slot = sum(counts) // slots
        plans = epoch_plan(counts, 3, 0, slots, per_slot)
        taken = [(shard, skip + k) for plan in plans for shard, skip, take in plan for k in range(take)]
        assert len(taken) == len(set(taken)) == per_slot * slots
        assert all(sum(take for _, _, take in plan) == per_slot for plan in plans)
    assert epoch_plan(counts, 0, 0, 2, 10) != epoch_plan(counts, 1, 0, 2, 10)  # a new shard order each epoch


def test_two_ranks_with_two_workers_see_every_sample_once_per_epoch(shards):
    data, folder = shards
    train = read_manifest(data / "train.csv")
    seen_by_epoch = []
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            stream = ShardStream(folder, batch_size=2, num_workers=2, rank=rank, world_size=2, buffer=4, **OPTIONS)
            per_rank.append(_indices(stream, epoch, workers=2, batch=2))
        assert len(per_rank[0]) == len(per_rank[1]) == stream.per_rank() == len(train.samples) // 8 * 4
        assert not set(per_rank[0]) & set(per_rank[1])
        everything = per_rank[0] + per_rank[1]
        assert len(set(everything)) == len(everything)  # nothing twice
        seen_by_epoch.append(everything)
    assert seen_by_epoch[0] != seen_by_epoch[1]  # shuffled anew


def test_one_rank_reads_the_whole_split_and_its_clips_are_the_files(shards):
    data, folder = shards
    train = read_manifest(data / "train.csv")
    files = VideoClipDataset(train, train=True, seed=0, **OPTIONS)
    stream = ShardStream(folder, batch_size=1, num_workers=0, rank=0, world_size=1, **OPTIONS)
    stream.set_epoch(2)
    files.set_epoch(2)
    items = list(stream)
    assert sorted(item["index"] for item in items) == list(range(len(train.samples)))  # the epoch's label multiset, whole
    for item in items[:6]:
        expected = files[item["index"]]
        assert item["label"] == expected["label"] and item["bad"] == 0
        assert torch.equal(item["clip"], expected["clip"])  # the same clip for the same video and epoch


def test_a_resumed_epoch_continues_with_exactly_the_next_samples(shards):
    _, folder = shards
    stream = ShardStream(folder, batch_size=2, num_workers=2, rank=1, world_size=2, buffer=4, **OPTIONS)
    whole = _indices(stream, 1, workers=2, batch=2)
    for consumed in (2, 4, 6):
        assert _indices(stream, 1, workers=2, batch=2, start=consumed) == whole[consumed:]
    with pytest.raises(ValueError, match="whole batch"):
        stream.set_epoch(1, 3)


def test_a_sample_that_fails_to_decode_is_counted_and_replaced(shards, tmp_path):
    import io
    import shutil
    import tarfile

    _, folder = shards
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    first = sorted(broken.glob("train-*.tar"))[0]
    with tarfile.open(first) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(first, "w", format=tarfile.GNU_FORMAT) as tar:  # the same size: the index still matches
        victim = next(m.name for m, _ in members if m.name.endswith(".mp4"))
        for member, data in members:
            tar.addfile(member, io.BytesIO(b"\0" * len(data) if member.name == victim else data))
    assert first.stat().st_size == (folder / first.name).stat().st_size
    stream = ShardStream(broken, max_bad_fraction=1.0, **OPTIONS)
    items = list(stream)
    assert len(items) == stream.per_rank() and sum(item["bad"] for item in items) == 1
    with pytest.raises(Exception, match="failed to decode, more than max_bad_fraction=0.0"):
        list(ShardStream(broken, max_bad_fraction=0.0, **OPTIONS))
    with pytest.raises(ValueError, match="give it the loader's count"):
        next(iter(DataLoader(ShardStream(broken, num_workers=2, **OPTIONS), batch_size=1)))
