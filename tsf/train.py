"""Training: a model-agnostic loop with callbacks, from a laptop CPU to many GPUs (``torchrun``).

The loop (``Trainer``) knows nothing about TimeSformer or videos: it trains any ``nn.Module``
that maps a float clip batch to logits, on any ``Dataset`` whose items are dicts
``{"clip": uint8 (3, T, H, W), "label": int, ...}`` (as ``tsf.data.VideoClipDataset`` yields).
Clips stay uint8 until they are on the device, where they are normalised.

Everything a run needs to continue lives in its checkpoints (model, optimiser, schedule, grad
scaler, the RNG states of every library on every process, the sampler's epoch and position, the
configs), so a run killed at any moment resumes; on CPU with a fixed seed it ends with the same
weights, bit for bit, as a run that was never interrupted. The data order is a seeded
permutation per epoch that does not depend on the number of processes: a global batch holds the
same clips on 1 process as on N, so runs on different world sizes are comparable.

``python -m tsf train --data DIR --out RUN_DIR`` builds the video datasets from a data folder
(``train.csv``, ``val.csv``, ``classes.txt``) and runs this loop; see ``add_arguments``. The
same in Python (a notebook)::

    classes = data_folder_classes(Path("data/synthetic/appearance"))
    model = build_model("tiny", class_names=classes)           # or build_model(init="best.pt", ...)
    train_set, val_set = build_video_datasets("data/synthetic/appearance", model.config, VideoDataConfig())
    config = TrainConfig(epochs=10, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.05,
                         schedule="cosine", warmup_epochs=1, grad_clip=1.0)
    trainer = Trainer(model, config, train_set, val_set, run_dir="runs/appearance")
    trainer.add_callback(LivePlot("runs/appearance/curves.png"))
    summary = trainer.fit()
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed

PathLike = Union[str, Path]
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAST, BEST = "last.pt", "best.pt"
METRICS, SUMMARY = "metrics.jsonl", "summary.json"


def _option(default, help: str, **kwargs):
    """A ``TrainConfig`` field whose ``help`` is also its command-line help."""
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """How to train. The defaults are the paper's recipe for TimeSformer on Kinetics-400
    (SGD-nesterov, lr 0.005, momentum 0.9, weight decay 1e-4, 15 epochs, lr x0.1 at epochs 11
    and 14; global batch 64 = 8 clips x 8 GPUs, or here 8 x ``grad_accum_steps=8`` on one).
    ``global_batch=64`` derives the accumulation for any number of processes, and
    ``lr_reference_batch=64`` scales the lr when the global batch differs (the recipes in
    ``tsf/recipes`` set both; ``Trainer`` applies ``for_world``).

    For the tiny preset on the synthetic tasks (CPU, minutes): ``optimizer="adamw", lr=2e-3,
    betas=(0.9, 0.95), weight_decay=0.05, schedule="cosine", warmup_epochs=0.1 * epochs,
    grad_clip=1.0, batch_size=32`` (with the default beta2 of 0.999 the motion task often sits
    at chance for hundreds of steps).
    """

    epochs: int = _option(15, "passes over the training set")
    max_steps: int = _option(0, "stop after this many optimiser steps; 0: epochs x steps per epoch. The schedule spans the run's length either way")
    batch_size: int = _option(8, "clips per process per forward pass (micro-batch)")
    grad_accum_steps: int = _option(1, "micro-batches per optimiser step; the global batch is batch_size x grad_accum_steps x processes (the paper's: 64)")
    global_batch: int = _option(0, "clips per optimiser step over all processes (the paper's: 64); when set, grad_accum_steps follows from it: global_batch / (batch_size x processes). 0: batch_size x grad_accum_steps x processes")
    optimizer: str = _option("sgd", "sgd (nesterov momentum, the paper's) or adamw", choices=OPTIMIZERS)
    lr: float = _option(0.005, "peak learning rate: used as given, or stated at lr_reference_batch when that is set")
    lr_reference_batch: int = _option(0, "the global batch at which lr is stated: the run uses lr x global batch / lr_reference_batch (the linear scaling rule, Goyal et al. 2017; the recipes: 64). 0: lr as given")
    momentum: float = _option(0.9, "SGD momentum")
    betas: tuple[float, float] = _option((0.9, 0.999), "AdamW betas")
    weight_decay: float = _option(1e-4, "weight decay; not applied to norms, biases and the cls/pos/time embeddings unless decay_norms_and_biases")
    decay_norms_and_biases: bool = _option(False, "apply weight decay to every parameter, as the official optimiser does (it exempts only BatchNorm parameters, and a TimeSformer has none)")
    schedule: str = _option("step", "learning-rate schedule after warmup: step (x lr_step_factor at each lr_milestones epoch), cosine (to zero) or constant", choices=SCHEDULES)
    warmup_epochs: float = _option(0.0, "linear warmup from ~0 to lr over this many epochs (fractions allowed)")
    lr_milestones: tuple[float, ...] = _option((11.0, 14.0), "epochs at which the step schedule multiplies the lr by lr_step_factor")
    lr_step_factor: float = _option(0.1, "the step schedule's factor")
    grad_clip: float = _option(0.0, "clip the global gradient norm to this; 0: no clipping")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy")
    layer_decay: float = _option(1.0, "layer-wise lr decay: block i of D trains at lr x layer_decay^(D+1-(i+1)), embeddings at ^(D+1), head and final norm at lr; 1: off")
    freeze_backbone: bool = _option(False, "train only the classification head (linear probe)")
    gradient_checkpointing: bool = _option(False, "recompute block activations in the backward pass: less memory, ~30% more time")
    device: str = _option("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N; under torchrun each process takes GPU LOCAL_RANK")
    precision: str = _option("auto", "auto (CUDA: bf16 autocast if supported, else fp16 with a grad scaler; CPU: fp32), fp32, bf16 or fp16 (CUDA only)", choices=PRECISIONS)
    num_workers: int = _option(4, "data-loading processes per training process; 0 loads in the training process")
    seed: int = _option(0, "seeds model-side randomness (dropout, drop-path; + rank under DDP) and the data order")
    log_every: int = _option(20, "write a metrics line every this many optimiser steps")
    checkpoint_every: int = _option(500, "write last.pt every this many optimiser steps (and at each epoch end); 0: epoch ends only")
    val_every: int = _option(1, "validate (and maybe write best.pt) every this many epochs, and after the last")
    progress: bool = _option(True, "show a progress bar (rank 0)")

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        problems = []
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every", "val_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_steps", "global_batch", "lr_reference_batch", "num_workers", "checkpoint_every",
                     "warmup_epochs", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {choices}")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be > 0")
        if len(self.betas) != 2:
            problems.append(f"betas={self.betas} must be two numbers")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay={self.layer_decay} must be in (0, 1] (1 turns it off)")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    def for_world(self, world_size: int) -> "TrainConfig":
        """The settings a run on ``world_size`` processes executes: ``grad_accum_steps`` derived from
        ``global_batch`` when that is set, ``lr`` scaled linearly from ``lr_reference_batch`` to the
        global batch. The result states both explicitly (``global_batch`` filled in,
        ``lr_reference_batch`` 0), so applying it again changes nothing (resumed runs do).

        Args:
            world_size: number of training processes (all nodes together).

        Raises:
            ValueError: the global batch is not a whole number of micro-batches on this many
                processes, or ``grad_accum_steps`` contradicts it; the message gives the fix.
        """
        per_step = self.batch_size * world_size  # clips of one micro-batch over all processes
        accum = self.grad_accum_steps
        if self.global_batch:
            if self.global_batch % per_step:
                fits = [b for b in range(self.batch_size, 0, -1) if self.global_batch % (b * world_size) == 0]
                fix = f"set batch_size={fits[0]}" if fits else f"use a global_batch that {world_size} processes divide"
                raise ValueError(
                    f"global_batch={self.global_batch} is not a whole number of micro-batches of batch_size "
                    f"{self.batch_size} x {world_size} processes = {per_step} clips; {fix}, or change global_batch "
                    f"(a different global batch scales the lr when lr_reference_batch is set)"
                )
            accum = self.global_batch // per_step
            if self.grad_accum_steps not in (1, accum):
                raise ValueError(
                    f"grad_accum_steps={self.grad_accum_steps} contradicts global_batch={self.global_batch} "
                    f"(= batch_size {self.batch_size} x {accum} steps x {world_size} processes); give only one of them"
                )
        global_batch = per_step * accum
        lr = self.lr * global_batch / self.lr_reference_batch if self.lr_reference_batch else self.lr
        return replace(self, grad_accum_steps=accum, global_batch=global_batch, lr=lr, lr_reference_batch=0)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**d)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""


# -- callbacks -------------------------------------------------------------------------------------
class Callback:
    """Hooks into ``Trainer.fit``; every process calls them (check ``trainer.is_main`` for
    rank-0-only work). Records are the dicts written to ``metrics.jsonl``."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer") -> None: ...

    def on_log(self, trainer: "Trainer", record: dict) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None: ...

    def on_train_end(self, trainer: "Trainer", summary: dict) -> None: ...

    def on_error(self, trainer: "Trainer", error: BaseException) -> None: ...


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
    """``metrics.jsonl`` (one JSON object per line: ``kind`` = start, train, epoch, resume or error)
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
        if trainer.is_main:
            self.write({"kind": "error", "step": trainer.step, "epoch": trainer.epoch, "error": str(error), "time": time.time()})


class Checkpointer(Callback):
    """``last.pt`` every ``every`` steps and at each epoch end, ``best.pt`` when validation top-1
    improves (a tie: when the loss falls); atomic writes, so a kill never leaves a torn file.
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
            _atomic_copy(self.run_dir / LAST, self.run_dir / BEST)


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
        loss_ax, acc_ax = self.figure.axes
        # legends in the corner the curves leave free: loss falls from the top left, accuracy rises to the top right
        for ax, column, title, corner in ((loss_ax, 1, "loss", "upper right"), (acc_ax, 2, "top-1", "lower right")):
            ax.clear()
            for points, label in ((self.train, "train"), (self.val, "val")):
                if points:
                    ax.plot([p[0] for p in points], [p[column] for p in points], marker="o" if label == "val" else ".",
                            label=label)
            ax.set_xlabel("step")
            ax.set_title(title)
            ax.legend(loc=corner)
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
    """Progress bar (when ``config.progress``), and with a run folder: metrics logging and checkpoints."""
    callbacks: list[Callback] = [ProgressBar()] if config.progress else []
    if run_dir is not None:
        callbacks += [MetricsLogger(run_dir), Checkpointer(run_dir, config.checkpoint_every)]
    return callbacks


