"""Spatial transforms of uint8 clips ``(3, T, H, W)`` and normalisation on the model's device.

Clips stay uint8 through loading (a quarter of the bytes of float32 through worker queues,
pinned memory and the host-to-device copy); ``normalize`` turns a batch into floats where the
model runs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import crop_offsets


def short_side_scale(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size`` (bilinear, antialiased when shrinking).

    Args:
        clip: uint8 ``(3, T, H, W)``.
        size: new length of the shorter side.
    """
    height, width = clip.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new_size == (height, width):
        return clip
    frames = clip.transpose(0, 1)  # (T, 3, H, W): interpolate works on batches of images
    resized = F.interpolate(frames, size=new_size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return resized.transpose(0, 1)


def crop(clip: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """The ``size x size`` square of every frame at ``(top, left)``.

    Args:
        clip: ``(3, T, H, W)``.
        top: first row.
        left: first column.
        size: side of the square.
    """
    return clip[..., top:top + size, left:left + size]


def random_crop(clip: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A square crop at a random place (the same for every frame).

    Args:
        clip: ``(3, T, H, W)`` with both sides at least ``size``.
        size: side of the square.
        rng: draws the place.
    """
    height, width = clip.shape[-2:]
    return crop(clip, int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1)), size)


def spatial_crop(clip: torch.Tensor, size: int, index: int, num_crops: int) -> torch.Tensor:
    """Crop ``index`` of ``num_crops`` spread along the longer side (centred on the shorter);
    one crop is the centre crop, three are the official test crops.

    Args:
        clip: ``(3, T, H, W)`` with both sides at least ``size``.
        size: side of the square.
        index: which crop, ``0 <= index < num_crops``.
        num_crops: crops per clip.
    """
    height, width = clip.shape[-2:]
    if height > width:
        top, left = crop_offsets(height, size, num_crops)[index], (width - size) // 2
    else:
        top, left = (height - size) // 2, crop_offsets(width, size, num_crops)[index]
    return crop(clip, top, left, size)


def horizontal_flip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror every frame left to right (keep it off for label sets with left/right classes)."""
    return clip.flip(-1)


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: Optional[torch.dtype] = torch.float32) -> torch.Tensor:
    """uint8 clips to the model's input: ``(clip / 255 - mean) / std`` per channel.

    Run it on the device the model is on, after the uint8 batch got there.

    Args:
        clip: uint8 ``(3, T, H, W)`` or a batch ``(B, 3, T, H, W)``, on any device.
        mean: per-channel mean of ``[0, 1]`` pixel values (``model.config.mean``).
        std: per-channel standard deviation (``model.config.std``).
        dtype: floating dtype of the result.

    Raises:
        TypeError: the clip is not uint8 (it would be normalised twice or on the wrong scale).
        ValueError: the channel axis (``-4``) does not have ``len(mean)`` entries.
    """
    if clip.dtype != torch.uint8:
        raise TypeError(f"normalize expects a uint8 clip (0..255) as the datasets return it; got {clip.dtype}. "
                        f"A float clip is already normalised or on another scale: convert it with "
                        f"(clip * 255).round().to(torch.uint8) if it holds 0..1 values")
    if clip.dim() not in (4, 5) or clip.shape[-4] != len(mean) or len(mean) != len(std):
        raise ValueError(f"normalize expects (3, T, H, W) or (B, 3, T, H, W) with {len(mean)} channels matching "
                         f"mean/std; got shape {tuple(clip.shape)}, {len(mean)} means, {len(std)} stds")
    shape = (len(mean), 1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=dtype, device=clip.device).view(shape) * 255
    std_t = torch.as_tensor(std, dtype=dtype, device=clip.device).view(shape) * 255
    return (clip.to(dtype) - mean_t) / std_t
