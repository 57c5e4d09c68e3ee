"""Writing manifests: stratified train/val splits of a folder-per-class tree, and ``path,label`` CSVs."""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..outputs import atomic_path, atomic_write_text, refuse_to_overwrite
from .manifest import CSV_COLUMNS, ManifestError, PathLike, VideoSample, read_manifest


def write_split_manifests(root: PathLike, out_dir: PathLike, val_fraction: float = 0.2, seed: int = 0,
                          overwrite: bool = False) -> dict[str, Path]:
    """Stratified train/val CSVs and ``classes.txt`` for a folder-per-class tree.

    Each class's videos are shuffled with ``seed`` and ``round(n * val_fraction)`` of them (at
    least one when the class has two or more) go to val. Paths are written relative to ``out_dir``.

    Args:
        root: ``root/<class>/<video>``.
        out_dir: where ``train.csv``, ``val.csv`` and ``classes.txt`` are written.
        val_fraction: share of each class held out, in ``[0, 1)``.
        seed: shuffling seed.
        overwrite: replace ``train.csv``, ``val.csv`` and ``classes.txt`` in ``out_dir`` when they exist
            (otherwise ``OutputExistsError``).

    Returns:
        ``{"train": path, "val": path, "classes": path}``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: use a fraction in [0, 1)")
    manifest = read_manifest(root)
    if manifest.format != "folders":
        raise ManifestError(f"{root} is not a folder-per-class tree (ROOT/<class>/<video>)")
    out = Path(out_dir)
    refuse_to_overwrite([out / name for name in ("train.csv", "val.csv", "classes.txt")], overwrite, "manifests")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[VideoSample]] = defaultdict(list)
    for sample in manifest.samples:
        by_class[sample.label].append(sample)
    splits: dict[str, list[VideoSample]] = {"train": [], "val": []}
    for label in sorted(by_class):
        samples = by_class[label]
        order = rng.permutation(len(samples))
        held = round(len(samples) * val_fraction)
        if val_fraction > 0 and len(samples) >= 2:
            held = min(max(held, 1), len(samples) - 1)
        splits["val"] += sorted((samples[i] for i in order[:held]), key=lambda s: s.path)
        splits["train"] += sorted((samples[i] for i in order[held:]), key=lambda s: s.path)
    written = {}
    for split, samples in splits.items():
        written[split] = out / f"{split}.csv"
        write_csv(written[split], samples, manifest.classes)
    written["classes"] = out / "classes.txt"
    atomic_write_text(written["classes"], "".join(f"{name}\n" for name in manifest.classes))
    return written


def write_csv(path: PathLike, samples: Sequence[VideoSample], classes: Sequence[str]) -> None:
    """A ``path,label[,start,end]`` CSV (labels by name, paths relative to the CSV's folder).

    Args:
        path: the CSV to write.
        samples: its rows.
        classes: class names, to write labels by name.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    timed = any(s.start is not None or s.end is not None for s in samples)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS if timed else CSV_COLUMNS[:2])
        for s in samples:
            row = [_relative(s.path, folder), classes[s.label]]
            if timed:
                row += ["" if s.start is None else s.start, "" if s.end is None else s.end]
            writer.writerow(row)


def _relative(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return path
