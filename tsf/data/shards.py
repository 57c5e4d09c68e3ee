"""WebDataset shards of a manifest: ``python -m tsf data shard MANIFEST --out DIR``.

Cluster file systems serve a few large files far better than 240k small ones: the videos of a
split are packed, as they are (no re-encoding), into tar shards of about ``shard_size`` bytes in
the WebDataset layout (members ``KEY.mp4`` and ``KEY.json`` side by side), and ``shards.json``
indexes them:

    {"format": "webdataset", "version": 1, "source": "data/mine", "classes": [...],
     "shuffle_seed": 0, "shard_size": 1000000000,
     "splits": {"train": {"manifest": ".../train.csv", "samples": 1200,
                          "shards": [{"name": "train-000000.tar", "samples": 301, "bytes": ..., "sha256": ...}]}},
     "bad": [{"path", "status", "reason", "where", "split"}]}

A sample's JSON: ``label`` (class id), ``class`` (its name), ``source`` (the original path),
``frames`` and ``fps`` (as the pre-flight check counted them), ``start``/``end`` when the manifest
gives them, ``line`` (where in the manifest); its key is its position in the manifest. Every video is checked first, as ``tsf data check``
does; the bad ones are reported and left out. Samples are shuffled (``shuffle_seed``) before
packing, since manifests list videos class by class and a stream reads shards front to back.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import DataError
from ..outputs import atomic_path, atomic_write_text, refuse_to_overwrite
from .check import check_manifest
from .manifest import Manifest, VideoSample, load_classes, read_manifest

PathLike = Union[str, os.PathLike]
INDEX = "shards.json"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: Union[str, int]) -> int:
    """Bytes in ``"1GB"``, ``"500MB"``, ``"1.5GiB"`` or ``"123456"``."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?I?B?)\s*", str(text).upper())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"shard size {text!r}: write bytes or a size such as 500MB, 1GB, 2GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise ValueError(f"shard size {text!r}: must be more than 0 bytes")
    return size


def source_splits(source: PathLike, classes: Optional[Sequence[str]] = None) -> tuple[dict[str, Manifest], list[str]]:
    """The manifests to shard: a data folder's ``train.csv`` and ``val.csv`` (with its ``classes.txt``),
    or one manifest of any format ``read_manifest`` reads, named after its file (``train.csv`` -> ``train``)."""
    source = Path(source)
    if source.is_dir() and (source / "train.csv").is_file():
        names = list(classes) if classes is not None else (
            load_classes(source / "classes.txt") if (source / "classes.txt").is_file() else None)
        splits = {split: read_manifest(source / f"{split}.csv", classes=names, errors="collect")
                  for split in ("train", "val") if (source / f"{split}.csv").is_file()}
    else:
        manifest = read_manifest(source, classes=classes, errors="collect")
        splits = {re.sub(r"[^\w-]", "_", source.stem) or "data": manifest}
    class_lists = {tuple(m.classes) for m in splits.values()}
    if len(class_lists) > 1:
        raise DataError(f"{source}: its splits name different classes; give one list with --classes")
    for split, manifest in splits.items():
        framed = [s.path for s in manifest.samples if s.frames is not None]
        if framed:
            raise DataError(f"{manifest.source}: {framed[0]} is a folder of frames (SSv2 frame list); shards hold "
                            f"video files only: shard the videos (the .webm files) instead")
    return splits, list(next(iter(class_lists)))