# -- optimisation --------------------------------------------------------------------------------
def _layer_id(name: str, num_blocks: int, embedding_names: set[str]) -> int:
    """0 for the patch/cls/pos/time embeddings, i+1 for block i, num_blocks+1 for the rest (final norm, head)."""
    top = name.split(".")[0]
    if top in embedding_names or top == "patch_embed":
        return 0
    if top == "blocks":
        return int(name.split(".")[1]) + 1
    return num_blocks + 1


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0, lr: float = 1.0,
                     decay_norms_and_biases: bool = False) -> list[dict]:
    """Optimiser parameter groups: no weight decay on norms, biases (1-D parameters) and the
    parameters the model lists in ``no_weight_decay()`` (unless ``decay_norms_and_biases``);
    each group's ``lr`` scaled by ``layer_decay`` per layer below the head when ``layer_decay < 1``.

    Args:
        model: the model (not a DDP wrapper). Layer decay needs ``model.blocks``.
        weight_decay: for the parameters that decay.
        layer_decay: 1 for none.
        lr: the peak learning rate the scales multiply.
        decay_norms_and_biases: decay every parameter, as the official TimeSformer optimiser does.
    """
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay != 1.0 and not hasattr(model, "blocks"):
        raise ValueError(f"layer_decay={layer_decay} needs a model with .blocks; {type(model).__name__} has none (use 1.0)")
    num_blocks = len(model.blocks) if layer_decay != 1.0 else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = decay_norms_and_biases or (param.ndim > 1 and name not in no_decay)
        layer = _layer_id(name, num_blocks, no_decay) if layer_decay != 1.0 else 0
        group = groups.setdefault((layer, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * layer_decay ** (num_blocks + 1 - layer) if layer_decay != 1.0 else lr,
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay, config.layer_decay, config.lr, config.decay_norms_and_biases)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    # the fused CUDA kernel is several times faster; the CPU keeps the default implementation
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda")


@dataclass
class LRSchedule:
    """Learning-rate multiplier per optimiser step: linear warmup, then step, cosine or constant.

    A plain callable object (not a lambda) so that ``LambdaLR`` saves and restores it.
    """

    total_steps: int
    warmup_steps: int
    schedule: str
    milestones: tuple[int, ...]  # optimiser steps at which the step schedule decays
    step_factor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if self.schedule == "step":
            return self.step_factor ** sum(step >= m for m in self.milestones)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = LRSchedule(
        total_steps=total_steps,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        schedule=config.schedule,
        milestones=tuple(round(m * steps_per_epoch) for m in config.lr_milestones),
        step_factor=config.lr_step_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 on a CUDA device that supports it, fp16 on older GPUs, fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (its grad scaler is CUDA-only); on {device} use fp32 or bf16")
    return precision


_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


# -- data order ------------------------------------------------------------------------------------
class ShardedShuffleSampler(Sampler[int]):
    """A seeded permutation of the dataset per epoch, the same for any number of processes; rank
    ``r`` of ``w`` takes every ``w``-th index from position ``r``, so the clips of one global batch
    do not depend on ``w``. ``start`` skips this rank's first indices (resuming mid-epoch).

    Args:
        length: dataset size.
        rank: this process's rank.
        world_size: number of processes.
        seed: the permutation of epoch ``e`` is ``randperm(length)`` seeded with ``seed + e``.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.length, self.rank, self.world_size, self.seed = length, rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        # equal shares for all ranks; the tail the division leaves out changes every epoch
        order = order[: self.per_rank() * self.world_size][self.rank :: self.world_size]
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank() - self.start


# -- RNG state -------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """This process's RNG states as plain containers and tensors (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def restore_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- the loop ----------------------------------------------------------------------------------------
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
        self.dist = distributed.setup(config.device)
        # from here on: the global batch and lr this world size executes (config.for_world)
        self.config = config = config.for_world(self.dist.world_size)
        self.device = self.dist.device
        self.precision = resolve_precision(config.precision, self.device)
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

        self.sampler = ShardedShuffleSampler(len(train_dataset), self.dist.rank, self.dist.world_size, config.seed)
        self.clips_per_step = config.batch_size * config.grad_accum_steps  # per process
        self.steps_per_epoch = self.sampler.per_rank() // self.clips_per_step
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

    # -- public helpers ------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def global_batch(self) -> int:
        return self.clips_per_step * self.dist.world_size

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
        rng = distributed.all_gather_objects(capture_rng_state())
        config = getattr(self.model, "config", None)
        if hasattr(config, "to_dict"):
            from .weights import model_checkpoint

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
        from .weights import atomic_save

        checkpoint = self.state_dict()
        if self.is_main:
            atomic_save(checkpoint, path)

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue from a training checkpoint of this run (same model, config and data)."""
        missing = [k for k in ("state_dict", "optimizer", "scheduler", "rng", "step", "epoch", "step_in_epoch", "world_size")
                   if k not in checkpoint]
        if missing:
            raise ValueError(f"not a training checkpoint (missing {missing}): only last.pt/best.pt of a run resume")
        if checkpoint["world_size"] != self.dist.world_size:
            raise ValueError(_world_size_changed(checkpoint["world_size"], self.dist.world_size))
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
        from .weights import load_checkpoint_file

        path = Path(path)
        self.load_state_dict(load_checkpoint_file(path / LAST if path.is_dir() else path))

    # -- training ------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``total_steps``; returns the summary (also written to ``summary.json``).

        Raises:
            NonFiniteLossError: the loss became NaN/inf; nothing after the last checkpoint is kept.
        """
        self._emit("on_train_start")
        try:
            while self.step < self.total_steps:
                self._run_epoch()
        except BaseException as error:
            self._emit("on_error", error)
            raise
        summary = self.summary()
        self._emit("on_train_end", summary)
        return summary

    def _loader(self, start: int) -> DataLoader:
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
            prefetch_factor=4 if workers else None,
        )

    def prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's clips normalised on the device, and its labels."""
        from .data import normalize

        clip = batch["clip"].to(self.device, non_blocking=True)
        return normalize(clip, self.mean, self.std), batch["label"].to(self.device, non_blocking=True)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPE[self.precision])

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

    def _train_step(self, batches: Iterator[dict]) -> tuple[torch.Tensor, float, float, float, Optional[float]]:
        """One optimiser step over ``grad_accum_steps`` micro-batches.

        Returns:
            ``(stats, data wait s, step time s, lr, grad norm or None)`` where ``stats`` sums
            ``[loss x clips, correct, clips, bad videos]`` over the micro-batches of all processes.
        """
        cfg = self.config
        started = time.perf_counter()
        wait = 0.0
        stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        for micro in range(cfg.grad_accum_steps):
            fetch = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - fetch
            clip, label = self.prepare(batch)
            last = micro == cfg.grad_accum_steps - 1
            # DDP all-reduces gradients only on the micro-batch that completes the step
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.wrapped.no_sync()
            with sync:
                with self._autocast():
                    logits = self.wrapped(clip)
                    loss = self.criterion(logits.float(), label)
                self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            with torch.no_grad():
                stats[0] += loss.detach().double() * label.numel()
                stats[1] += (logits.argmax(-1) == label).sum()
                stats[2] += label.numel()
                stats[3] += _bad_videos(batch)
        distributed.all_reduce_sum(stats)
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
        return stats.cpu(), wait, took, lr, grad_norm

    @torch.no_grad()
    def validate(self):
        """Single-view validation (``evaluate.evaluate_dataset``) on every process's shard, gathered."""
        from .evaluate import evaluate_dataset

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


