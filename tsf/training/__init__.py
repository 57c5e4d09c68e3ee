"""Training: the settings (``config``), the loop (``trainer``), what it reports to (``callbacks``),
the optimiser and schedule (``optim``), what makes a resume exact (``checkpoint``), and stopping
cleanly on a signal (``signals``).

    from tsf.training import Trainer, TrainConfig, LivePlot

Names are imported on first use, so the command line can read ``TrainConfig``'s fields for its
flags without loading torch.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "Trainer": "trainer",
    "NonFiniteLossError": "trainer",
    "TrainingInterrupted": "signals",
    "INTERRUPTED_EXIT_CODE": "signals",
    "stop_on_signals": "signals",
    "Callback": "callbacks",
    "Checkpointer": "callbacks",
    "LivePlot": "callbacks",
    "MetricsLogger": "callbacks",
    "ProgressBar": "callbacks",
    "TensorBoard": "callbacks",
    "default_callbacks": "callbacks",
    "LRSchedule": "optim",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
    "parameter_groups": "optim",
    "BEST": "checkpoint",
    "LAST": "checkpoint",
    "METRICS": "checkpoint",
    "SUMMARY": "checkpoint",
    "ShardedShuffleSampler": "checkpoint",
    "capture_rng_state": "checkpoint",
    "restore_rng_state": "checkpoint",
    "seed_everything": "checkpoint",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
