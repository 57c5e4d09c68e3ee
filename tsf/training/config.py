"""How to train: ``TrainConfig``, the settings of a run, with the paper's recipe as defaults.

Plain data (no torch), so the command line builds its flags from these fields without loading
the library; each field's help is its flag's help.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..options import option

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")


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

    epochs: int = option(15, "passes over the training set")
    max_steps: int = option(0, "stop after this many optimiser steps; 0: epochs x steps per epoch. The schedule spans the run's length either way")
    batch_size: int = option(8, "clips per process per forward pass (micro-batch)")
    grad_accum_steps: int = option(1, "micro-batches per optimiser step; the global batch is batch_size x grad_accum_steps x processes (the paper's: 64)")
    global_batch: int = option(0, "clips per optimiser step over all processes (the paper's: 64); when set, grad_accum_steps follows from it: global_batch / (batch_size x processes). 0: batch_size x grad_accum_steps x processes")
    optimizer: str = option("sgd", "sgd (nesterov momentum, the paper's) or adamw", choices=OPTIMIZERS)
    lr: float = option(0.005, "peak learning rate: used as given, or stated at lr_reference_batch when that is set")
    lr_reference_batch: int = option(0, "the global batch at which lr is stated: the run uses lr x global batch / lr_reference_batch (the linear scaling rule, Goyal et al. 2017; the recipes: 64). 0: lr as given")
    momentum: float = option(0.9, "SGD momentum")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas")
    weight_decay: float = option(1e-4, "weight decay; not applied to norms, biases and the cls/pos/time embeddings unless decay_norms_and_biases")
    decay_norms_and_biases: bool = option(False, "apply weight decay to every parameter, as the official optimiser does (it exempts only BatchNorm parameters, and a TimeSformer has none)")
    schedule: str = option("step", "learning-rate schedule after warmup: step (x lr_step_factor at each lr_milestones epoch), cosine (to zero) or constant", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "linear warmup from ~0 to lr over this many epochs (fractions allowed)")
    lr_milestones: tuple[float, ...] = option((11.0, 14.0), "epochs at which the step schedule multiplies the lr by lr_step_factor")
    lr_step_factor: float = option(0.1, "the step schedule's factor")
    grad_clip: float = option(0.0, "clip the global gradient norm to this; 0: no clipping")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    layer_decay: float = option(1.0, "layer-wise lr decay: block i of D trains at lr x layer_decay^(D+1-(i+1)), embeddings at ^(D+1), head and final norm at lr; 1: off")
    freeze_backbone: bool = option(False, "train only the classification head (linear probe)")
    gradient_checkpointing: bool = option(False, "recompute block activations in the backward pass: less memory, ~30% more time")
    device: str = option("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N; under torchrun each process takes GPU LOCAL_RANK")
    precision: str = option("auto", "auto (CUDA: bf16 autocast if supported, else fp16 with a grad scaler; CPU: fp32), fp32, bf16 or fp16 (CUDA only); checked by tsf.runtime.resolve_precision")
    num_workers: int = option(4, "data-loading processes per training process; 0 loads in the training process")
    seed: int = option(0, "seeds model-side randomness (dropout, drop-path; + rank under DDP) and the data order")
    log_every: int = option(20, "write a metrics line every this many optimiser steps")
    checkpoint_every: int = option(500, "write last.pt every this many optimiser steps (and at each epoch end); 0: epoch ends only")
    val_every: int = option(1, "validate (and maybe write best.pt) every this many epochs, and after the last")
    progress: bool = option(True, "show a progress bar (rank 0)")
    tensorboard: bool = option(False, "write TensorBoard event files into the run folder (rank 0; watch with tensorboard --logdir runs/)")

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
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
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