def build_model(preset: Optional[str] = None, init: Optional[str] = None, class_names: Sequence[str] = (),
                imagenet_init: Optional[str] = None, **overrides) -> nn.Module:
    """A TimeSformer to train on ``class_names``: a ``preset`` (random, or its spatial weights from
    an ImageNet ViT as the paper trained), or ``init`` to fine-tune.

    Fine-tuning keeps the checkpoint's head when it already predicts these classes (same count,
    and the same names if it records names) and starts a fresh head otherwise.

    Args:
        preset: a name in ``tsf.PRESETS`` (random initialisation; seed torch first).
        init: anything ``tsf.from_pretrained`` reads (a zoo name, ``.pyth``, HF folder, ``best.pt``).
        class_names: the data's classes, label id order.
        imagenet_init: with ``preset``: start from this ImageNet ViT (``tsf.weights.from_imagenet_vit``):
            a weights file, or ``timm:<name>`` for a timm model downloaded on first use (the paper's:
            ``timm:vit_base_patch16_224.orig_in21k_ft_in1k``). Its width, depth and patch size must
            be the preset's.
        **overrides: ``TimeSformerConfig`` fields (``num_frames``, ``img_size``, ``attention_type``,
            ``drop_path_rate``, ``mean``/``std``, ``num_heads`` for checkpoints whose heads are not
            64 wide...).
    """
    from .model import create_model
    from .weights import from_pretrained

    if (preset is None) == (init is None):
        raise ValueError("give either a preset (--model, to train from scratch) or a checkpoint (--init, to fine-tune), "
                         f"not {'both' if preset else 'neither'}")
    names = tuple(class_names)
    if imagenet_init is not None:
        if preset is None:
            raise ValueError(f"--imagenet-init {imagenet_init} starts a --model preset from an ImageNet ViT; --init "
                             f"{init} is already a whole video model: give one of them")
        return _from_imagenet(preset, imagenet_init, names, overrides)
    if preset is not None:
        return create_model(preset, num_classes=len(names), class_names=names, **overrides)
    model = from_pretrained(init, **overrides)
    config = model.config
    if config.num_classes != len(names) or (config.class_names is not None and tuple(config.class_names) != names):
        model.reset_classifier(len(names), names)
    else:
        model.config = replace(config, class_names=names)
    return model


