"""Videos stored as image files, one per frame."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .base import PathLike, VideoInfo, VideoReader, VideoReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageSequenceReader(VideoReader):
    """A video stored as image files, one per frame (the SSv2 frame lists, extracted frames).

    Args:
        frames: the image files in frame order.
        path: what the video is called in messages (its frame folder).
    """

    def __init__(self, frames: Sequence[PathLike], path: Optional[PathLike] = None):
        self._frames = [str(f) for f in frames]
        self.path = str(path if path is not None else (Path(self._frames[0]).parent if self._frames else "<no frames>"))
        if self._frames:
            first = self._load(0)
            height, width = first.shape[:2]
        else:
            height = width = 0
        self.info = VideoInfo(len(self._frames), None, width, height)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        file = self._frames[index]
        try:
            with Image.open(file) as image:
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError as error:
            raise VideoReadError(self.path, "missing", f"frame {index} ({file}) does not exist") from error
        except (UnidentifiedImageError, OSError) as error:
            raise VideoReadError(self.path, "unreadable", f"frame {index} ({file}) is not a readable image ({error})") from error
        return rgb

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = self._check_indices(indices)
        cache = {i: self._load(i) for i in set(wanted)}
        shapes = {a.shape for a in cache.values()}
        if len(shapes) > 1:
            raise VideoReadError(self.path, "unreadable", f"its frames have different sizes {sorted(shapes)}")
        return np.stack([cache[i] for i in wanted]) if wanted else np.zeros((0, self.info.height, self.info.width, 3), np.uint8)

    def frame_times(self) -> np.ndarray:
        raise VideoReadError(self.path, "unreadable", "a folder of frames has no timestamps; drop start/end for it")
