"""Shards named by a brace pattern of paths or URLs (``pipe:``, http on 127.0.0.1) read as from their
folder: the same samples in the same order, validation from a checksum-verified cached copy, and a
clear error for a wrong pattern, a dead server or a truncated shard."""
import functools
import http.server
import json
import shutil
import threading

import pytest
import torch

from tsf.cli import main
from tsf.data.sources import ShardSource, data_location, is_shard_source, shard_name
from tsf.data.stream import ShardStream, ShardVideos
from tsf.errors import DataError

OPTIONS = dict(num_frames=4, crop_size=16, short_side_range=(16, 20), hflip=True)


@pytest.fixture(scope="module")
def shards(small_shards):
    return small_shards


@pytest.fixture(scope="module")
def server(shards):
    """The shard folder over HTTP on 127.0.0.1 (what an object store's HTTPS endpoint does)."""
    handler = functools.partial(_QuietHandler, directory=str(shards[1]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _pattern(folder, split, prefix=""):
    names = [s["name"] for s in json.loads((folder / "shards.json").read_text())["splits"][split]["shards"]]
    numbers = [n.split("-")[1].split(".")[0] for n in names]
    return f"{prefix}{split}-{{{numbers[0]}..{numbers[-1]}}}.tar", len(names)


def _order(location, epoch=1):
    stream = ShardStream(location, batch_size=2, buffer=4, seed=3, **OPTIONS)
    stream.set_epoch(epoch)
    items = list(stream)
    return [item["index"] for item in items], items


def test_locations_are_told_apart(shards, tmp_path):
    data, folder = shards
    assert is_shard_source(folder) and not is_shard_source(data)
    assert is_shard_source("https://host/k400/train-{000000..000009}.tar") and is_shard_source("pipe:cat a.tar")
    assert data_location("https://host/x/train-000000.tar") == "https://host/x/train-000000.tar"  # not https:/host
    assert data_location(str(folder)) == folder.resolve()
    assert shard_name("pipe:aws s3 cp s3://bucket/k400/train-000003.tar -") == "train-000003.tar"


def test_a_pattern_of_paths_pipe_commands_or_urls_streams_the_folders_samples(shards, server):
    _, folder = shards
    pattern, count = _pattern(folder, "train")
    expected, expected_items = _order(folder)
    for location in (f"{folder}/{pattern}", f"pipe:cat {folder}/{pattern}", f"{server}/{pattern}"):
        source = ShardSource(location)
        assert list(source.index["splits"]) == ["train"] and len(source.shards("train")) == count
        order, items = _order(location)
        assert order == expected, location
        assert all(torch.equal(a["clip"], b["clip"]) for a, b in zip(items, expected_items))


def test_remote_validation_shards_are_copied_once_and_verified(shards, server, tmp_path, monkeypatch):
    _, folder = shards
    monkeypatch.setenv("TSF_CACHE", str(tmp_path / "cache"))
    pattern, count = _pattern(folder, "val")
    options = dict(num_frames=4, crop_size=16, train=False, num_temporal_clips=2, num_spatial_crops=1)
    local = ShardVideos(folder, "val", **options)
    with pytest.warns(UserWarning, match="copying"):
        remote = ShardVideos(f"{server}/{pattern}", "val", **options)
    assert len(remote) == len(local) and all(torch.equal(remote[i]["clip"], local[i]["clip"]) for i in range(len(local)))
    assert len(list((tmp_path / "cache" / "shards").rglob("*.tar"))) == count
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time, no copy
        ShardVideos(f"{server}/{pattern}", "val", **options)
    # a copy that does not match the index's SHA-256 is refused, and nothing is left in the cache
    first = sorted((tmp_path / "cache" / "shards").rglob("*.tar"))[0]
    shutil.rmtree(tmp_path / "cache")
    source = ShardSource(f"{server}/{pattern}")
    source.index["splits"]["val"]["shards"][0]["sha256"] = "0" * 64
    with pytest.raises(DataError, match="SHA-256"), pytest.warns(UserWarning):
        source.local_copy(source.shards("val")[0]["name"])
    assert not list((tmp_path / "cache").rglob(first.name))


def test_training_and_evaluation_run_from_urls(shards, server, tmp_path, monkeypatch):
    _, folder = shards
    monkeypatch.setenv("TSF_CACHE", str(tmp_path / "cache"))
    location = f"{server}/{{train,val}}-{{000000..000099}}.tar"  # more than exist: cut to what the index lists
    numbers = json.loads((folder / "shards.json").read_text())
    last = max(int(s["name"].split("-")[1][:6]) for e in numbers["splits"].values() for s in e["shards"])
    location = location.replace("000099", f"{last:06d}")
    with pytest.raises(DataError, match="not in"):
        ShardSource(location)
    train_pattern, _ = _pattern(folder, "train")
    val_pattern, _ = _pattern(folder, "val")
    location = f"{server}/{{{train_pattern[:-4]},{val_pattern[:-4]}}}.tar"
    assert set(ShardSource(location).index["splits"]) == {"train", "val"}
    out = tmp_path / "run"
    assert main(["train", "--data", location, "--out", str(out), "--model", "tiny", "--sampling-rate", "1",
                 "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--no-progress"]) == 0
    assert (out / "best.pt").is_file()
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", location, "--out", str(tmp_path / "eval"),
                 "--sampling-rate", "1", "--target-fps", "0", "--num-workers", "0", "--json"]) == 0
    summary = json.loads((tmp_path / "eval" / "eval_val_summary.json").read_text())
    assert summary["videos"] == len(ShardVideos(folder, "val", num_frames=4, crop_size=16, train=False))


def test_bad_locations_say_what_and_where(shards, server, tmp_path):
    _, folder = shards
    pattern, _ = _pattern(folder, "train")
    with pytest.raises(DataError, match="shards.json"):
        ShardSource("http://127.0.0.1:9/data/train-{000000..000001}.tar")  # nothing listens on port 9
    with pytest.raises(DataError, match="no shard file name"):
        ShardSource("pipe:cat {a,b}")
    name = ShardSource(f"{folder}/{pattern}").shards("train")[0]["name"]
    truncated = f"pipe:head -c 3000 {folder}/{name}"
    stream = ShardStream(ShardSource(f"pipe:cat {folder}/{pattern}"), batch_size=2, buffer=4, **OPTIONS)
    stream.source._urls[name] = truncated
    with pytest.raises(DataError, match=name):
        list(stream)