# what an ImageNet ViT's weights fix; the preset must agree on each
_VIT_DETERMINED = ("embed_dim", "depth", "patch_size", "mlp_ratio", "qkv_bias", "in_chans")


def _from_imagenet(preset: str, source: str, class_names: tuple[str, ...], overrides: dict) -> nn.Module:
    """``preset`` (with ``overrides``) initialised from the ImageNet ViT ``source`` (see ``build_model``)."""
    from .model import PRESETS
    from .weights import from_imagenet_vit

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    wanted = replace(PRESETS[preset], num_classes=len(class_names), class_names=class_names, **overrides)
    settings = {f: getattr(wanted, f) for f in wanted.__dataclass_fields__ if f not in _VIT_DETERMINED}
    vit: Union[str, nn.Module] = source
    if source.startswith("timm:"):
        import timm

        try:
            vit = timm.create_model(source[len("timm:"):], pretrained=True)
        except Exception as error:  # timm and the Hugging Face hub raise many kinds (unknown name, no network)
            raise ValueError(f"--imagenet-init {source}: timm could not load it ({error}); on a machine without "
                             f"network, save the ViT's state dict to a file and pass that path") from error
        settings.pop("num_heads")  # the module knows its heads
    elif not Path(source).is_file():
        raise FileNotFoundError(f"--imagenet-init {source} does not exist; give a ViT weights file "
                                f"(.pth/.bin/.safetensors) or timm:<model name>")
    model = from_imagenet_vit(vit, **settings)
    mismatched = [f"{f} {getattr(wanted, f)} (the ViT: {getattr(model.config, f)})"
                  for f in _VIT_DETERMINED + ("num_heads",) if getattr(wanted, f) != getattr(model.config, f)]
    if mismatched:
        raise ValueError(f"--imagenet-init {source} does not fit --model {preset}: {', '.join(mismatched)}; "
                         f"choose the preset of the ViT's size")
    return model


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


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


