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

import importlib

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
    "write_split_manifests": "manifest",
    "VideoInfo": "readers",
    "VideoReadError": "readers",
    "open_video": "readers",
    "read_video_frames": "readers",
    "video_info": "readers",
    "clip_indices": "sampling",
    "example_video": "examples",
    "ensure_synthetic": "synth",
    "generate": "synth",
    "normalize": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tsf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
