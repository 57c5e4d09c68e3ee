"""Where a shard set lives (``--data``): a local shard folder, or a brace pattern of shard URLs.

``tsf data shard`` writes shards and their index, ``shards.json``, side by side; copy both
anywhere and point ``--data`` at them:

- a folder: ``data/k400-shards`` (its ``shards.json`` lists every split's shards);
- a brace pattern of local paths: ``data/k400-shards/train-{000000..000099}.tar``;
- URLs that WebDataset opens (``webdataset.gopen``): ``https://host/k400/train-{000000..000099}.tar``
  (through ``curl``), ``pipe:aws s3 cp s3://bucket/k400/train-{000000..000099}.tar -``, ``gs://``,
  ``hf://``..., so an object store works through its own command-line tool.

A pattern names the shards to read; the index is read from the same place, the first shard's
file name replaced by ``shards.json`` (``https://host/k400/shards.json``; ``pipe:aws s3 cp
s3://bucket/k400/shards.json -``). It gives each shard's sample count, so every rank reads the
same number of samples, and the classes. Shards the pattern names that the index lacks are an
error; a split none of whose shards the pattern names is absent (a pattern of ``train-*`` shards
trains without validation).

Training streams each shard front to back (``open``). Validation and evaluation read videos by
offset, which needs a seekable file: remote shards are copied once into the cache
(``$TSF_CACHE``, default ``~/.cache/tsf``, under ``shards/``), checked against the index's
SHA-256, and read from there (``local_copy``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

from ..errors import DataError
from ..outputs import atomic_path
from ..zoo import cache_dir
from .shards import INDEX, load_index

Location = Union[str, os.PathLike]
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # pipe:, http:, https:, gs:, ... (not a Windows drive letter)
_TAR_NAME = re.compile(r"[^\s/'\"=]+\.tar\b")


def is_shard_source(location: Union[Location, "ShardSource"]) -> bool:
    """Whether ``--data`` names shards (a folder with ``shards.json``, a pattern or a URL) rather than a data folder."""
    if isinstance(location, ShardSource):
        return True
    text = os.fspath(location)
    if os.path.isdir(text):
        return os.path.isfile(os.path.join(text, INDEX))
    return "{" in text or bool(_SCHEME.match(text)) or text.endswith(".tar")


def data_location(text: str) -> Union[str, Path]:
    """``--data`` as a location: an absolute ``Path`` for a local folder, the text for a URL
    (``Path`` would fold ``https://`` into ``https:/``), a local pattern made absolute (so that a
    resumed run finds it from any directory)."""
    if os.path.isdir(text) or not is_shard_source(text):
        return Path(text).resolve()
    return text if _SCHEME.match(text) else os.path.abspath(text)


def shard_name(url: str) -> str:
    """The shard's file name in a path, URL or ``pipe:`` command (its last ``*.tar`` token)."""
    found = _TAR_NAME.findall(url)
    if not found:
        raise DataError(f"{url}: no shard file name (*.tar) in it; --data takes a shard folder, or a pattern "
                        f"of shard paths or URLs such as https://host/data/train-{{000000..000009}}.tar")
    return found[-1]