# -- video data and the command line ---------------------------------------------------------------
@dataclass
class VideoDataConfig:
    """How ``python -m tsf train`` reads a data folder (``tsf.data.VideoClipDataset`` settings).
    Frames per clip and crop size are the model's (``--num-frames``/``--img-size`` change both)."""

    sampling_rate: float = _option(1.0, "video frames per clip frame in dense sampling (paper, Kinetics 8x224: 32 with --target-fps 30; the synthetic videos: 1)")
    target_fps: float = _option(0.0, "count --sampling-rate at this frame rate, converting from each video's own (the official recipes: 30); 0: in each video's own frames")
    sampling: str = _option("dense", "dense (a window of num_frames x sampling_rate frames) or uniform (num_frames spread over the whole video, as for SSv2)", choices=("dense", "uniform"))
    short_side_range: tuple[int, ...] = _option((), "training scale jitter: the shorter side is resized to a random length in [MIN, MAX] before the random crop (paper: 256 320 at 224 px, 448 512 at 448); none given: crop size x (256, 320) / 224")
    inverse_scale_jitter: bool = _option(False, "draw that length as 1 / uniform(1/MAX, 1/MIN) rather than uniformly (the official SSv2 configs' INV_UNIFORM_SAMPLE)")
    hflip: bool = _option(False, "random horizontal flips in training (Kinetics: yes; SSv2: no, it has left/right classes)")
    reader: str = _option("auto", "video decoder: auto (decord, falling back to PyAV), decord or pyav", choices=("auto", "decord", "pyav"))
    max_bad_fraction: float = _option(0.05, "stop when more than this fraction of the videos fails to decode (a broken dataset rather than a few broken files)")
    val_temporal_clips: int = _option(1, "temporal clips per validation video during training (tsf evaluate runs the full protocol)")
    val_spatial_crops: int = _option(1, "spatial crops per validation video during training")

    def __post_init__(self):
        self.short_side_range = tuple(int(v) for v in self.short_side_range)  # lists from JSON/YAML
        if len(self.short_side_range) not in (0, 2):
            raise ValueError(f"short_side_range={self.short_side_range}: give two lengths MIN MAX (or none for the default)")

    def to_dict(self) -> dict:
        return asdict(self)


