"""The training loop: a small, model-agnostic ``Trainer`` with callbacks, from a laptop CPU to
many GPUs (``torchrun``).

The loop knows nothing about TimeSformer or videos: it trains any ``nn.Module`` that maps a
float clip batch to logits, on any ``Dataset`` whose items are dicts
``{"clip": uint8 (3, T, H, W), "label": int, ...}`` (as ``tsf.data.VideoClipDataset`` yields).
Clips stay uint8 until they are on the device, where they are normalised.

Everything a run needs to continue lives in its checkpoints (model, optimiser, schedule, grad
scaler, the RNG states of every library on every process, the sampler's epoch and position, the
configs), so a run killed at any moment resumes; on CPU with a fixed seed it ends with the same
weights, bit for bit, as a run that was never interrupted. The data order does not depend on the
number of processes (``ShardedShuffleSampler``), so runs on different world sizes are comparable.

In Python (a notebook)::

    classes = data_folder_classes(Path("data/synthetic/appearance"))
    model = build_model("tiny", class_names=classes)           # or build_model(init="best.pt", ...)
    train_set, val_set = build_video_datasets("data/synthetic/appearance", model.config, VideoDataConfig())
    config = TrainConfig(epochs=10, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.05,
                         schedule="cosine", warmup_epochs=1, grad_clip=1.0)
    trainer = Trainer(model, config, train_set, val_set, run_dir="runs/appearance")
    trainer.add_callback(LivePlot("runs/appearance/curves.png"))
    summary = trainer.fit()

(``build_model`` is in ``tsf.build``; ``data_folder_classes``, ``build_video_datasets`` and
``VideoDataConfig`` in ``tsf.data``.) ``python -m tsf train`` (``tsf.cli.train``) does the same
from flags or a recipe.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .. import runtime
from ..data import normalize
from ..errors import TsfError
from ..evaluate import evaluate_dataset
from ..runtime import PathLike
from ..weights import atomic_save, load_checkpoint_file, model_checkpoint
from .callbacks import Callback, default_callbacks
from .checkpoint import (BEST, LAST, ShardedShuffleSampler, capture_rng_state, restore_rng_state, seed_everything,
                         world_size_changed)
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler
from .signals import TrainingInterrupted, received_signal, stop_on_signals, stop_requested


class NonFiniteLossError(TsfError, RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


class Trainer:
    """Trains ``model`` on ``train_dataset`` per ``config``; validates on ``val_dataset`` after
    epochs; reports to callbacks (``default_callbacks``: progress bar, ``metrics.jsonl``,
    ``last.pt``/``best.pt`` in ``run_dir``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group, wraps the model in
    DistributedDataParallel, shards the data, all-reduces metrics; rank 0 logs and writes.

    Args:
        model: maps a normalised float clip batch ``(B, 3, T, H, W)`` to logits ``(B, classes)``.
            Its ``config`` (a ``TimeSformerConfig``) supplies the normalisation and goes into the
            checkpoints; other models need ``normalization``.
        config: the training settings.
        train_dataset: items ``{"clip": uint8 (3, T, H, W), "label": int, ...}``; ``set_epoch(e)``
            is called before each epoch when the dataset has it.
        val_dataset: as ``train_dataset`` plus ``"index"`` (video id) and ``"view"`` when it yields
            several views per video; None: no validation and no ``best.pt``.
        run_dir: folder for metrics and checkpoints; None keeps nothing on disk.
        callbacks: replaces ``default_callbacks(config, run_dir)``; more via ``add_callback``.
        run_info: plain data stored in the checkpoints beside the configs (how to rebuild the
            datasets on resume, for instance).
        normalization: ``(mean, std)`` per channel, for models without ``config.mean``/``config.std``.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_dataset: Dataset,
        val_dataset: Optional[Dataset] = None,
        run_dir: Optional[PathLike] = None,
        callbacks: Optional[Sequence[Callback]] = None,
        run_info: Optional[dict] = None,
        normalization: Optional[tuple[Sequence[float], Sequence[float]]] = None,
    ):
        self.dist = runtime.setup(config.device)
        # from here on: the global batch and lr this world size executes (config.for_world)
        self.config = config = config.for_world(self.dist.world_size)
        self.device = self.dist.device
        self.precision = runtime.resolve_precision(config.precision, self.device, purpose="training")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_info = dict(run_info or {})
        self.callbacks = list(default_callbacks(config, run_dir) if callbacks is None else callbacks)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        if normalization is None:
            model_config = getattr(model, "config", None)
            if model_config is None or not hasattr(model_config, "mean"):
                raise ValueError(f"{type(model).__name__} has no config.mean/config.std: pass normalization=(mean, std)")
            normalization = (model_config.mean, model_config.std)
        self.mean, self.std = (tuple(map(float, v)) for v in normalization)

        seed_everything(config.seed + self.dist.rank)
        self.model = model.to(self.device)
        if config.freeze_backbone:
            head = getattr(model, "head", None)
            if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
                raise ValueError(f"freeze_backbone needs a model with a .head holding parameters; {type(model).__name__} has none")
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("head."))
        if config.gradient_checkpointing:
            if not hasattr(model, "set_gradient_checkpointing"):
                raise ValueError(f"gradient_checkpointing needs model.set_gradient_checkpointing(); {type(model).__name__} has none")
            model.set_gradient_checkpointing(True)
        self.optimizer = build_optimizer(model, config, self.device)
        self.wrapped = model
        if self.dist.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        # an iterable dataset (tsf.data.ShardStream) splits itself across ranks: per_rank(), set_epoch(epoch, start)
        streaming = isinstance(train_dataset, IterableDataset)
        self.sampler = None if streaming else ShardedShuffleSampler(len(train_dataset), self.dist.rank,
                                                                    self.dist.world_size, config.seed)
        self.clips_per_step = config.batch_size * config.grad_accum_steps  # per process
        self.steps_per_epoch = (train_dataset if streaming else self.sampler).per_rank() // self.clips_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(train_dataset)} clips, fewer than one global batch of "
                f"{self.clips_per_step * self.dist.world_size} (batch_size {config.batch_size} x grad_accum_steps "
                f"{config.grad_accum_steps} x {self.dist.world_size} processes); lower --batch-size, or --global-batch "
                f"when it is set"
            )
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        self.step = 0  # optimiser steps taken
        self.epoch = 0  # the epoch in progress
        self.step_in_epoch = 0
        self.best_val_top1: Optional[float] = None
        self.best_val_loss: Optional[float] = None  # breaks top-1 ties
        self.best_epoch: Optional[int] = None
        self.elapsed_s = 0.0  # training time over all sessions of this run
        self.last_record: dict = {}
        self._stop_agreed = False  # a process received a stop signal (all-reduced with the step's metrics)
        self._saved: tuple = ()  # (path, position) of the last save_checkpoint

    # -- public helpers ------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def global_batch(self) -> int:
        return self.clips_per_step * self.dist.world_size

    @property
    def finished(self) -> bool:
        """Every step taken and the last epoch closed (a stop can leave it open: steps done, not validated)."""
        return self.step >= self.total_steps and self.step_in_epoch == 0

    def add_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def describe(self) -> dict:
        """The run's shape, as logged in the first line of ``metrics.jsonl``."""
        return {
            "device": str(self.device), "precision": self.precision, "world_size": self.dist.world_size,
            "batch_size": self.config.batch_size, "grad_accum_steps": self.config.grad_accum_steps,
            "global_batch": self.global_batch, "lr": self.config.lr, "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps, "train_clips": len(self.train_dataset),
            "val_clips": len(self.val_dataset) if self.val_dataset is not None else 0,
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
        }

    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A training checkpoint: the model's tsf checkpoint plus everything needed to resume.
        Collective under DDP (gathers every rank's RNG state): call it on every process."""
        rng = runtime.all_gather_objects(capture_rng_state())
        config = getattr(self.model, "config", None)
        if hasattr(config, "to_dict"):
            checkpoint = model_checkpoint(self.model)
        else:
            checkpoint = {"state_dict": self.model.state_dict()}
        checkpoint.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng,
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            best_val_top1=self.best_val_top1,
            best_val_loss=self.best_val_loss,
            best_epoch=self.best_epoch,
            elapsed_s=self.elapsed_s,
            world_size=self.dist.world_size,
            train_config=self.config.to_dict(),
            run_info=self.run_info,
        )
        return checkpoint

    def save_checkpoint(self, path: PathLike) -> None:
        """Write ``state_dict()`` atomically (rank 0); collective under DDP."""
        checkpoint = self.state_dict()
        if self.is_main:
            atomic_save(checkpoint, path)
        self._saved = (Path(path), (self.step, self.epoch, self.step_in_epoch))

    def checkpoint_here(self) -> Optional[Path]:
        """The file ``save_checkpoint`` wrote at this very point of the run (step, epoch, position in
        it), or None: what a stop keeps without writing it again."""
        if self._saved and self._saved[1] == (self.step, self.epoch, self.step_in_epoch):
            return self._saved[0]
        return None

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue from a training checkpoint of this run (same model, config and data)."""
        missing = [k for k in ("state_dict", "optimizer", "scheduler", "rng", "step", "epoch", "step_in_epoch", "world_size")
                   if k not in checkpoint]
        if missing:
            raise ValueError(f"not a training checkpoint (missing {missing}): only last.pt/best.pt of a run resume")
        if checkpoint["world_size"] != self.dist.world_size:
            raise ValueError(world_size_changed(checkpoint["world_size"], self.dist.world_size))
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.epoch = checkpoint["step"], checkpoint["epoch"]
        self.step_in_epoch = checkpoint["step_in_epoch"]
        self.best_val_top1, self.best_val_loss = checkpoint["best_val_top1"], checkpoint["best_val_loss"]
        self.best_epoch = checkpoint["best_epoch"]
        self.elapsed_s = checkpoint["elapsed_s"]
        restore_rng_state(checkpoint["rng"][self.dist.rank])

    def resume(self, path: PathLike) -> None:
        """Load ``path`` (a checkpoint, or a run folder: its ``last.pt``) to continue training."""
        path = Path(path)
        self.load_state_dict(load_checkpoint_file(path / LAST if path.is_dir() else path))

    # -- training ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``total_steps``; returns the summary (also written to ``summary.json``).

        SIGTERM, SIGINT and SIGUSR1 stop it after a whole optimiser step, the same one on every
        process (``tsf.training.signals``); ``on_interrupt`` (``Checkpointer``: ``last.pt``) runs first.

        Raises:
            NonFiniteLossError: the loss became NaN/inf; nothing after the last checkpoint is kept.
            TrainingInterrupted: a stop signal; resuming from its checkpoint continues the run exactly.
        """
        with stop_on_signals():
            self._emit("on_train_start")
            try:
                while not self.finished:
                    self._run_epoch()
            except BaseException as error:
                self._emit("on_error", error)
                raise
            summary = self.summary()
            self._emit("on_train_end", summary)
        return summary

    def _stop_if_requested(self, agreed: Optional[bool] = None) -> None:
        """Between steps: end the run when any process received a stop signal. ``agreed``: the
        ranks' verdict when it is known (from the step's all-reduce); else it is asked (collective)."""
        if agreed is None:
            flag = torch.tensor([float(stop_requested())], dtype=torch.float64, device=self.device)
            agreed = runtime.all_reduce_sum(flag).item() > 0
        if agreed:
            self._emit("on_interrupt")  # Checkpointer: last.pt, on every process (collective)
            checkpoint = self.checkpoint_here()
            raise TrainingInterrupted(received_signal() or "another process's signal", self.step, self.epoch,
                                      str(checkpoint) if checkpoint is not None else None)

    def _loader(self, start: int) -> DataLoader:
        if self.sampler is None:
            self.train_dataset.set_epoch(self.epoch, start)
        else:
            self.sampler.set_epoch(self.epoch, start)
            if hasattr(self.train_dataset, "set_epoch"):
                self.train_dataset.set_epoch(self.epoch)
        workers = self.config.num_workers
        return DataLoader(
            self.train_dataset, batch_size=self.config.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=False,
            # worker seeds come from this generator rather than from the global RNG, which a new
            # iterator would otherwise advance (and so differ between a resumed and a straight run)
            generator=torch.Generator().manual_seed(self.config.seed + self.epoch),
            prefetch_factor=4 if workers else None, worker_init_fn=runtime.ignore_stop_signals,
        )

    def prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's clips normalised on the device, and its labels."""
        clip = batch["clip"].to(self.device, non_blocking=True)
        return normalize(clip, self.mean, self.std), batch["label"].to(self.device, non_blocking=True)

    def _run_epoch(self) -> None:
        cfg = self.config
        self.model.train()
        window, epoch_totals = _Window(), _Window()
        if self.step_in_epoch < self.steps_per_epoch:
            batches = iter(self._loader(self.step_in_epoch * self.clips_per_step))
        while self.step_in_epoch < self.steps_per_epoch and self.step < self.total_steps:
            step_stats = self._train_step(batches)
            window.add(*step_stats)
            epoch_totals.add(*step_stats)
            # the step's metrics line is written before its checkpoint, so a kill between the two
            # cannot leave a checkpoint whose last logged step is missing from metrics.jsonl
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                self.last_record = window.record(self)
                self._emit("on_log", self.last_record)
                window = _Window()
            self._emit("on_step_end")
            self._stop_if_requested(self._stop_agreed)
        self._stop_if_requested()  # a signal since the last step's all-reduce: stop before validating
        finished = self.epoch
        record = {"kind": "epoch", "epoch": finished, "step": self.step}
        if epoch_totals.steps:  # none when a resumed run restarts right at an epoch's end
            record.update(epoch_totals.epoch_fields())
        self.epoch += 1
        self.step_in_epoch = 0
        validate = (self.val_dataset is not None
                    and ((finished + 1) % cfg.val_every == 0 or self.step >= self.total_steps))
        if validate:
            result = self.validate()
            record.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5,
                          val_mean_class_accuracy=result.mean_class_accuracy, val_videos=result.num_videos)
            # the best top-1; among equal top-1s (e.g. 100% on an easy task) the lowest loss
            record["is_best"] = self.best_val_top1 is None or (result.top1, -result.loss) > (self.best_val_top1, -self.best_val_loss)
            if record["is_best"]:
                self.best_val_top1, self.best_val_loss, self.best_epoch = result.top1, result.loss, finished
        record["elapsed_s"] = round(self.elapsed_s, 3)
        record["time"] = time.time()
        self._emit("on_epoch_end", record)
        self.last_record = record
        self._stop_if_requested()  # a signal during validation: last.pt was just written

    def _train_step(self, batches: Iterator[dict]) -> tuple[torch.Tensor, float, float, float, Optional[float]]:
        """One optimiser step over ``grad_accum_steps`` micro-batches.

        Returns:
            ``(stats, data wait s, step time s, lr, grad norm or None)`` where ``stats`` sums
            ``[loss x clips, correct, clips, bad videos]`` over the micro-batches of all processes.
        """
        cfg = self.config
        started = time.perf_counter()
        wait = 0.0
        stats = torch.zeros(5, dtype=torch.float64, device=self.device)  # + [4]: processes asked to stop
        for micro in range(cfg.grad_accum_steps):
            fetch = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - fetch
            clip, label = self.prepare(batch)
            last = micro == cfg.grad_accum_steps - 1
            # DDP all-reduces gradients only on the micro-batch that completes the step
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.wrapped.no_sync()
            with sync:
                with runtime.autocast(self.precision, self.device):
                    logits = self.wrapped(clip)
                    loss = self.criterion(logits.float(), label)
                self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            with torch.no_grad():
                stats[0] += loss.detach().double() * label.numel()
                stats[1] += (logits.argmax(-1) == label).sum()
                stats[2] += label.numel()
                stats[3] += _bad_videos(batch)
        stats[4] = float(stop_requested())
        runtime.all_reduce_sum(stats)
        self._stop_agreed = bool(stats[4] > 0)
        loss_value = (stats[0] / stats[2]).item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            last = self.run_dir / LAST if self.run_dir is not None else None
            kept = f"the last good checkpoint is {last}" if last is not None and last.is_file() else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the loss became {loss_value} at step {self.step + 1} (epoch {self.epoch}); the run stopped before "
                f"updating the weights with it, and {kept}. Lower --lr, set --grad-clip 1.0, add --warmup-epochs, "
                f"or use --precision fp32/bf16 instead of fp16; then --resume or start again"
            )
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.step_in_epoch += 1
        took = time.perf_counter() - started
        self.elapsed_s += took
        return stats[:4].cpu(), wait, took, lr, grad_norm

    @torch.no_grad()
    def validate(self):
        """Single-view validation (``evaluate.evaluate_dataset``) on every process's shard, gathered."""
        return evaluate_dataset(
            self.model, self.val_dataset, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
            device=self.device, precision=self.precision, normalization=(self.mean, self.std), progress=False,
        )

    def summary(self) -> dict:
        """What ``summary.json`` holds: the result, where it came from, and the settings."""
        summary = {
            "status": "completed",
            "steps": self.step,
            "epochs": self.epoch,
            "best_val_top1": self.best_val_top1,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "final": {k: v for k, v in self.last_record.items() if k not in ("kind", "time")},
            "train_time_s": round(self.elapsed_s, 3),
            "clips_per_s": round(self.step * self.global_batch / self.elapsed_s, 2) if self.elapsed_s else None,
            **self.describe(),
            "train_config": self.config.to_dict(),
            "run_info": self.run_info,
        }
        config = getattr(self.model, "config", None)
        if hasattr(config, "to_dict"):
            summary["model_config"] = config.to_dict()
        if self.run_dir is not None:
            summary["checkpoints"] = {name: str(self.run_dir / name) for name in (LAST, BEST) if (self.run_dir / name).is_file()}
        return summary




