"""What one benchmark run measures: ``BenchSettings``. Plain data (no torch), so ``python -m tsf
bench --help`` lists the sections without loading the library."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SECTIONS = ("inference", "train", "data")


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run measures.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``tsf.runtime.resolve_device``).
        precision: ``auto`` (fp32 on CPU, bf16 autocast on CUDA), ``fp32``, ``bf16`` or ``fp16``
            (``tsf.runtime.resolve_precision``); both models run under the same autocast.
        preset: the model preset (``tsf.PRESETS``).
        weights: benchmark these weights (anything ``tsf.from_pretrained`` reads) instead of a
            seeded random init.
        batch_sizes: inference batch sizes.
        train_batch: training batch (None: 1 on CPU, 8 on CUDA).
        repeats: timed repetitions per measurement; medians are reported.
        warmup: untimed runs before timing (training uses at least 2: the first AdamW steps allocate).
        sections: a subset of ``SECTIONS``.
        compile: CUDA only: also time tsf under ``torch.compile``.
        threads: CPU threads (None: torch's default, one per core).
        agreement_clips: clips for the int8-vs-fp32 agreement (0: skip it).
        hf: compare with the transformers baseline.
    """

    device: str = "auto"
    precision: str = "auto"
    preset: str = "base_8x224"
    weights: Optional[str] = None
    batch_sizes: tuple[int, ...] = (1, 4)
    train_batch: Optional[int] = None
    repeats: int = 3
    warmup: int = 1
    sections: tuple[str, ...] = SECTIONS
    compile: bool = False
    threads: Optional[int] = None
    agreement_clips: int = 8
    hf: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, not {self.repeats}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive, not {list(self.batch_sizes)}")