def data_folder_classes(root: Path) -> list[str]:
    """The class names of a data folder, after checking that it holds what training reads."""
    from . import data as video_data

    for name in ("classes.txt", "train.csv"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} does not exist: --data needs a folder with train.csv, val.csv and classes.txt "
                f"(make one with `python -m tsf data synth` or `python -m tsf data manifest`)"
            )
    return list(video_data.load_classes(root / "classes.txt"))


def build_video_datasets(data_dir: PathLike, model_config, data: VideoDataConfig, seed: int = 0,
                         overfit_batch: int = 0) -> tuple[Dataset, Optional[Dataset]]:
    """Train and validation datasets from a data folder (``train.csv``, ``val.csv``, ``classes.txt``).

    Args:
        data_dir: the folder (as ``tsf data synth`` / ``tsf data manifest`` write it).
        model_config: supplies frames per clip and the crop size.
        data: sampling, flips, decoder.
        seed: augmentation seed (per epoch and video, so it resumes exactly).
        overfit_batch: if > 0, both sets are the first ``overfit_batch`` training clips without
            augmentation (the one-batch sanity check).

    Returns:
        ``(train, val)``; val is None when the folder has no ``val.csv``.
    """
    from torch.utils.data import Subset

    from . import data as video_data

    root = Path(data_dir)
    classes = data_folder_classes(root)

    def dataset(split: str, train: bool, temporal_clips: int = 1, spatial_crops: int = 1):
        manifest = video_data.read_manifest(root / f"{split}.csv", classes=classes)
        return video_data.VideoClipDataset(
            manifest, num_frames=model_config.num_frames, sampling_rate=data.sampling_rate, sampling=data.sampling,
            train=train, crop_size=model_config.img_size, short_side_range=data.short_side_range or None,
            inverse_scale_jitter=data.inverse_scale_jitter, hflip=data.hflip and train,
            num_temporal_clips=temporal_clips, num_spatial_crops=spatial_crops, reader=data.reader,
            max_bad_fraction=data.max_bad_fraction, seed=seed, target_fps=data.target_fps or None,
        )

    if overfit_batch:
        fixed = dataset("train", train=False)
        if len(fixed) < overfit_batch:
            raise ValueError(f"--overfit-batch needs {overfit_batch} clips; {root / 'train.csv'} has {len(fixed)}")
        batch = Subset(fixed, range(overfit_batch))
        return batch, batch
    val = None
    if (root / "val.csv").is_file():
        val = dataset("val", train=False, temporal_clips=data.val_temporal_clips, spatial_crops=data.val_spatial_crops)
    return dataset("train", train=True), val


# flags that --resume accepts: they change how the run executes, not what it computes
RESUME_OVERRIDABLE = ("device", "num_workers", "progress")
# run flags that are TimeSformerConfig fields (given: they override the preset's or checkpoint's)
MODEL_OPTIONS = ("num_heads", "num_frames", "img_size", "attention_type", "drop_path_rate", "mean", "std")