def _bad_videos(batch: dict) -> int:
    """Clips in the batch that stand in for a video that failed to decode (``tsf.data`` marks them)."""
    flags = batch.get("bad")
    return int(flags.sum()) if isinstance(flags, torch.Tensor) else 0


class _Window:
    """Sums over a logging window or an epoch: loss, correct, clips, bad videos, time, data wait."""

    def __init__(self):
        self.stats = torch.zeros(4, dtype=torch.float64)
        self.wait = self.time = 0.0
        self.steps = 0
        self.lr = 0.0
        self.grad_norm: Optional[float] = None

    def add(self, stats: torch.Tensor, wait: float, took: float, lr: float, grad_norm: Optional[float]) -> None:
        self.stats += stats
        self.wait += wait
        self.time += took
        self.steps += 1
        self.lr, self.grad_norm = lr, grad_norm

    def _fields(self) -> dict:
        loss_sum, correct, clips, bad = self.stats.tolist()
        return {
            "loss": loss_sum / clips,
            "top1": correct / clips,
            "clips_per_s": round(clips / self.time, 2),
            "data_wait": round(self.wait / self.time, 4),  # fraction of the time spent waiting for data
            "bad_videos": int(bad),
        }

    def record(self, trainer: Trainer) -> dict:
        """The ``metrics.jsonl`` line of a logging step (lr and grad norm: of its last step)."""
        record = {"kind": "train", "step": trainer.step, "epoch": trainer.epoch, **self._fields(), "lr": self.lr}
        if self.grad_norm is not None:
            record["grad_norm"] = self.grad_norm
        record["time"] = time.time()
        return record

    def epoch_fields(self) -> dict:
        return {f"train_{k}" if k in ("loss", "top1") else k: v for k, v in self._fields().items()}
