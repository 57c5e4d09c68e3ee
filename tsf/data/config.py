"""``VideoDataConfig``: how training reads a data folder. Plain data (no torch), so the command
line builds its flags from these fields without loading the library."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..options import option
from .readers import READERS
from .sampling import SAMPLINGS


@dataclass
class VideoDataConfig:
    """How ``python -m tsf train`` reads a data folder (``tsf.data.VideoClipDataset`` settings).
    Frames per clip and crop size are the model's (``--num-frames``/``--img-size`` change both)."""

    sampling_rate: float = option(1.0, "video frames per clip frame in dense sampling (paper, Kinetics 8x224: 32 with --target-fps 30; the synthetic videos: 1)")
    target_fps: float = option(0.0, "count --sampling-rate at this frame rate, converting from each video's own (the official recipes: 30); 0: in each video's own frames")
    sampling: str = option("dense", "dense (a window of num_frames x sampling_rate frames) or uniform (num_frames spread over the whole video, as for SSv2)", choices=SAMPLINGS)
    short_side_range: tuple[int, ...] = option((), "training scale jitter: the shorter side is resized to a random length in [MIN, MAX] before the random crop (paper: 256 320 at 224 px, 448 512 at 448); none given: crop size x (256, 320) / 224")
    inverse_scale_jitter: bool = option(False, "draw that length as 1 / uniform(1/MAX, 1/MIN) rather than uniformly (the official SSv2 configs' INV_UNIFORM_SAMPLE)")
    hflip: bool = option(False, "random horizontal flips in training (Kinetics: yes; SSv2: no, it has left/right classes)")
    reader: str = option("auto", "video decoder: auto (decord, falling back to PyAV), decord, torchcodec or pyav (the same frames; README: which reader)", choices=READERS)
    max_bad_fraction: float = option(0.05, "stop when more than this fraction of the videos fails to decode (a broken dataset rather than a few broken files)")
    val_temporal_clips: int = option(1, "temporal clips per validation video during training (tsf evaluate runs the full protocol)")
    val_spatial_crops: int = option(1, "spatial crops per validation video during training")

    def __post_init__(self):
        self.short_side_range = tuple(int(v) for v in self.short_side_range)  # lists from JSON/YAML
        if len(self.short_side_range) not in (0, 2):
            raise ValueError(f"short_side_range={self.short_side_range}: give two lengths MIN MAX (or none for the default)")

    def to_dict(self) -> dict:
        return asdict(self)
