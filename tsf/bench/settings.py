"""What one benchmark run measures: ``BenchSettings``. Plain data (no torch), so ``python -m tsf
bench --help`` lists the sections without loading the library."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SECTIONS = ("inference", "train", "data", "agreement")
# inference paths: the precision each stands for; every tsf row has a transformers row at its precision
PATHS = ("fp32", "bf16", "int8", "onnxruntime")
QUICK = {"sections": ("inference",), "batch_sizes": (1,), "repeats": 3, "agreement_clips": 4}
FULL = {"sections": SECTIONS, "batch_sizes": (1, 4), "repeats": 5, "agreement_clips": 8}


@dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run measures.

    The default is the quick run a user starts to learn which precision to use on a machine
    (``python -m tsf bench``: inference at batch 1 for every path that applies, a few minutes on
    2 cores); ``full=True`` (``--full``) measures everything (batches 1 and 4, the training and
    data sections, the explicit-attention, dynamic-int8 and onnxruntime-int8 rows, bf16 even on
    CPUs without bf16 units). Fields left at None take the run's value (``QUICK`` / ``FULL``).

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``tsf.runtime.resolve_device``).
        precision: ``auto``: every path of ``paths`` that applies; ``fp32`` or ``bf16``: only that
            precision's rows (and fp32's, the reference of every accuracy check); on CUDA the
            autocast of the inference rows (default bf16).
        preset: the model preset (``tsf.PRESETS``).
        weights: benchmark these weights (anything ``tsf.from_pretrained`` reads) instead of a
            seeded random init.
        batch_sizes: inference batch sizes.
        train_batch: training batch (None: 1 on CPU, 8 on CUDA).
        repeats: timed repetitions per measurement; medians are reported.
        warmup: untimed runs before timing (training uses at least 2: the first AdamW steps allocate).
        sections: a subset of ``SECTIONS``.
        paths: CPU inference paths, a subset of ``PATHS`` (default: all that this machine and
            installation offer).
        full: the full run (see above).
        compile: CUDA only: also time tsf under ``torch.compile``.
        threads: CPU threads (None: torch's default, one per core).
        agreement_clips: noise clips for each path's agreement with fp32 (0: skip it).
        agreement_data: the ``agreement`` section's data folder (default: the one the ``weights``'
            training run used); the section runs only with ``weights`` (``tsf.bench.agreement``).
        hf: compare with the transformers baseline.
    """

    device: str = "auto"
    precision: str = "auto"
    preset: str = "base_8x224"
    weights: Optional[str] = None
    batch_sizes: Optional[tuple[int, ...]] = None
    train_batch: Optional[int] = None
    repeats: Optional[int] = None
    warmup: int = 1
    sections: Optional[tuple[str, ...]] = None
    paths: Optional[tuple[str, ...]] = None
    full: bool = False
    compile: bool = False
    threads: Optional[int] = None
    agreement_clips: Optional[int] = None
    agreement_data: Optional[str] = None
    hf: bool = True

    def __post_init__(self):
        defaults = FULL if self.full else QUICK
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("sections", "batch_sizes", "paths"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
        unknown = sorted(set(self.paths or ()) - set(PATHS))
        if unknown:
            raise ValueError(f"unknown paths {unknown}; choose from {', '.join(PATHS)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision={self.precision!r}: choose auto, fp32, bf16 (or fp16 on CUDA)")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, not {self.repeats}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be positive, not {list(self.batch_sizes)}")
        if self.agreement_clips < 0:
            raise ValueError(f"agreement clips must be >= 0, not {self.agreement_clips}")
