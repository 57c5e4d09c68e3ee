"""TimeSformer: a video transformer with divided space-time attention (Bertasius et al., ICML 2021).

One readable file. Parameter names are those of the official code (facebookresearch/TimeSformer),
so an official checkpoint is a state dict of this model once its ``model.`` prefix is removed.

Token layout, used everywhere in this file and by ``tsf.attention``:
    x = [cls, p(0,0), p(0,1), ..., p(0,T-1), p(1,0), ...]   shape (B, 1 + N*T, D)
i.e. patch-major, frame-minor: the token of patch n (row-major in the h x w grid) at frame t sits
at index ``1 + n*T + t``. Space-only models keep one sequence per frame instead: (B*T, 1 + N, D).

Every block is written plainly here (``Block.forward``); the speed tricks that compute the same
maths in less memory and time live in ``tsf.lean``, which ``Block.forward`` hands over to where
they apply.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import lean

ATTENTION_TYPES = ("divided_space_time", "space_only", "joint_space_time")


@dataclass(frozen=True)
class TimeSformerConfig:
    img_size: int = 224  # training crop; other sizes work at run time (pos_embed is interpolated)
    patch_size: int = 16  # square patches; the grid is img_size // patch_size per side
    num_frames: int = 8  # frames per clip; other counts work at run time (time_embed is interpolated)
    num_classes: int = 400  # 0 makes the head an identity (feature extractor)
    embed_dim: int = 768  # token width D
    depth: int = 12  # number of blocks
    num_heads: int = 12  # attention heads; embed_dim must divide by it
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * embed_dim
    qkv_bias: bool = True  # all official checkpoints use biased q/k/v projections
    attention_type: str = "divided_space_time"  # one of ATTENTION_TYPES
    drop_rate: float = 0.0  # dropout after embeddings, projections and MLP
    attn_drop_rate: float = 0.0  # dropout on attention probabilities
    drop_path_rate: float = 0.1  # stochastic depth, linearly increasing to this value at the last block
    layernorm_eps: float = 1e-6  # the official models use 1e-6, not PyTorch's 1e-5
    in_chans: int = 3  # input channels (RGB)
    # The official code starts time_embed at zero, which is right from ImageNet weights but leaves a
    # from-scratch model symmetric in time (it can stall on order-only tasks); loaded checkpoints
    # overwrite it either way.
    time_embed_init_std: float = 0.02
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # input normalisation of the official recipes
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    class_names: Optional[tuple[str, ...]] = None  # label id -> name, travels with checkpoints

    def __post_init__(self):
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type={self.attention_type!r}: expected one of {ATTENTION_TYPES}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; "
                f"pass num_heads= so that embed_dim // num_heads is the head width (64 in all official models)"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if self.class_names is not None and self.num_classes and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class_names given for num_classes={self.num_classes}"
            )

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TimeSformerConfig":
        d = dict(d)
        for key in ("mean", "std", "class_names"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TimeSformerConfig keys {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, TimeSformerConfig] = {
    # the official K400/K600/SSv2 models: ViT-B/16, 8 frames at 224 px
    "base_8x224": TimeSformerConfig(),
    # TimeSformer-HR: 16 frames at 448 px
    "hr_16x448": TimeSformerConfig(img_size=448, num_frames=16),
    # TimeSformer-L: 96 frames at 224 px
    "large_96x224": TimeSformerConfig(num_frames=96),
    # CPU demos and the synthetic tasks: 32 px, 16 patches per frame, 8 frames
    "tiny": TimeSformerConfig(
        img_size=32, patch_size=8, num_frames=8, num_classes=4, embed_dim=64, depth=3, num_heads=4,
        drop_path_rate=0.0,
    ),
    # unit tests: the smallest model that still has every moving part
    "micro": TimeSformerConfig(
        img_size=32, patch_size=16, num_frames=4, num_classes=5, embed_dim=32, depth=2, num_heads=2,
        drop_path_rate=0.0,
    ),
}


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention over the second axis of ``(B, L, D)``.

    Fused (``F.scaled_dot_product_attention``, flash/memory-efficient kernels) unless ``fused``
    is False; the explicit path, for attention maps, materialises the probabilities and passes
    them through ``attn_probs`` (an identity) so that hooks can record them (``tsf.attention``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_probs = nn.Identity()
        self.fused = True

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """``(B, L, 3D)`` projected queries, keys and values -> ``(B, L, D)`` heads' outputs (before ``proj``)."""
        B, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        # (B, L, 3D) -> (3, B, heads, L, D/heads): views of the qkv output
        q, k, v = qkv.reshape(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = self.attn_probs(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
            x = F.dropout(attn, drop, self.training) @ v
        # (B, heads, L, D/heads) -> (B, L, D); a view when the kernel wrote (B, L, heads, D/heads),
        # as the CPU flash kernel does for these strided q/k/v
        return x.transpose(1, 2).reshape(B, L, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_drop(self.proj(self.attend(self.qkv(x))))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One transformer block; ``attention_type`` decides how tokens meet.

    divided_space_time: temporal attention (each patch over the T frames) -> ``temporal_fc`` ->
    residual; then spatial attention (each frame over its N patches, with the class token
    replicated into every frame and its T outputs averaged back); then the MLP.
    space_only / joint_space_time: a plain ViT block over whatever sequence it is given.
    """

    def __init__(self, cfg: TimeSformerConfig, drop_path: float):
        super().__init__()
        dim, eps = cfg.embed_dim, cfg.layernorm_eps
        self.attention_type = cfg.attention_type
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        if self.attention_type == "divided_space_time":
            self.temporal_norm1 = nn.LayerNorm(dim, eps=eps)
            self.temporal_attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
            self.temporal_fc = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        self.lean_enabled = True  # tsf.lean may run this block; TimeSformer.lean_path(False) stops it
        self.fixed_weights_scope = None  # a token while TimeSformer.fixed_weights() holds

    def forward(self, x: torch.Tensor, num_frames: int, cls_only: bool = False) -> torch.Tensor:
        """``(B, L, D)`` tokens -> ``(B, L, D)``.

        Args:
            x: the token layout of this module's docstring (space-only: one sequence per frame).
            num_frames: T, the frames the tokens come from.
            cls_only: the caller reads only the class token of the output (the last block, whose
                patch tokens nobody reads): the lean path may then skip their work and return
                ``(B, 1, D)``.
        """
        if lean.applies(self):  # the same maths in less memory and time (tsf/lean.py)
            return lean.forward(self, x, num_frames, cls_only)
        if self.attention_type != "divided_space_time":
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))

        B, L, D = x.shape
        T = num_frames
        N = (L - 1) // T
        cls_token, patches = x[:, :1], x[:, 1:]

        # temporal: (B, N*T, D) -> (B*N, T, D), one sequence per patch
        xt = patches.reshape(B * N, T, D)
        res = self.drop_path(self.temporal_attn(self.temporal_norm1(xt)))
        patches = patches + self.temporal_fc(res.reshape(B, N * T, D))

        # spatial: (B, N*T, D) -> (B*T, N, D), one sequence per frame, class token prepended to each
        xs = patches.reshape(B, N, T, D).transpose(1, 2).reshape(B * T, N, D)
        xs = torch.cat((cls_token.repeat_interleave(T, dim=0), xs), dim=1)  # (B*T, 1+N, D)
        res = self.drop_path(self.attn(self.norm1(xs)))
        res_cls = res[:, :1].reshape(B, T, D).mean(dim=1, keepdim=True)  # (B, 1, D)
        # (B*T, N, D) -> (B, N*T, D), back to patch-major order
        res_patches = res[:, 1:].reshape(B, T, N, D).transpose(1, 2).reshape(B, N * T, D)

        x = torch.cat((cls_token + res_cls, patches + res_patches), dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``pos_embed`` of a square patch grid, resized to ``grid``: bicubic in 2-D, class position kept.

    (The official code resizes the grid as a 1-D sequence with nearest neighbours, which
    scrambles its rows.) Used by the forward pass and by ``tsf.weights`` when loading.

    Args:
        pos_embed: ``(1, 1 + g*g, D)``, the class position then the g x g patch positions, row-major.
        grid: ``(h, w)`` patches to resize to.
    """
    old, (h, w) = math.isqrt(pos_embed.shape[1] - 1), grid
    if (old, old) == (h, w):
        return pos_embed
    # (1, g*g, D) -> (1, D, g, g), in fp32 so that half-precision checkpoints round once
    patch_pos = pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
    # (1, D, h, w) -> (1, h*w, D)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos_embed.dtype)
    return torch.cat((pos_embed[:, :1], patch_pos), dim=1)


def resize_time_embed(time_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``time_embed`` ``(1, T0, D)`` resized to ``(1, num_frames, D)``: linear in 1-D.

    Args:
        time_embed: one embedding per frame.
        num_frames: frames to resize to.
    """
    if time_embed.shape[1] == num_frames:
        return time_embed
    # (1, T0, D) -> (1, D, T0) -> (1, D, T) -> (1, T, D), in fp32 as above
    resized = F.interpolate(time_embed.transpose(1, 2).float(), size=num_frames, mode="linear", align_corners=False)
    return resized.transpose(1, 2).to(time_embed.dtype)


class TimeSformer(nn.Module):
    """TimeSformer video classifier. Input ``(B, 3, T, H, W)`` float (normalised), output ``(B, num_classes)``.

    Args:
        img_size: training crop size in pixels.
        num_classes: number of output classes (0: no head, ``forward`` returns features).
        num_frames: frames per clip the embeddings are sized for.
        attention_type: ``divided_space_time``, ``space_only`` or ``joint_space_time``.
        pretrained_model: path of a checkpoint in any format ``tsf.from_pretrained`` reads; its
            weights are loaded into this architecture (a head of another class count is
            re-initialised, embeddings of another size are interpolated).
        **kwargs: any other ``TimeSformerConfig`` field (``patch_size``, ``embed_dim``, ``depth``,
            ``num_heads``, ``mlp_ratio``, ``drop_rate``, ``attn_drop_rate``, ``drop_path_rate``, ...).
    """

    def __init__(
        self,
        img_size: int = 224,
        num_classes: int = 400,
        num_frames: int = 8,
        attention_type: str = "divided_space_time",
        pretrained_model: str = "",
        **kwargs,
    ):
        super().__init__()
        unknown = set(kwargs) - set(TimeSformerConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"TimeSformer got unknown arguments {sorted(unknown)}; valid: {list(TimeSformerConfig.__dataclass_fields__)}")
        cfg = TimeSformerConfig(
            img_size=img_size, num_classes=num_classes, num_frames=num_frames, attention_type=attention_type, **kwargs
        )
        self.config = cfg
        self.gradient_checkpointing = False
        D = cfg.embed_dim

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(cfg.in_chans, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        if cfg.attention_type != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, D))
            self.time_drop = nn.Dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(D, eps=cfg.layernorm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()
        if pretrained_model:
            # imported here, the one import back from tsf.weights: that module builds TimeSformers
            from .weights import load_weights_into

            load_weights_into(self, pretrained_model)

    @classmethod
    def from_config(cls, cfg: TimeSformerConfig, **overrides) -> "TimeSformer":
        return cls(**{**asdict(replace(cfg, **overrides))})

    def init_weights(self) -> None:
        """The official initialisation (truncated normal 0.02, zero biases), with ``temporal_fc``
        zeroed in every block but the first (as the official code does) so that divided attention
        starts as a spatial-only ViT."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if hasattr(self, "time_embed"):
            nn.init.normal_(self.time_embed, std=self.config.time_embed_init_std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in list(self.blocks)[1:]:
            if hasattr(block, "temporal_fc"):
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    # -- switches -------------------------------------------------------------------------------
    def explicit_attention(self):
        """Within: every attention layer takes the explicit softmax path, whose probabilities pass
        through ``attn_probs`` where hooks record them (attention maps); on exit each layer's
        previous setting returns."""
        return _each_set(self, Attention, "fused", False)

    def lean_path(self, enabled: bool):
        """Within: ``tsf.lean``'s fast path allowed (where it applies) or not; off, every block
        takes its reference path and computes the architecture's full FLOPs (``tsf.cost``). On
        exit each block's previous setting returns."""
        return _each_set(self, Block, "lean_enabled", enabled)

    def fixed_weights(self):
        """Within: a promise that no parameter is edited through ``.data`` (which PyTorch's version
        counters do not see), for a loop of inference calls. ``tsf.lean``'s cached CPU weight
        copies then check the weights' contents on the first call only, rather than on every call
        (the check reads every weight: ~6% of a bf16 forward pass at batch 1 on an AMX CPU).
        Changes PyTorch does see (optimiser steps, ``load_state_dict``, in-place edits, new
        tensors) are still caught on every call. ``tsf.evaluate`` and ``tsf.prediction`` run in it."""
        return _each_set(self, Block, "fixed_weights_scope", object())

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~30% more time."""
        self.gradient_checkpointing = enabled

    def reset_classifier(self, num_classes: int, class_names: Optional[tuple[str, ...]] = None) -> None:
        """A new, freshly initialised head (fine-tuning on another label set)."""
        self.config = replace(self.config, num_classes=num_classes, class_names=class_names)
        self.head = nn.Linear(self.config.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        self.head.to(self.cls_token.device)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "time_embed"}

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise lr decay (``tsf.training.optim``): 0 for the
        patch/cls/pos/time embeddings, i+1 for block i, depth+1 for the final norm and the head."""
        top = param_name.split(".")[0]
        if top in self.no_weight_decay() or top == "patch_embed":
            return 0
        if top == "blocks":
            return int(param_name.split(".")[1]) + 1
        return self.config.depth + 1

    # -- forward --------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        layout = f"(B, {cfg.in_chans}, T, H, W) float with H and W multiples of {cfg.patch_size}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"TimeSformer expects a torch.Tensor {layout}; got {type(x).__module__}.{type(x).__name__} "
                            f"(use torch.from_numpy(array).float())")
        if x.ndim != 5:
            raise ValueError(f"TimeSformer expects a 5-D clip batch {layout}; got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_chans:
            hint = (
                " (this looks like (B, T, C, H, W), the Hugging Face layout: use x.permute(0, 2, 1, 3, 4))"
                if x.shape[2] == cfg.in_chans else ""
            )
            raise ValueError(f"TimeSformer expects {layout}; got shape {tuple(x.shape)}{hint}")
        if x.shape[-1] % cfg.patch_size or x.shape[-2] % cfg.patch_size:
            raise ValueError(f"TimeSformer expects {layout}; got H, W = {tuple(x.shape[-2:])}")
        if not x.is_floating_point():
            raise ValueError(
                f"TimeSformer expects a normalised float clip; got dtype {x.dtype} "
                f"(use tsf.data.normalize(clip, model.config.mean, model.config.std))"
            )
        weights = self.patch_embed.proj.weight.dtype
        # autocast casts float32 (not float64) inputs to its own dtype; without it the dtypes must agree
        if x.dtype != weights and (x.dtype == torch.float64 or not torch.is_autocast_enabled(x.device.type)):
            raise ValueError(f"TimeSformer's weights are {weights} and the clip is {x.dtype}: use x.to({weights})")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patches plus embeddings: ``(B, 1+N*T, D)`` (space-only: ``(B*T, 1+N, D)``)."""
        self._check_input(x)
        B, C, T, H, W = x.shape
        # (B, C, T, H, W) -> (B*T, C, H, W) -> (B*T, D, h, w)
        x = self.patch_embed.proj(x.transpose(1, 2).reshape(B * T, C, H, W))
        grid_h, grid_w = x.shape[-2:]
        N = grid_h * grid_w
        x = x.flatten(2).transpose(1, 2)  # (B*T, N, D)
        x = torch.cat((self.cls_token.expand(B * T, -1, -1), x), dim=1)  # (B*T, 1+N, D)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, (grid_h, grid_w)))
        if self.config.attention_type == "space_only":
            return x
        D = x.shape[-1]
        cls_token = x[:B, :1]  # identical in every frame: cls_token + pos_embed[0]
        # (B*T, N, D) -> (B, N, T, D): patch-major, frame-minor
        patches = x[:, 1:].reshape(B, T, N, D).transpose(1, 2)
        patches = self.time_drop(patches + resize_time_embed(self.time_embed, T).unsqueeze(1))
        return torch.cat((cls_token, patches.reshape(B, N * T, D)), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised class-token embedding ``(B, D)``, the input of the head."""
        B, T = x.shape[0], x.shape[2]
        x = self.embed(x)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            cls_only = i == last  # the head reads only the class token: the block may return it alone
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, T, cls_only, use_reentrant=False)
            else:
                x = block(x, T, cls_only)
        if self.config.attention_type == "space_only":
            # (B*T, 1+N, D) -> (B, T, 1+N, D) -> frame average
            x = x.reshape(B, T, *x.shape[1:]).mean(dim=1)
        return self.norm(x)[:, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@contextlib.contextmanager
def _each_set(model: nn.Module, kind: type, attribute: str, value):
    """Within: ``attribute`` of every ``kind`` submodule of ``model`` is ``value``; on exit each its own again."""
    modules = [m for m in model.modules() if isinstance(m, kind)]
    before = [getattr(m, attribute) for m in modules]
    try:
        for m in modules:
            setattr(m, attribute, value)
        yield model
    finally:
        for m, previous in zip(modules, before):
            setattr(m, attribute, previous)


def create_model(name: str = "base_8x224", **overrides) -> TimeSformer:
    """A randomly initialised TimeSformer from a named preset (``PRESETS``), fields overridable.

    Example: ``create_model("tiny", attention_type="space_only", num_classes=10)``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return TimeSformer.from_config(PRESETS[name], **overrides)


__all__ = ["TimeSformer", "TimeSformerConfig", "PRESETS", "ATTENTION_TYPES", "create_model", "resize_pos_embed",
           "resize_time_embed"]
