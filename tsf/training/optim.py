"""Optimisation: parameter groups (weight decay, layer-wise lr decay), the optimiser, and the
learning-rate schedule (linear warmup, then step, cosine or constant).

Model-agnostic: layer-wise decay asks the model for each parameter's depth (``model.layer_id``,
like timm's ``group_matcher``) rather than parsing parameter names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0, lr: float = 1.0,
                     decay_norms_and_biases: bool = False) -> list[dict]:
    """Optimiser parameter groups: no weight decay on norms, biases (1-D parameters) and the
    parameters the model lists in ``no_weight_decay()`` (unless ``decay_norms_and_biases``);
    each group's ``lr`` scaled by ``layer_decay`` per layer below the top when ``layer_decay < 1``.

    Args:
        model: the model (not a DDP wrapper). Layer decay needs ``model.layer_id(param_name) -> int``
            (0 for the input embeddings, growing with depth; the largest id trains at ``lr``).
        weight_decay: for the parameters that decay.
        layer_decay: 1 for none; layer ``i`` of a model whose top layer is ``L`` trains at ``lr x layer_decay^(L - i)``.
        lr: the peak learning rate the scales multiply.
        decay_norms_and_biases: decay every parameter, as the official TimeSformer optimiser does.
    """
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decays_by_layer = layer_decay != 1.0
    if decays_by_layer and not hasattr(model, "layer_id"):
        raise ValueError(f"layer_decay={layer_decay} needs a model with layer_id(param_name); "
                         f"{type(model).__name__} has none (use 1.0)")
    # over every parameter, trainable or not, so that freezing some does not shift the scales
    layers = {name: model.layer_id(name) if decays_by_layer else 0 for name, _ in model.named_parameters()}
    top = max(layers.values(), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = decay_norms_and_biases or (param.ndim > 1 and name not in no_decay)
        layer = layers[name]
        group = groups.setdefault((layer, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0, "lr": lr * layer_decay ** (top - layer),
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the paper's) or AdamW, over ``parameter_groups``."""
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
