"""The model zoo: the official TimeSformer checkpoints and their Hugging Face conversions.

``tsf.from_pretrained("<zoo name>")`` downloads a checkpoint once, verifies it and loads it:

- the official ``.pyth`` files with ``torch.hub.download_url_to_file`` (progress bar, written to
  a temporary file and renamed into place) into ``$TSF_CACHE`` (default ``~/.cache/tsf``), their
  SHA-256 recorded on first download and checked on every load;
- the Hugging Face conversions with ``huggingface_hub`` (its cache, resumable, progress bars;
  ``HF_HUB_OFFLINE=1`` uses the cache only), into ``$TSF_CACHE/huggingface`` when ``TSF_CACHE``
  is set, else the Hugging Face cache that ``transformers`` shares.

A failed download raises ``tsf.errors.DownloadError`` saying the URL, where the file goes, and
how to place it there by hand; it never leaves a partial file in the cache.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch.hub

from .errors import ConfigError, DownloadError

CACHE_ENV = "TSF_CACHE"
_DROPBOX = "https://www.dropbox.com/s/{}?dl=1"
HF_ENDPOINT: Optional[str] = None  # None: huggingface_hub's (the Hub, or $HF_ENDPOINT)
HF_CONFIG, HF_PREPROCESSOR = "config.json", "preprocessor_config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the first one the repository has is fetched


@dataclass(frozen=True)
class ZooEntry:
    name: str  # what from_pretrained accepts
    source: str  # "official" (.pyth from the paper's model zoo) or "hf" (transformers conversion)
    url: str  # .pyth URL, or the Hugging Face repo id for "hf"
    dataset: str  # training set, also the label set
    num_frames: int  # frames per clip the model was trained on
    img_size: int  # crop size in pixels
    num_classes: int
    top1: float  # top-1 reported by the authors (Kinetics/SSv2: 3 x 1 views; HowTo100M: see the paper)
    sampling_rate: int  # frame stride of the training clips
    sha256: Optional[str] = None  # checked when known; otherwise recorded on first download and checked after
    num_heads: int = 12  # every released TimeSformer is ViT-B/16 width; the weights do not show it


def _official(name, path, dataset, frames, size, classes, top1, rate):
    return ZooEntry(name, "official", _DROPBOX.format(path), dataset, frames, size, classes, top1, rate)


def _hf(name, repo, dataset, frames, size, classes, top1, rate):
    return ZooEntry(name, "hf", repo, dataset, frames, size, classes, top1, rate)


_ENTRIES = [
    _official("timesformer_k400_8x224", "g5t24we9gl5yk88/TimeSformer_divST_8x32_224_K400.pyth", "k400", 8, 224, 400, 77.9, 32),
    _official("timesformer_hr_k400_16x448", "6f0x172lpqy3oxt/TimeSformer_divST_16x16_448_K400.pyth", "k400", 16, 448, 400, 79.6, 16),
    _official("timesformer_l_k400_96x224", "r1iuxahif3sgimo/TimeSformer_divST_96x4_224_K400.pyth", "k400", 96, 224, 400, 80.6, 4),
    _official("timesformer_k600_8x224", "4h2qt41m2z3aqrb/TimeSformer_divST_8x32_224_K600.pyth", "k600", 8, 224, 600, 79.1, 32),
    _official("timesformer_hr_k600_16x448", "ft1e92g2vhvxecv/TimeSformer_divST_16x16_448_K600.pyth", "k600", 16, 448, 600, 81.8, 16),
    _official("timesformer_l_k600_96x224", "857rx6xeclxfhdg/TimeSformer_divST_96x4_224_K600.pyth", "k600", 96, 224, 600, 82.2, 4),
    _official("timesformer_ssv2_8x224", "tybhuml57y24wpm/TimeSformer_divST_8_224_SSv2.pyth", "ssv2", 8, 224, 174, 59.1, 0),
    _official("timesformer_hr_ssv2_16x448", "9t68uzk8w2fpfnv/TimeSformer_divST_16_448_SSv2.pyth", "ssv2", 16, 448, 174, 61.8, 0),
    _official("timesformer_l_ssv2_64x224", "3f1rm2al8mhprwa/TimeSformer_divST_64_224_SSv2.pyth", "ssv2", 64, 224, 174, 62.0, 0),
    _official("timesformer_howto100m_8x224", "9v8hcm88b9tc6ff/TimeSformer_divST_8x32_224_HowTo100M.pyth", "howto100m", 8, 224, 1059, 56.8, 32),
    _official("timesformer_howto100m_32x224", "4roflx4q1gscu85/TimeSformer_divST_32x32_224_HowTo100M.pyth", "howto100m", 32, 224, 1059, 61.2, 32),
    _official("timesformer_howto100m_64x224", "15bvqltl1j5vyp3/TimeSformer_divST_64x32_224_HowTo100M.pyth", "howto100m", 64, 224, 1059, 62.2, 32),
    _official("timesformer_howto100m_96x224", "t2mzgahnfhgakma/TimeSformer_divST_96x32_224_HowTo100M.pyth", "howto100m", 96, 224, 1059, 62.6, 32),
    _hf("facebook/timesformer-base-finetuned-k400", "facebook/timesformer-base-finetuned-k400", "k400", 8, 224, 400, 77.9, 32),
    _hf("facebook/timesformer-hr-finetuned-k400", "facebook/timesformer-hr-finetuned-k400", "k400", 16, 448, 400, 79.6, 16),
    _hf("facebook/timesformer-large-finetuned-k400", "facebook/timesformer-large-finetuned-k400", "k400", 96, 224, 400, 80.6, 4),
    _hf("facebook/timesformer-base-finetuned-k600", "facebook/timesformer-base-finetuned-k600", "k600", 8, 224, 600, 79.1, 32),
    _hf("facebook/timesformer-hr-finetuned-k600", "facebook/timesformer-hr-finetuned-k600", "k600", 16, 448, 600, 81.8, 16),
    _hf("facebook/timesformer-large-finetuned-k600", "facebook/timesformer-large-finetuned-k600", "k600", 96, 224, 600, 82.2, 4),
    _hf("facebook/timesformer-base-finetuned-ssv2", "facebook/timesformer-base-finetuned-ssv2", "ssv2", 8, 224, 174, 59.1, 0),
    _hf("facebook/timesformer-hr-finetuned-ssv2", "facebook/timesformer-hr-finetuned-ssv2", "ssv2", 16, 448, 174, 61.8, 0),
    _hf("facebook/timesformer-large-finetuned-ssv2", "facebook/timesformer-large-finetuned-ssv2", "ssv2", 64, 224, 174, 62.0, 0),
]
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def list_models(dataset: Optional[str] = None) -> list[ZooEntry]:
    """The zoo's entries, optionally only those trained on ``dataset``.

    Args:
        dataset: ``k400``, ``k600``, ``ssv2`` or ``howto100m``; also their long names
            (``kinetics400``, ``kinetics`` for both Kinetics sets, ``something-something``...).

    Raises:
        ConfigError: a dataset no entry was trained on.
    """
    if dataset is None:
        return list(ZOO.values())
    wanted = _DATASET_NAMES.get(dataset.lower().replace("_", "-"), (dataset.lower(),))
    entries = [e for e in ZOO.values() if e.dataset in wanted]
    if not entries:
        raise ConfigError(f"no zoo model was trained on {dataset!r}; the datasets are "
                          f"{', '.join(sorted({e.dataset for e in ZOO.values()}))}")
    return entries


_DATASET_NAMES = {
    "kinetics": ("k400", "k600"), "kinetics400": ("k400",), "kinetics-400": ("k400",), "kinetics600": ("k600",),
    "kinetics-600": ("k600",), "something-something": ("ssv2",), "something-something-v2": ("ssv2",),
    "sthv2": ("ssv2",), "howto": ("howto100m",),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tsf")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Fetch ``url`` (http(s) or file://) to ``dest`` once; verify it on every call.

    The digest is checked against ``sha256`` when given; otherwise the digest of the first
    download is recorded beside the file (``<dest>.sha256``) and later calls check against it,
    so a cache file damaged after the fact is detected rather than loaded.

    Raises:
        DownloadError: the download failed or its digest is wrong (nothing is left in the cache),
            or the cached file no longer matches its digest.
    """
    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha256")
    by_hand = f"download it by hand (curl -L -o '{dest}' '{url}') and run again, or pass the downloaded file's path"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:  # writes a temporary file beside dest and renames it: an interrupted download leaves nothing
            torch.hub.download_url_to_file(url, str(dest), progress=progress)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise DownloadError(f"could not download {url} to {dest} ({reason}); {by_hand}") from None
        if sha256 and _sha256(dest) != sha256:
            dest.unlink()
            raise DownloadError(f"the download of {url} has the wrong SHA-256 (expected {sha256}); nothing was "
                                f"cached; try again, or {by_hand}")
        record.write_text(_sha256(dest) + "\n")
    expected = sha256 or (record.read_text().strip() if record.exists() else None)
    if expected and _sha256(dest) != expected:
        raise DownloadError(
            f"cached file {dest} does not match its SHA-256 {expected}: it was damaged or changed; "
            f"delete it (and {record.name}) to download it again"
        )
    return dest