def _add_dataclass_flags(group, cls) -> None:
    """One flag per field of ``cls``, default None (so that given flags can be told apart)."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default_factory is MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {_show(default)})".replace("%", "%%")
        if f.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif str(f.type).startswith("tuple"):
            kind = int if str(f.type).startswith("tuple[int") else float
            group.add_argument(flag, type=kind, nargs="+", default=None, metavar="X", help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            group.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def _show(value) -> str:
    return (" ".join(map(str, value)) or "none") if isinstance(value, tuple) else str(value)


def _given(args: argparse.Namespace, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import recipes
    from .model import ATTENTION_TYPES

    parser.epilog = (
        "The paper's recipes: python -m tsf recipes, then --config RECIPE [--set KEY=VALUE ...]. "
        "Tiny model on the synthetic data (CPU, minutes): --model tiny --optimizer adamw --lr 2e-3 "
        "--weight-decay 0.05 --schedule cosine --warmup-epochs 1 --grad-clip 1.0 --batch-size 32 --epochs 10. "
        "Multi-GPU / multi-node: torchrun --nnodes N --nproc-per-node G -m tsf train ... (the global batch is "
        "batch-size x grad-accum-steps x processes, or --global-batch)."
    )
    run = parser.add_argument_group("run")
    run.add_argument("--data", type=Path, help="data folder with train.csv, val.csv and classes.txt")
    run.add_argument("--out", type=Path, help="run folder: metrics.jsonl, summary.json, last.pt, best.pt")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help=f"continue the run in RUN_DIR from its last.pt with its saved settings (only "
                          f"{', '.join('--' + n.replace('_', '-') for n in RESUME_OVERRIDABLE)} may be given)")
    run.add_argument("--model", help="train this preset from scratch (tsf.PRESETS: tiny, micro, base_8x224, ...)")
    run.add_argument("--imagenet-init", metavar="VIT",
                     help="with --model: start from an ImageNet ViT, as the paper trained: a weights file or "
                          "timm:NAME (the paper's: timm:vit_base_patch16_224.orig_in21k_ft_in1k)")
    run.add_argument("--init", help="fine-tune from this checkpoint or zoo name; a new head when the classes differ")
    run.add_argument("--num-heads", type=int, help="attention heads of an --init checkpoint whose heads are not 64 wide")
    run.add_argument("--num-frames", type=int, help="frames per clip (default: the model's); resizes an --init model's time embedding")
    run.add_argument("--img-size", type=int, help="crop size (default: the model's); resizes an --init model's position embedding")
    run.add_argument("--attention-type", choices=ATTENTION_TYPES, help="attention scheme of a --model preset (default: the preset's)")
    run.add_argument("--drop-path-rate", type=float, help="stochastic depth of the model (default: the preset's or checkpoint's)")
    run.add_argument("--mean", type=float, nargs=3, metavar="X", help="input normalisation mean per channel (default: the model's, 0.45)")
    run.add_argument("--std", type=float, nargs=3, metavar="X", help="input normalisation std per channel (default: the model's, 0.225)")
    run.add_argument("--overfit-batch", type=int, nargs="?", const=100, default=0, metavar="STEPS",
                     help="sanity check: train STEPS (default 100) steps on one fixed batch of batch-size clips, "
                          "without augmentation or checkpoints; succeeds when it reaches 100%% top-1 on it")
    _add_dataclass_flags(parser.add_argument_group("training (TrainConfig)"), TrainConfig)
    _add_dataclass_flags(parser.add_argument_group("video data"), VideoDataConfig)
    recipes.add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from . import recipes
    from .data import BadVideosError

    try:
        recipe = recipes.apply_config(args, "train")
        trainer = _resume_trainer(args) if args.resume is not None else _new_trainer(args, recipe)
    except (ValueError, FileNotFoundError) as error:
        print(f"tsf train: {error}", file=sys.stderr)
        distributed.teardown(synchronize=False)
        return 2
    try:
        summary = trainer.fit()
    except (NonFiniteLossError, BadVideosError) as error:
        print(f"tsf train: {error}", file=sys.stderr)
        distributed.teardown(synchronize=False)
        return 1
    distributed.teardown()
    if not trainer.is_main:
        return 0
    if trainer.run_info.get("overfit_batch"):
        top1 = summary["final"].get("val_top1", 0.0)
        print(f"overfit-batch: top-1 {top1:.3f} on the batch of {trainer.config.batch_size} clips after {summary['steps']} steps")
        if top1 < 1.0:
            print("the model could not fit one batch: check the labels, the normalisation and the learning rate "
                  "(--lr), or give it more --overfit-batch STEPS", file=sys.stderr)
            return 1
        return 0
    best = ("no validation set" if summary["best_val_top1"] is None
            else f"best val top-1 {summary['best_val_top1']:.4f} (epoch {summary['best_epoch']})")
    print(f"tsf train: {summary['steps']} steps in {summary['train_time_s']:.1f} s; {best}; {trainer.run_dir}")
    return 0


def _new_trainer(args: argparse.Namespace, recipe=None) -> Trainer:
    if args.data is None or args.out is None:
        raise ValueError("give --data DIR and --out RUN_DIR (or --resume RUN_DIR)")
    if (args.out / LAST).is_file():
        raise ValueError(f"{args.out} already holds a run ({args.out / LAST}); continue it with --resume {args.out} "
                         f"or choose another --out")
    given = _given(args, TrainConfig)
    if args.overfit_batch:
        # every epoch is the one batch: epochs = steps; validate (on that batch) at the end only
        given.update(epochs=args.overfit_batch, max_steps=0, schedule="constant", warmup_epochs=0.0,
                     val_every=args.overfit_batch, log_every=min(given.get("log_every", 10), 10))
    config = TrainConfig(**given)
    data_config = VideoDataConfig(**_given(args, VideoDataConfig))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k in MODEL_OPTIONS if (v := getattr(args, k)) is not None}
    class_names = data_folder_classes(args.data)
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = build_model(args.model, args.init, class_names, args.imagenet_init, **overrides)
    train_set, val_set = build_video_datasets(args.data, model.config, data_config, config.seed,
                                              config.batch_size if args.overfit_batch else 0)
    run_info = {
        "data": str(args.data.resolve()), "data_config": data_config.to_dict(),
        "model": args.model, "init": args.init, "imagenet_init": args.imagenet_init, "overfit_batch": args.overfit_batch,
    }
    callbacks = None
    if args.overfit_batch:  # a sanity check, not a model: metrics only (an epoch is one step here)
        callbacks = [c for c in default_callbacks(config, args.out) if not isinstance(c, Checkpointer)]
    trainer = Trainer(model, config, train_set, val_set, run_dir=args.out, callbacks=callbacks, run_info=run_info)
    if trainer.is_main:
        _write_config(args, recipe, config, data_config, model, trainer)
        print(f"tsf train: {_scaling_line(config, trainer)}")
    return trainer


def _scaling_line(requested: TrainConfig, trainer: Trainer) -> str:
    """The run's effective batch and lr (what ``TrainConfig.for_world`` made of ``requested``)."""
    cfg = trainer.config
    line = (f"{trainer.dist.world_size} process(es) x batch {cfg.batch_size} x {cfg.grad_accum_steps} accumulation "
            f"step(s) = global batch {cfg.global_batch}; lr {cfg.lr:g}")
    if requested.lr_reference_batch:
        line += f" (= {requested.lr:g} x {cfg.global_batch} / {requested.lr_reference_batch}, scaled linearly with the global batch)"
    return f"{line}; precision {trainer.precision}"


