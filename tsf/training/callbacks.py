"""Callbacks: everything the training loop reports to (progress bar, ``metrics.jsonl`` and
``summary.json``, checkpoints, TensorBoard, live curves). Add your own by subclassing ``Callback``."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..runtime import PathLike
from .checkpoint import BEST, LAST, METRICS, SUMMARY, atomic_copy
from .config import TrainConfig
from .signals import TrainingInterrupted

if TYPE_CHECKING:  # the trainer imports the callbacks; they need it for type hints only
    from .trainer import Trainer


class Callback:
    """Hooks into ``Trainer.fit``; every process calls them (check ``trainer.is_main`` for
    rank-0-only work). Records are the dicts written to ``metrics.jsonl``."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_log(self, trainer: Trainer, record: dict) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None: ...

    def on_train_end(self, trainer: Trainer, summary: dict) -> None: ...

    def on_interrupt(self, trainer: Trainer) -> None:
        """A stop signal: the run ends after this step (``on_error`` follows with ``TrainingInterrupted``)."""

    def on_error(self, trainer: Trainer, error: BaseException) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over optimiser steps with the latest loss and top-1 (rank 0)."""

    def __init__(self):
        self.bar = None

    def on_train_start(self, trainer):
        if trainer.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step", dynamic_ncols=True)

    def on_step_end(self, trainer):
        if self.bar is not None:
            self.bar.update(trainer.step - self.bar.n)

    def on_log(self, trainer, record):
        if self.bar is not None:
            self.bar.set_postfix(epoch=record["epoch"], loss=f"{record['loss']:.3f}", top1=f"{record['top1']:.2f}",
                                 lr=f"{record['lr']:.2e}", refresh=False)

    def on_epoch_end(self, trainer, record):
        if self.bar is not None and "val_top1" in record:
            self.bar.write(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} top-1 {record['train_top1']:.3f}"
                           f" | val loss {record['val_loss']:.4f} top-1 {record['val_top1']:.3f} top-5 {record['val_top5']:.3f}")

    def on_train_end(self, trainer, summary):
        self._close()

    def on_error(self, trainer, error):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLogger(Callback):
    """``metrics.jsonl`` (one JSON object per line: ``kind`` = start, train, epoch, resume,
    interrupted (a stop signal; ``signal`` and ``checkpoint`` say which and where) or error)
    and ``summary.json`` at the end, in the run folder (rank 0).

    On resume, lines logged after the checkpoint's step (by the run that was killed) are dropped,
    so the file reads as one uninterrupted run.
    """

    def __init__(self, run_dir: PathLike):
        self.path = Path(run_dir) / METRICS
        self.summary_path = Path(run_dir) / SUMMARY

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer):
        if not trainer.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if trainer.step > 0:
            self._rewind(trainer.step)
            self.write({"kind": "resume", "step": trainer.step, "epoch": trainer.epoch, "time": time.time()})
        else:
            self.path.unlink(missing_ok=True)
            self.write({"kind": "start", **trainer.describe(), "time": time.time()})

    def _rewind(self, step: int) -> None:
        kept = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by the kill
                    continue
                if record.get("step", 0) <= step:
                    kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def on_log(self, trainer, record):
        if trainer.is_main:
            self.write(record)

    def on_epoch_end(self, trainer, record):
        if trainer.is_main:
            self.write(record)

    def on_train_end(self, trainer, summary):
        if trainer.is_main:
            tmp = self.summary_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            os.replace(tmp, self.summary_path)

    def on_error(self, trainer, error):
        if trainer.is_main and isinstance(error, TrainingInterrupted):
            self.write({"kind": "interrupted", "step": error.step, "epoch": error.epoch, "signal": error.signal_name,
                        "checkpoint": error.checkpoint, "time": time.time()})
        elif trainer.is_main:
            self.write({"kind": "error", "step": trainer.step, "epoch": trainer.epoch, "error": str(error), "time": time.time()})


class Checkpointer(Callback):
    """``last.pt`` every ``every`` steps, at each epoch end and on a stop signal, ``best.pt`` when
    validation top-1 improves (a tie: when the loss falls); atomic writes, so a kill never leaves a torn file.
    Every process must run it (the RNG states of all ranks are gathered into the file); rank 0 writes."""

    def __init__(self, run_dir: PathLike, every: int):
        self.run_dir = Path(run_dir)
        self.every = every

    def on_step_end(self, trainer):
        # the epoch-end checkpoint follows right after an epoch's last step
        if self.every and trainer.step % self.every == 0 and trainer.step_in_epoch < trainer.steps_per_epoch:
            trainer.save_checkpoint(self.run_dir / LAST)

    def on_epoch_end(self, trainer, record):
        trainer.save_checkpoint(self.run_dir / LAST)
        if record.get("is_best") and trainer.is_main:
            atomic_copy(self.run_dir / LAST, self.run_dir / BEST)

    def on_interrupt(self, trainer):
        if trainer.checkpoint_here() != self.run_dir / LAST:  # not written at this step already
            trainer.save_checkpoint(self.run_dir / LAST)


class TensorBoard(Callback):
    """TensorBoard event files in the run folder, beside ``metrics.jsonl`` (rank 0): every number
    of the train lines (``train/loss``, ``lr``, ``top1``, ``clips_per_s``, ``data_wait``,
    ``bad_videos``, ``grad_norm``) and of the epoch lines (``val/loss``, ``top1``, ``top5``,
    ``mean_class_accuracy``; ``epoch/train_loss``...) against the optimiser step. A resumed run
    writes a new event file that hides what the run it continues logged after its checkpoint
    (TensorBoard's ``purge_step``), so each step shows once. Watch with ``tensorboard --logdir runs/``.

    Args:
        log_dir: the folder of the event files (the run folder).
    """

    def __init__(self, log_dir: PathLike):
        self.log_dir = Path(log_dir)
        self.writer = None

    def on_train_start(self, trainer):
        if not trainer.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard") from error
        # steps after the resumed checkpoint (or, in a fresh run, an earlier attempt's) are hidden
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.step + 1, flush_secs=30)

    def _add(self, record: dict, tag) -> None:
        for key, value in record.items():
            if key not in ("step", "epoch", "time", "elapsed_s") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, global_step=record["step"])

    def on_log(self, trainer, record):
        if self.writer is not None:
            self._add(record, lambda key: f"train/{key}")

    def on_epoch_end(self, trainer, record):
        if self.writer is not None:
            self._add(record, lambda key: f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}")
            self.writer.flush()

    def on_train_end(self, trainer, summary):
        self._close()

    def on_error(self, trainer, error):
        self._close()

    def _close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class LivePlot(Callback):
    """Loss and top-1 curves, redrawn in place in a Jupyter notebook as training runs; saved as an
    image at the end when ``path`` is given (outside notebooks only the image is made).

    Args:
        path: image file to write at the end of training (e.g. ``RUN_DIR/curves.png``).
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = Path(path) if path else None
        self.train: list[tuple[int, float, float]] = []  # step, loss, top-1
        self.val: list[tuple[int, float, float]] = []
        self.figure = None
        self.handle = None

    def on_log(self, trainer, record):
        if trainer.is_main:
            self.train.append((record["step"], record["loss"], record["top1"]))
            self._draw()

    def on_epoch_end(self, trainer, record):
        if trainer.is_main and "val_top1" in record:
            self.val.append((record["step"], record["val_loss"], record["val_top1"]))
            self._draw()

    def on_train_end(self, trainer, summary):
        if trainer.is_main and self.path is not None and self.figure is not None:
            self.figure.savefig(self.path, dpi=120, bbox_inches="tight")

    def _draw(self):
        import matplotlib.pyplot as plt

        if self.figure is None:
            self.figure, _ = plt.subplots(1, 2, figsize=(10, 3.2))
            plt.close(self.figure)  # shown through the display handle only, not again by the backend
        from matplotlib.ticker import MaxNLocator

        loss_ax, acc_ax = self.figure.axes
        for ax, column, title in ((loss_ax, 1, "loss"), (acc_ax, 2, "top-1")):
            ax.clear()
            for points, label in ((self.train, "train"), (self.val, "val")):
                if points:  # a series of one point (a short run logs one train point, at the end) gets a big marker
                    ax.plot([p[0] for p in points], [p[column] for p in points], label=label,
                            marker="o" if label == "val" or len(points) == 1 else ".")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, never 2.25
            ax.set_xlabel("step")
            ax.set_title(title)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best")  # where it covers no point (a corner hid the last train point)
        acc_ax.set_ylim(0, 1.02)
        self.figure.tight_layout()
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        if self.handle is None:
            self.handle = display(self.figure, display_id=True)
        else:
            self.handle.update(self.figure)


def default_callbacks(config: TrainConfig, run_dir: Optional[PathLike]) -> list[Callback]:
    """Progress bar (when ``config.progress``), and with a run folder: metrics logging, checkpoints
    and (when ``config.tensorboard``) TensorBoard event files."""
    callbacks: list[Callback] = [ProgressBar()] if config.progress else []
    if run_dir is not None:
        callbacks += [MetricsLogger(run_dir), Checkpointer(run_dir, config.checkpoint_every)]
        if config.tensorboard:
            callbacks.append(TensorBoard(run_dir))
    return callbacks