def fetch(name: str) -> Path:
    """Local path of zoo model ``name`` (a .pyth file or a Hugging Face directory), downloading it once."""
    if name not in ZOO:
        raise ConfigError(f"unknown zoo model {name!r}; tsf.list_models() lists {', '.join(sorted(ZOO))}")
    entry = ZOO[name]
    if entry.source == "official":
        return download(entry.url, cache_dir() / f"{entry.name}.pyth", entry.sha256)
    return _fetch_hf(entry.url)


def _fetch_hf(repo: str) -> Path:
    """The snapshot folder of Hugging Face model ``repo`` holding its config, weights and preprocessor config."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    hf_cache = cache_dir() / "huggingface" if os.environ.get(CACHE_ENV) else None

    def get(filename: str) -> Path:
        return Path(hf_hub_download(repo, filename, cache_dir=hf_cache, endpoint=HF_ENDPOINT))

    try:
        config = get(HF_CONFIG)
        for weights in HF_WEIGHTS:
            try:
                get(weights)
                break
            except EntryNotFoundError:
                if weights == HF_WEIGHTS[-1]:
                    raise
        try:
            get(HF_PREPROCESSOR)
        except EntryNotFoundError:  # optional: the normalisation then comes from the defaults
            pass
    except Exception as error:  # noqa: BLE001 - the hub client raises many kinds (offline, 404, auth, disk)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DownloadError(
            f"could not download the Hugging Face model {repo} ({first}); on a machine with network, "
            f"`huggingface-cli download {repo}` fills the same cache ({hf_cache or 'the Hugging Face cache'}), or "
            f"download the folder anywhere and pass its path instead of the zoo name"
        ) from None
    return config.parent