def _write_config(args: argparse.Namespace, recipe, config: TrainConfig, data_config: VideoDataConfig, model,
                  trainer: Trainer) -> None:
    """``RUN_DIR/config.yaml``: every setting of the run as asked for but ``--out`` (a recipe that
    ``--config`` reruns) and, under ``about.effective``, what this world size made of it."""
    from .recipes import RESOLVED_FILE, write_resolved

    def plain(value):
        return list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value

    model_config = model.config
    settings = {"data": str(args.data.resolve()), "model": args.model, "imagenet_init": args.imagenet_init,
                "init": args.init, "overfit_batch": args.overfit_batch, "num_heads": args.num_heads}
    settings.update({k: plain(getattr(model_config, k)) for k in MODEL_OPTIONS if k != "num_heads"})
    settings.update({k: plain(v) for k, v in {**config.to_dict(), **data_config.to_dict()}.items()})
    about = {"command": "train",
             "reproduces": recipe.about["reproduces"] if recipe else "a run of python -m tsf train",
             "paper_top1": recipe.about.get("paper_top1") if recipe else None,
             "official": recipe.about.get("official") if recipe else None,
             "source": str(recipe.path) if recipe else "command line",
             "effective": {"processes": trainer.dist.world_size, "batch_size": trainer.config.batch_size,
                           "grad_accum_steps": trainer.config.grad_accum_steps,
                           "global_batch": trainer.config.global_batch, "lr": trainer.config.lr,
                           "precision": trainer.precision}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_resolved(args.out / RESOLVED_FILE, settings, about)


def _world_size_changed(trained: int, now: int) -> str:
    return (f"this run was trained on {trained} process(es) and this is {now}: the data order, the global batch "
            f"and the RNG streams depend on it; resume with {trained} processes in all (torchrun --nnodes N "
            f"--nproc-per-node G with N x G = {trained})")


def _resume_trainer(args: argparse.Namespace) -> Trainer:
    from .model import TimeSformer, TimeSformerConfig
    from .weights import load_checkpoint_file

    run_dir = args.resume
    extra = [k for k in _given(args, TrainConfig) if k not in RESUME_OVERRIDABLE] + list(_given(args, VideoDataConfig))
    extra += [k for k in ("data", "out", "model", "imagenet_init", "init", *MODEL_OPTIONS)
              if getattr(args, k) is not None] + (["overfit_batch"] if args.overfit_batch else [])
    if extra:
        raise ValueError(f"--resume continues {run_dir} with its saved settings; remove "
                         f"{', '.join('--' + k.replace('_', '-') for k in extra)} (start a new run to change them)")
    if not (run_dir / LAST).is_file():
        raise FileNotFoundError(f"{run_dir / LAST} does not exist: nothing to resume (was the run started with --out {run_dir}?)")
    for stale in run_dir.glob("*.tmp"):  # the half-written file of a save that a kill interrupted
        stale.unlink(missing_ok=True)
    checkpoint = load_checkpoint_file(run_dir / LAST)
    if checkpoint.get("world_size", 1) != distributed.launched_world_size():
        # before the Trainer resolves the saved global batch for this world size, which may not fit it
        raise ValueError(_world_size_changed(checkpoint.get("world_size", 1), distributed.launched_world_size()))
    info = checkpoint.get("run_info", {})
    if "data_config" not in info:
        raise ValueError(f"{run_dir / LAST} was not written by `python -m tsf train` (it does not record its data "
                         f"folder); resume it in Python: Trainer(...).resume({str(run_dir)!r})")
    config = TrainConfig.from_dict({**checkpoint["train_config"], **_given(args, TrainConfig)})
    model = TimeSformer.from_config(TimeSformerConfig.from_dict(checkpoint["config"]))
    data_config = VideoDataConfig(**info["data_config"])
    train_set, val_set = build_video_datasets(info["data"], model.config, data_config, config.seed)
    trainer = Trainer(model, config, train_set, val_set, run_dir=run_dir, run_info=info)
    trainer.load_state_dict(checkpoint)
    if trainer.is_main:
        print(f"tsf train: resuming {run_dir} at step {trainer.step}: {_scaling_line(config, trainer)}")
    return trainer
