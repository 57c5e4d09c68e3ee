"""Video data for tsf: readers, manifests, sampling, transforms, the pre-flight check and the
synthetic default data.

    from tsf import data
    manifest = data.read_manifest("data/synthetic/motion/train.csv")
    dataset = data.VideoClipDataset(manifest, num_frames=8, crop_size=32)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    x = data.normalize(batch["clip"].to(device), model.config.mean, model.config.std)

Names are imported on first use, so ``python -m tsf data --help`` does not load torch or the decoders.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "BadVideosError": "dataset",
    "VideoClipDataset": "dataset",
    "check_manifest": "check",
    "check_video": "check",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "VideoSample": "manifest",
    "load_classes": "manifest",
    "read_manifest": "manifest",
    "write_split_manifests": "splits",
    "VideoInfo": "readers",
    "VideoReadError": "readers",
    "open_video": "readers",
    "read_video_frames": "readers",
    "video_info": "readers",
    "clip_indices": "sampling",
    "VideoDataConfig": "config",
    "build_video_datasets": "folder",
    "data_folder_classes": "folder",
    "video_dataset": "folder",
    "example_video": "examples",
    "ensure_synthetic": "synth",
    "generate": "synth",
    "normalize": "transforms",
    "ShardStream": "stream",
    "ShardVideos": "stream",
    "ShardSource": "sources",
    "write_shards": "shards",
    "compare_readers": "compare",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