def write_shards(source: PathLike, out: PathLike, shard_size: Union[str, int] = "1GB", shuffle_seed: Optional[int] = 0,
                 classes: Optional[Sequence[str]] = None, num_frames: int = 8, reader: str = "auto",
                 workers: Optional[int] = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Check the videos of ``source`` and pack the good ones into WebDataset shards in ``out``.

    Args:
        source: a data folder (``train.csv``, ``val.csv``, ``classes.txt``) or one manifest.
        out: the shard folder; receives ``SPLIT-000000.tar``... and ``shards.json`` (written last).
        shard_size: bytes of video per shard (a shard closes before the sample that would pass it;
            a bigger video gets a shard of its own).
        shuffle_seed: the seed of the order in which samples are packed; None keeps the manifest's order.
        classes: class names in id order (default: the data folder's ``classes.txt`` / as ``read_manifest``).
        num_frames: frames a clip needs (the check calls shorter videos ``too_short``).
        reader: the reader the check uses.
        workers: checking processes (default: all cores).
        progress: progress bars of the check.
        overwrite: replace an existing ``shards.json`` and shards in ``out`` (otherwise refused before any work).

    Returns:
        The index written to ``out/shards.json``.
    """
    out, limit = Path(out), parse_size(shard_size)
    splits, names = source_splits(source, classes)
    refuse_to_overwrite([out / INDEX, *sorted(out.glob("*.tar"))] if out.is_dir() else [], overwrite, "shards")
    index = {"format": "webdataset", "version": 1, "source": str(source), "classes": names,
             "shuffle_seed": shuffle_seed, "shard_size": limit, "splits": {}, "bad": []}
    for split, manifest in splits.items():
        report = check_manifest(manifest, num_frames=num_frames, reader=reader, workers=workers, progress=progress)
        checked = report["files"][len(manifest.problems):]  # the manifest's bad rows come first
        index["bad"] += [{**{k: f[k] for k in ("path", "status", "reason", "where")}, "split": split}
                         for f in report["files"] if f["status"] != "ok"]
        good = [(n, s, r) for n, (s, r) in enumerate(zip(manifest.samples, checked)) if r["status"] == "ok"]
        if shuffle_seed is not None:
            good = [good[i] for i in np.random.default_rng(shuffle_seed).permutation(len(good))]
        shards = _pack(good, names, out, split, limit)
        index["splits"][split] = {"manifest": str(manifest.source), "samples": len(good), "shards": shards}
    written = {s["name"] for split in index["splits"].values() for s in split["shards"]}
    for stale in out.glob("*.tar"):  # an earlier, replaced set (--overwrite): never mixed with this one
        if stale.name not in written:
            stale.unlink()
    atomic_write_text(out / INDEX, json.dumps(index, indent=2) + "\n")
    return index


def sample_record(sample: VideoSample, check: dict, classes: Sequence[str]) -> dict:
    """The JSON stored beside a video in its shard."""
    record = {"label": sample.label, "class": classes[sample.label], "source": sample.path,
              "frames": check.get("frames"), "fps": check.get("fps"), "line": sample.line}
    if sample.start is not None:
        record["start"] = sample.start
    if sample.end is not None:
        record["end"] = sample.end
    return record


def _pack(good: list[tuple[int, VideoSample, dict]], classes: Sequence[str], out: Path, split: str, limit: int) -> list[dict]:
    groups: list[list[tuple[int, VideoSample, dict]]] = [[]]
    size = 0
    for position, sample, check in good:
        length = os.path.getsize(sample.path)
        if groups[-1] and size + length > limit:
            groups.append([])
            size = 0
        groups[-1].append((position, sample, check))
        size += length
    return [_write_shard(group, classes, out / f"{split}-{number:06d}.tar") for number, group in enumerate(groups) if group]


def _write_shard(group: list[tuple[int, VideoSample, dict]], classes: Sequence[str], path: Path) -> dict:
    import webdataset

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            writer = webdataset.TarWriter(stream, encoder=False, mtime=0)
            for position, sample, check in group:  # the key: the sample's position in its manifest
                extension = re.sub(r"[^a-z0-9]", "", Path(sample.path).suffix.lower()) or "video"
                key = f"{position:09d}"
                record = json.dumps(sample_record(sample, check, classes), sort_keys=True).encode()
                writer.write({"__key__": key, extension: Path(sample.path).read_bytes(), "json": record})
            writer.close()
            stream.flush()
            os.fsync(stream.fileno())
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "samples": len(group), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def load_index(folder: PathLike) -> dict:
    """``folder/shards.json``, checked: every shard it lists is there with its size."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise DataError(f"{folder}: no {INDEX}: not a shard folder (write one with python -m tsf data shard)")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error}); write the shards again") from error
    for split, entry in index.get("splits", {}).items():
        for shard in entry["shards"]:
            file = folder / shard["name"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                raise DataError(f"{file}: listed in {path} ({shard['bytes']} bytes) but "
                                f"{'missing' if not file.is_file() else 'of another size'}; copy the shard folder again")
    return index