class ShardSource:
    """A shard set: its index and how to read each shard (see the module's docstring).

    Args:
        location: a shard folder, or a brace pattern of shard paths or URLs.

    Raises:
        DataError: no index there, shards the index does not list, or a shard that cannot be read.
    """

    def __init__(self, location: Union[Location, "ShardSource"]):
        if isinstance(location, ShardSource):  # one index read serves the training and validation sets
            self.__dict__.update(location.__dict__)
            return
        text = os.fspath(location)
        self.where = text
        if os.path.isdir(text):
            self.folder, self.remote = Path(text), False
            self.index = load_index(self.folder)
            self._urls = {s["name"]: str(self.folder / s["name"]) for e in self.index["splits"].values() for s in e["shards"]}
            return
        from webdataset.shardlists import expand_urls

        urls = expand_urls(text)
        if not urls:
            raise DataError(f"--data {text!r}: the pattern names no shard")
        names = [shard_name(url) for url in urls]
        first = urls[0]
        cut = first.rindex(names[0])
        index_url = first[:cut] + INDEX + first[cut + len(names[0]):]
        self._urls, self.remote = dict(zip(names, urls)), bool(_SCHEME.match(text))
        if self.remote:
            self.folder, index = None, _read_index(index_url)
        else:  # local paths: the index's folder, checked as a shard folder is
            self.folder = Path(index_url).parent
            index = load_index(self.folder)
        listed = {shard["name"] for entry in index["splits"].values() for shard in entry["shards"]}
        unknown = [name for name in names if name not in listed]
        if unknown:
            raise DataError(f"--data {text!r}: {len(unknown)} shard(s) the pattern names are not in {index_url} "
                            f"(first: {unknown[0]}); it lists {len(listed)}: fix the pattern's range")
        wanted = set(names)
        splits = {}
        for split, entry in index["splits"].items():
            shards = [shard for shard in entry["shards"] if shard["name"] in wanted]
            if shards:
                splits[split] = {**entry, "shards": shards, "samples": sum(s["samples"] for s in shards)}
        self.index = {**index, "splits": splits}

    @property
    def classes(self) -> list[str]:
        return list(self.index["classes"])

    @property
    def index_name(self) -> str:
        """Where the index came from, for messages."""
        return str(self.folder / INDEX) if self.folder is not None else f"{self.where} (its {INDEX})"

    def shards(self, split: str) -> list[dict]:
        """The index's entries for ``split``'s shards (``name``, ``samples``, ``bytes``, ``sha256``)."""
        if split not in self.index["splits"]:
            raise DataError(f"{self.index_name} has no split {split!r} here (it has "
                            f"{', '.join(self.index['splits']) or 'none'})")
        return self.index["splits"][split]["shards"]

    def url(self, name: str) -> str:
        """Where shard ``name`` is read from."""
        return self._urls[name]

    def open(self, name: str) -> BinaryIO:
        """Shard ``name`` as a binary stream (read it front to back; closing a remote stream checks its exit status)."""
        if not self.remote:
            return open(self._urls[name], "rb")
        from webdataset.gopen import gopen

        try:
            return gopen(self._urls[name], "rb")
        except (OSError, ValueError) as error:
            raise DataError(f"{self._urls[name]}: cannot be opened ({error})") from error

    def local_copy(self, name: str) -> Path:
        """A seekable local file of shard ``name``: the shard itself, or a verified copy in the cache."""
        if not self.remote:
            return Path(self._urls[name])
        entry = next(s for entry in self.index["splits"].values() for s in entry["shards"] if s["name"] == name)
        path = cache_dir() / "shards" / entry["sha256"][:16] / name
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        warnings.warn(f"copying {self._urls[name]} ({entry['bytes'] / 1e6:.0f} MB) to {path}: validation reads videos "
                      f"by offset, which a stream cannot do (once; later runs reuse the copy)")
        digest = hashlib.sha256()
        with atomic_path(path) as partial:
            with self.open(name) as stream, open(partial, "wb") as out:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != entry["sha256"]:
                raise DataError(f"{self._urls[name]}: its SHA-256 is not the one {self.index_name} lists (a changed or "
                                f"partly copied shard); copy the shards and their shards.json again")
        return path


def _read_index(url: str) -> dict:
    from webdataset.gopen import gopen

    try:
        with gopen(url, "rb") as stream:
            data = stream.read()
    except (OSError, ValueError) as error:
        raise DataError(f"{url}: the shards' index cannot be read ({error}); shards.json must lie beside the shards, "
                        f"as python -m tsf data shard writes them") from error
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise DataError(f"{url}: not valid JSON ({error}); copy the shards' shards.json again") from error

