"""WebDataset shards: every good video packed as it is beside its JSON, bad ones reported and left
out, shards.json's counts and checksums right, nothing replaced without --overwrite."""
import hashlib
import json
import tarfile

import pytest

from tsf.cli import main
from tsf.data.manifest import read_manifest
from tsf.data.readers import video_info
from tsf.data.shards import load_index, parse_size
from tsf.data.synth import generate
from tsf.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = generate("appearance", tmp_path_factory.mktemp("shards") / "data", videos_per_class=4)
    train = read_manifest(root / "train.csv").samples
    open(train[0].path, "wb").close()  # an empty file: left out, reported
    return root


def test_shards_hold_every_good_video_as_it_is(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    code = main(["data", "shard", str(folder), "--out", str(out), "--shard-size", "3KB", "--workers", "1",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1 and "left out, unreadable" in printed and "0 bytes" in printed
    index = load_index(out)
    manifests = {split: read_manifest(folder / f"{split}.csv") for split in ("train", "val")}
    assert index["classes"] == manifests["train"].classes and index["format"] == "webdataset"
    assert [b["status"] for b in index["bad"]] == ["unreadable"] and index["bad"][0]["split"] == "train"
    for split, manifest in manifests.items():
        entry = index["splits"][split]
        expected = {s.path: s for s in manifest.samples if s.path != index["bad"][0]["path"]}
        assert entry["samples"] == len(expected) == sum(s["samples"] for s in entry["shards"])
        assert len(entry["shards"]) > 1  # 3 KB shards: the split is spread over several
        seen = {}
        for shard in entry["shards"]:
            path = out / shard["name"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            with tarfile.open(path) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            assert len(members) == 2 * shard["samples"]
            for name, data in members.items():
                if name.endswith(".json"):
                    record = json.loads(data)
                    video = members[name[:-len("json")] + "mp4"]
                    seen[record["source"]] = record
                    sample = expected[record["source"]]
                    assert video == open(sample.path, "rb").read()  # the bytes as they are
                    assert record["label"] == sample.label and record["class"] == manifest.classes[sample.label]
                    info = video_info(sample.path)
                    assert (record["frames"], record["fps"]) == (info.num_frames, pytest.approx(info.fps))
        assert sorted(seen) == sorted(expected)  # each good video once
        # shuffled before packing (the manifest lists class by class): the packed order is not the manifest's
        packed = [json.loads(m)["line"] for shard in entry["shards"] for m in _jsons(out / shard["name"])]
        assert packed != sorted(packed)


def test_webdataset_reads_the_shards_back(folder, tmp_path):
    import webdataset

    out = tmp_path / "shards"
    assert main(["data", "shard", str(folder / "val.csv"), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    index = load_index(out)
    urls = [str(out / s["name"]) for s in index["splits"]["val"]["shards"]]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert len(samples) == index["splits"]["val"]["samples"] and all({"mp4", "json"} <= set(s) for s in samples)


def test_shards_are_never_replaced_without_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["data", "shard", str(folder / "val.csv"), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2 and "already exist" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(args + ["--overwrite", "--shard-size", "2KB"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"shards.json"} | {s["name"] for s in load_index(out)["splits"]["val"]["shards"]}
    assert not any(name.startswith(".") for name in names)  # no temporary files left


def test_sizes_and_broken_folders_are_named(tmp_path):
    assert parse_size("1GB") == 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("500mb") == 5 * 10**8
    with pytest.raises(ValueError, match="500MB, 1GB"):
        parse_size("lots")
    with pytest.raises(DataError, match="no shards.json"):
        load_index(tmp_path)


def _jsons(path):
    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]


def test_the_shard_benchmark_times_files_and_shards_warm_and_cold():
    from tsf.data.shard_bench import benchmark_shards

    result = benchmark_shards(videos=4, seconds=0.5, height=64, crop_size=32, repeats=1)
    assert set(result["rows"]) == {"files", "shards"}
    assert all(row["warm_clips_per_s"] > 0 and row["cold_clips_per_s"] > 0 for row in result["rows"].values())
