"""Datasets from a data folder (``train.csv``, ``val.csv``, ``classes.txt``, as ``tsf data synth`` and
``tsf data manifest`` write it): the training and validation sets of a run, and evaluation views."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from torch import nn
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from ..runtime import PathLike
from .config import VideoDataConfig
from .dataset import VideoClipDataset
from .manifest import load_classes, read_manifest
from .sources import ShardSource, is_shard_source
from .stream import ShardStream, ShardVideos


def data_folder_classes(root: PathLike) -> list[str]:
    """The class names of a data folder (or of shards: their ``shards.json``, ``tsf.data.sources``),
    after checking that it holds what training reads."""
    if is_shard_source(root):
        return ShardSource(root).classes
    root = Path(root)
    for name in ("classes.txt", "train.csv"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} does not exist: --data needs a folder with train.csv, val.csv and classes.txt "
                f"(make one with `python -m tsf data synth` or `python -m tsf data manifest`)"
            )
    return list(load_classes(root / "classes.txt"))


def build_video_datasets(data_dir: PathLike, model_config, data: VideoDataConfig, seed: int = 0,
                         overfit_batch: int = 0, batch_size: int = 1, num_workers: int = 0) -> tuple[Dataset, Optional[Dataset]]:
    """Train and validation datasets from a data folder (``train.csv``, ``val.csv``, ``classes.txt``),
    or from shards (``tsf data shard`` writes them; a shard folder, or a brace pattern of shard paths
    or URLs: ``tsf.data.sources``): training then streams (``ShardStream``, split across ranks and
    ``num_workers`` workers in batches of ``batch_size``) and validation reads the ``val`` shards
    by offset (``ShardVideos``).

    Args:
        data_dir: the folder (as ``tsf data synth`` / ``tsf data manifest`` write it), or shards.
        model_config: supplies frames per clip and the crop size.
        data: sampling, flips, decoder.
        seed: augmentation seed (per epoch and video, so it resumes exactly).
        overfit_batch: if > 0, both sets are the first ``overfit_batch`` training clips without
            augmentation (the one-batch sanity check).

    Returns:
        ``(train, val)``; val is None when the folder has no ``val.csv``.
    """
    clip_options = dict(num_frames=model_config.num_frames, sampling_rate=data.sampling_rate, sampling=data.sampling,
                        crop_size=model_config.img_size, reader=data.reader, max_bad_fraction=data.max_bad_fraction,
                        target_fps=data.target_fps or None)
    if is_shard_source(data_dir):
        if overfit_batch:
            raise ValueError(f"--overfit-batch reads a data folder's files; {data_dir} is shards")
        source = ShardSource(data_dir)
        train = ShardStream(source, "train", batch_size=batch_size, num_workers=num_workers, seed=seed,
                            short_side_range=data.short_side_range or None, inverse_scale_jitter=data.inverse_scale_jitter,
                            hflip=data.hflip, **clip_options)
        val = None
        if "val" in source.index["splits"]:
            val = ShardVideos(source, "val", train=False, num_temporal_clips=data.val_temporal_clips,
                              num_spatial_crops=data.val_spatial_crops, seed=seed, **clip_options)
        return train, val
    classes = data_folder_classes(data_dir)
    root = Path(data_dir)

    def dataset(split: str, train: bool, temporal_clips: int = 1, spatial_crops: int = 1):
        manifest = read_manifest(root / f"{split}.csv", classes=classes)
        return VideoClipDataset(
            manifest, num_frames=model_config.num_frames, sampling_rate=data.sampling_rate, sampling=data.sampling,
            train=train, crop_size=model_config.img_size, short_side_range=data.short_side_range or None,
            inverse_scale_jitter=data.inverse_scale_jitter, hflip=data.hflip and train,
            num_temporal_clips=temporal_clips, num_spatial_crops=spatial_crops, reader=data.reader,
            max_bad_fraction=data.max_bad_fraction, seed=seed, target_fps=data.target_fps or None,
        )

    if overfit_batch:
        fixed = dataset("train", train=False)
        if len(fixed) < overfit_batch:
            raise ValueError(f"--overfit-batch needs {overfit_batch} clips; {root / 'train.csv'} has {len(fixed)}")
        batch = Subset(fixed, range(overfit_batch))
        return batch, batch
    val = None
    if (root / "val.csv").is_file():
        val = dataset("val", train=False, temporal_clips=data.val_temporal_clips, spatial_crops=data.val_spatial_crops)
    return dataset("train", train=True), val


# flags that --resume accepts: they change how the run executes, not what it computes


def video_dataset(model: nn.Module, root: PathLike, split: str, temporal_clips: Union[int, str], spatial_crops: int,
                  sampling_rate: float, sampling: str, target_fps: Optional[float],
                  max_bad_fraction: float = 0.05) -> Dataset:
    """The evaluation views of ``root/<split>.csv`` (or of shards' split) at the model's frames and
    crop size; the data's classes must be the model's (by name when the model has names, and by count).

    Raises:
        DataError: the folder lacks the split or classes.txt, or its classes are not the model's.
    """
    shards = ShardSource(root) if is_shard_source(root) else None  # its split read by offset
    if shards is None:
        root = Path(root)
        csv_path, classes_path = root / f"{split}.csv", root / "classes.txt"
        for path in (csv_path, classes_path):
            if not path.is_file():
                raise DataError(f"{path} does not exist; --data needs <split>.csv and classes.txt "
                                f"(written by `python -m tsf data synth` / `tsf data manifest`), or shards.json")
        classes = list(load_classes(classes_path))
    else:
        classes_path, classes = shards.index_name, shards.classes
    config = model.config
    if config.class_names is not None and list(config.class_names) != classes:
        differ = [f"{i}: model {m!r} vs data {d!r}" for i, (m, d) in enumerate(zip(config.class_names, classes)) if m != d]
        raise DataError(
            f"the model's {len(config.class_names)} classes are not {classes_path}'s {len(classes)}"
            + (f" (first differences: {'; '.join(differ[:3])})" if differ else "")
            + "; evaluate on data with the model's label set, or fine-tune it on this one (tsf train --init)"
        )
    if config.num_classes != len(classes):
        raise DataError(f"{classes_path} lists {len(classes)} classes but the model predicts {config.num_classes}: "
                        f"its scores would be meaningless; evaluate on data with the model's label set, or "
                        f"fine-tune it on this one first (tsf train --init CKPT --data {root})")
    options = dict(num_frames=config.num_frames, sampling_rate=sampling_rate, sampling=sampling, train=False,
                   crop_size=config.img_size, num_temporal_clips=temporal_clips, num_spatial_crops=spatial_crops,
                   target_fps=target_fps, max_bad_fraction=max_bad_fraction)
    if shards:
        return ShardVideos(shards, split, **options)
    return VideoClipDataset(read_manifest(csv_path, classes=classes), **options)
