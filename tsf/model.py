"""TimeSformer: a video transformer with divided space-time attention (Bertasius et al., ICML 2021).

One readable file. Parameter names are those of the official code (facebookresearch/TimeSformer),
so an official checkpoint is a state dict of this model once its ``model.`` prefix is removed.

Token layout, used everywhere in this file and by ``tsf.attention``:
    x = [cls, p(0,0), p(0,1), ..., p(0,T-1), p(1,0), ...]   shape (B, 1 + N*T, D)
i.e. patch-major, frame-minor: the token of patch n (row-major in the h x w grid) at frame t sits
at index ``1 + n*T + t``. Space-only models keep one sequence per frame instead: (B*T, 1 + N, D).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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

    Fused (``F.scaled_dot_product_attention``, flash/memory-efficient kernels) unless
    ``fused`` is False; the explicit path materialises the probabilities and passes them through
    ``attn_probs`` (an identity) so that hooks can record them (see ``tsf.attention``). On CPU the
    fused path computes sequences of at most 16 tokens (temporal attention) with batched matmuls,
    faster there than the flash kernel; nothing passes through ``attn_probs`` on the fused path.
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
        if not self.fused:
            attn = self.attn_probs(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
            x = F.dropout(attn, drop, self.training) @ v
        elif L <= _SHORT_SEQUENCE and not drop and qkv.device.type == "cpu" and _autocast_dtype("cpu") is None:
            # CPU, short sequences (temporal attention over T frames): batched matmuls beat the
            # flash kernel, which is tuned for long sequences (~1.6x forward, ~2x forward+backward)
            if torch.is_grad_enabled():
                return _ShortAttention.apply(qkv, self.num_heads, self.scale)
            x = torch.matmul(q, k.transpose(-2, -1)).mul_(self.scale).softmax(dim=-1) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        # (B, heads, L, D/heads) -> (B, L, D); a view when the kernel wrote (B, L, heads, D/heads),
        # as the CPU flash kernel does for these strided q/k/v
        return x.transpose(1, 2).reshape(B, L, D)

    def attend_queries(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Fused attention of ``(B, Lq, D)`` queries over ``(B, L, 2D)`` keys and values -> ``(B, Lq, D)``."""
        B, Lq, D = q.shape
        L, Dh = kv.shape[1], D // self.num_heads
        q = q.reshape(B, Lq, self.num_heads, Dh).transpose(1, 2)
        k, v = kv.reshape(B, L, 2, self.num_heads, Dh).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return x.transpose(1, 2).reshape(B, Lq, D)

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
        self._shortcuts = True  # fold + class-token-only last block; count_flops turns them off

    def forward(self, x: torch.Tensor, num_frames: int, cls_only: bool = False) -> torch.Tensor:
        """``(B, L, D)`` tokens -> ``(B, L, D)``; with ``cls_only``, just the class token ``(B, 1, D)``,
        skipping what only the patch tokens' outputs need (``forward_features`` asks this of the
        last block, whose patch tokens nobody reads, when ``cls_only_applies()``)."""
        if self._lean_path_applies():
            return self._forward_lean(x, num_frames, cls_only)
        x = self._forward_reference(x, num_frames)
        return x[:, :1] if cls_only else x

    def _forward_reference(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The block written plainly, module by module (taken under hooks and ``torch.compile``)."""
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

    # -- the lean path: same maths, less memory, fewer copies and FLOPs ---------------------------
    # Training: LayerNorm+Linear and GELU+Linear are autograd functions that keep only their input
    # and recompute the LayerNorm / GELU output in the backward pass (cheap elementwise work), so a
    # block saves ~16 token-widths of activations instead of ~23 (CPU, base 8x224: 0.65x the step
    # memory of transformers' Timesformer, and a faster step). Inference (eval, no grad): in-place
    # GELU and residual adds on tensors the block owns (never on its input), and temporal_attn.proj
    # followed by temporal_fc folded into one Linear (two linear maps in a row). Both: in the last
    # block only the class token is carried through the spatial attention's queries, the
    # projection and the MLP (the head reads nothing else): ~5% of the model's FLOPs skipped.
    def _lean_path_applies(self) -> bool:
        if _is_compiling():  # inductor fuses and rematerialises the reference path itself
            return False
        mlp, attns = self.mlp, [self.attn]
        norms, linears = [self.norm1, self.norm2], [self.attn.qkv, self.attn.proj, mlp.fc1, mlp.fc2]
        if self.attention_type == "divided_space_time":
            attns.append(self.temporal_attn)
            norms.append(self.temporal_norm1)
            linears += [self.temporal_attn.qkv, self.temporal_attn.proj, self.temporal_fc]
        return (
            all(type(m) is nn.LayerNorm and m.weight is not None and m.bias is not None for m in norms)
            # training needs plain Linears (their weights enter the autograd functions); inference
            # calls the linear modules, so tsf.quantize's int8 layers take this path too
            and (not torch.is_grad_enabled() or all(type(m) is nn.Linear for m in linears))
            and type(mlp.act) is nn.GELU
            and (not self.training or mlp.drop.p == 0.0)
            and _hookless(self, mlp, mlp.act, *attns, *norms, *linears)
        )

    def cls_only_applies(self) -> bool:
        """Whether ``forward(..., cls_only=True)`` may skip work: not when hooks watch the block or
        its spatial attention probabilities, nor on the explicit path (attention maps need every
        query), nor while ``count_flops`` counts the architecture's FLOPs."""
        return self._lean_path_applies() and self._shortcuts and self.attn.fused and _hookless(self.attn.attn_probs)

    def _mlp_lean(self, x: torch.Tensor) -> torch.Tensor:
        mlp = self.mlp
        return _gelu_linear(mlp.act, mlp.fc2, _layer_norm_linear(self.norm2, x, mlp.fc1))

    def _residual_mlp(self, x: torch.Tensor, infer: bool) -> torch.Tensor:
        return x.add_(self._mlp_lean(x)) if infer else x + self.drop_path(self._mlp_lean(x))

    def _cls_attention(self, xs: torch.Tensor) -> torch.Tensor:
        """Spatial attention output ``(S, 1, D)`` of the first (class) token of each of the S
        sequences in ``xs`` ``(S, L, D)``: keys and values of every token, one query per sequence."""
        a, D = self.attn, xs.shape[-1]
        if type(a.qkv) is nn.Linear:
            w, b = a.qkv.weight, a.qkv.bias
            q = _layer_norm_linear(self.norm1, xs[:, :1], w[:D], None if b is None else b[:D])
            kv = _layer_norm_linear(self.norm1, xs, w[D:], None if b is None else b[D:])
        else:  # e.g. int8: the module computes all three
            qkv = a.qkv(self.norm1(xs))
            q, kv = qkv[:, :1, :D], qkv[..., D:]
        return self.drop_path(a.proj_drop(a.proj(a.attend_queries(q, kv))))

    def _forward_lean(self, x: torch.Tensor, num_frames: int, cls_only: bool = False) -> torch.Tensor:
        infer = not self.training and not torch.is_grad_enabled()
        cls_only = cls_only and self.cls_only_applies()
        if self.attention_type != "divided_space_time":
            if cls_only:
                res = self._cls_attention(x)
                x = x[:, :1]
            else:
                a = self.attn
                res = self.drop_path(a.proj_drop(a.proj(a.attend(_layer_norm_linear(self.norm1, x, a.qkv)))))
            return self._residual_mlp(_add_into(res, x) if infer else x + res, infer)

        B, L, D = x.shape
        T = num_frames
        N = (L - 1) // T
        cls_token, patches = x[:, :1], x[:, 1:]

        # temporal: LayerNorm and qkv act per token, so they run on the (B, N*T, D) stream as it
        # is; the (B*N, T) sequences, one per patch, are a view of the qkv output
        t = self.temporal_attn
        a = t.attend(_layer_norm_linear(self.temporal_norm1, patches, t.qkv).view(B * N, T, 3 * D))
        if infer and self._shortcuts and type(t.proj) is nn.Linear and type(self.temporal_fc) is nn.Linear:
            patches = _add_into(F.linear(a, *self._folded_temporal_projection()).view(B, N * T, D), patches)
        else:
            res = self.drop_path(t.proj_drop(t.proj(a)))  # (B*N, T, D)
            res = self.temporal_fc(res.view(B, N * T, D))
            patches = _add_into(res, patches) if infer else patches + res

        # spatial: one (1+N)-token sequence per frame, the class token prepended to each; one copy
        xs = torch.cat((cls_token.unsqueeze(1).expand(B, T, 1, D), patches.view(B, N, T, D).transpose(1, 2)), dim=2)
        xs = xs.view(B * T, 1 + N, D)
        if cls_only:
            res_cls = self._cls_attention(xs).view(B, T, D).mean(dim=1, keepdim=True)
            return self._residual_mlp(_add_into(res_cls, cls_token) if infer else cls_token + res_cls, infer)
        s = self.attn
        res = self.drop_path(s.proj_drop(s.proj(s.attend(_layer_norm_linear(self.norm1, xs, s.qkv)))))
        res = res.view(B, T, 1 + N, D)
        res_cls = res[:, :, 0].mean(dim=1, keepdim=True)  # (B, 1, D)
        res_patches = res[:, :, 1:].transpose(1, 2)  # (B, N, T, D) view, back to patch-major order
        if infer:
            x = torch.empty_like(x)
            torch.add(cls_token, res_cls, out=x[:, :1])
            torch.add(patches.view(B, N, T, D), res_patches, out=x[:, 1:].view(B, N, T, D))
        else:
            x = torch.cat((cls_token + res_cls, (patches.view(B, N, T, D) + res_patches).reshape(B, N * T, D)), dim=1)
        return self._residual_mlp(x, infer)

    def _folded_temporal_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``temporal_fc(proj(a))`` as one linear map ``(W_fc W_proj, W_fc b_proj + b_fc)`` (eval only:
        dropout and drop path sit between the two in training).

        On CPU the product is cached and recomputed when any of the four tensors changes: keyed on
        their storage and version counters (optimiser steps, ``load_state_dict``, in-place edits)
        plus their sums (edits through ``.data``, which bypass version counters). On GPU it is
        recomputed every forward: 0.9 GFLOP is nothing there, and the check would synchronise.
        """
        proj, fc = self.temporal_attn.proj, self.temporal_fc
        tensors = (proj.weight, proj.bias, fc.weight, fc.bias)
        with torch.inference_mode(False), torch.no_grad(), _autocast_off(proj.weight.device.type):
            if proj.weight.device.type != "cpu":
                return fc.weight @ proj.weight, torch.addmv(fc.bias, fc.weight, proj.bias)
            key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
            sums = torch.stack([t.sum() for t in tensors])
            cache = self.__dict__.get("_fold_cache")
            if cache is None or cache[0] != key or not torch.equal(cache[1], sums):
                cache = (key, sums, fc.weight @ proj.weight, torch.addmv(fc.bias, fc.weight, proj.bias))
                self.__dict__["_fold_cache"] = cache
            return cache[2], cache[3]


# -- lean building blocks ----------------------------------------------------------------------
_SHORT_SEQUENCE = 16  # CPU inference: attention over at most this many tokens uses two matmuls


def _add_into(owned: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``owned + other``, in place in ``owned`` (a tensor the caller made) when that keeps the dtype
    the sum would have (under autocast a bf16 branch output must not demote the fp32 stream)."""
    if owned.dtype == torch.result_type(owned, other):
        return owned.add_(other)
    return other + owned


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def _hookless(*modules: nn.Module) -> bool:
    """True when no forward (pre-)hook, global or per module, would notice a module being bypassed."""
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return False
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast compute dtype on ``device_type``, None when autocast is off."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


def _autocast_off(device_type: str):
    import contextlib

    return torch.autocast(device_type, enabled=False) if _autocast_dtype(device_type) else contextlib.nullcontext()


class _LayerNormLinear(torch.autograd.Function):
    """``linear(layer_norm(x))`` that saves ``x`` (usually alive anyway as the residual stream)
    rather than the LayerNorm output, which the backward pass recomputes. Autocast-aware: the
    LayerNorm runs in fp32 and the matmul in the autocast dtype, as autocast would do."""

    @staticmethod
    def forward(ctx, x, ln_weight, ln_bias, eps, weight, bias):
        device_type = x.device.type
        dtype = _autocast_dtype(device_type)
        ln_dtype = torch.float32 if dtype is not None else x.dtype
        with _autocast_off(device_type):
            xn, mean, rstd = torch.native_layer_norm(
                x.to(ln_dtype), (x.shape[-1],), ln_weight.to(ln_dtype), ln_bias.to(ln_dtype), eps
            )
            dtype = dtype or xn.dtype
            y = F.linear(xn.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x, ln_weight, ln_bias, weight, mean, rstd)
        ctx.eps, ctx.dtype, ctx.ln_dtype = eps, dtype, ln_dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, ln_weight, ln_bias, weight, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        x_ln, w_ln, b_ln = x.to(ctx.ln_dtype), ln_weight.to(ctx.ln_dtype), ln_bias.to(ctx.ln_dtype)
        dy = dy.to(ctx.dtype)
        dy2 = dy.reshape(-1, dy.shape[-1])
        grad_w = grad_b = None
        if needs[4]:
            xn = torch.native_layer_norm(x_ln, (x.shape[-1],), w_ln, b_ln, ctx.eps)[0]
            grad_w = dy2.t().mm(xn.reshape(-1, xn.shape[-1]).to(ctx.dtype)).to(weight.dtype)
            del xn
        if ctx.bias_dtype is not None and needs[5]:
            grad_b = dy2.sum(0).to(ctx.bias_dtype)
        grad_x = grad_lw = grad_lb = None
        if needs[0] or needs[1] or needs[2]:
            dxn = dy.matmul(weight.to(ctx.dtype)).to(ctx.ln_dtype)
            grad_x, grad_lw, grad_lb = torch.ops.aten.native_layer_norm_backward(
                dxn, x_ln, [x.shape[-1]], mean, rstd, w_ln, b_ln, [needs[0], needs[1], needs[2]]
            )
            grad_x = None if grad_x is None else grad_x.to(x.dtype)
            grad_lw = None if grad_lw is None else grad_lw.to(ln_weight.dtype)
            grad_lb = None if grad_lb is None else grad_lb.to(ln_bias.dtype)
        return grad_x, grad_lw, grad_lb, None, grad_w, grad_b


class _ShortAttention(torch.autograd.Function):
    """Softmax attention of ``(S, L, 3D)`` packed q/k/v over many short sequences (CPU): batched
    matmuls both ways. Saves its qkv input and the ``(S, heads, L, L)`` probabilities, no copies."""

    @staticmethod
    def forward(ctx, qkv, num_heads, scale):
        S, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.reshape(S, L, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
        probs = torch.matmul(q, k.transpose(-2, -1)).mul_(scale).softmax(dim=-1)
        ctx.save_for_backward(qkv, probs)
        ctx.num_heads, ctx.scale = num_heads, scale
        return (probs @ v).transpose(1, 2).reshape(S, L, D)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        qkv, probs = ctx.saved_tensors
        S, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        H = ctx.num_heads
        q, k, v = qkv.reshape(S, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
        do = dout.reshape(S, L, H, D // H).transpose(1, 2)  # (S, heads, L, D/heads)
        dv = probs.transpose(-2, -1) @ do
        ds = torch._softmax_backward_data(do @ v.transpose(-2, -1), probs, -1, probs.dtype).mul_(ctx.scale)
        dq, dk = ds @ k, ds.transpose(-2, -1) @ q
        # (3, S, heads, L, D/heads) -> (S, L, 3, heads, D/heads): the qkv layout
        return torch.stack((dq, dk, dv)).permute(1, 3, 0, 2, 4).reshape(S, L, 3 * D), None, None


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h))`` that saves ``h`` only; the backward pass recomputes ``gelu(h)``."""

    @staticmethod
    def forward(ctx, h, weight, bias, approximate):
        device_type = h.device.type
        dtype = _autocast_dtype(device_type)
        with _autocast_off(device_type):
            g = F.gelu(h, approximate=approximate)
            dtype = dtype or g.dtype
            y = F.linear(g.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
        ctx.save_for_backward(h, weight)
        ctx.dtype, ctx.approximate = dtype, approximate
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        h, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dy = dy.to(ctx.dtype)
        dy2 = dy.reshape(-1, dy.shape[-1])
        grad_h = grad_w = grad_b = None
        if needs[1]:
            g = F.gelu(h, approximate=ctx.approximate).to(ctx.dtype)
            grad_w = dy2.t().mm(g.reshape(-1, g.shape[-1])).to(weight.dtype)
            del g
        if ctx.bias_dtype is not None and needs[2]:
            grad_b = dy2.sum(0).to(ctx.bias_dtype)
        if needs[0]:
            dg = dy.matmul(weight.to(ctx.dtype)).to(h.dtype)
            grad_h = torch.ops.aten.gelu_backward(dg, h, approximate=ctx.approximate)
        return grad_h, grad_w, grad_b, None


def _layer_norm_linear(norm: nn.LayerNorm, x: torch.Tensor, linear, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``linear(norm(x))``; ``linear`` is a module, or a weight tensor with ``bias``."""
    if isinstance(linear, nn.Module):
        if not torch.is_grad_enabled():
            return linear(norm(x))
        linear, bias = linear.weight, linear.bias
    if torch.is_grad_enabled():
        return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear, bias)
    return F.linear(norm(x), linear, bias)


def _gelu_linear(act: nn.GELU, linear: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled():
        return _GeluLinear.apply(h, linear.weight, linear.bias, act.approximate)
    return linear(torch.ops.aten.gelu_(h, approximate=act.approximate))  # h: a fresh fc1 output


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
    def set_fused_attention(self, fused: bool) -> None:
        """Fused SDPA kernels (default) or the explicit softmax path (needed for attention maps)."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused = fused

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

    # -- forward --------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        layout = f"(B, {cfg.in_chans}, T, H, W) float with H and W multiples of {cfg.patch_size}"
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

    def _pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``pos_embed`` for a grid_h x grid_w patch grid: bicubic 2-D resize, class token kept."""
        g = self.config.grid_size
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        # (1, g*g, D) -> (1, D, g, g)
        patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        # (1, D, h, w) -> (1, h*w, D)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def _time_embed(self, num_frames: int) -> torch.Tensor:
        """``time_embed`` for ``num_frames`` frames: linear 1-D resize."""
        if num_frames == self.time_embed.shape[1]:
            return self.time_embed
        # (1, T0, D) -> (1, D, T0) -> (1, D, T) -> (1, T, D)
        resized = F.interpolate(self.time_embed.transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
        return resized.transpose(1, 2)

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
        x = self.pos_drop(x + self._pos_embed(grid_h, grid_w))
        if self.config.attention_type == "space_only":
            return x
        D = x.shape[-1]
        cls_token = x[:B, :1]  # identical in every frame: cls_token + pos_embed[0]
        # (B*T, N, D) -> (B, N, T, D): patch-major, frame-minor
        patches = x[:, 1:].reshape(B, T, N, D).transpose(1, 2)
        patches = self.time_drop(patches + self._time_embed(T).unsqueeze(1))
        return torch.cat((cls_token, patches.reshape(B, N * T, D)), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised class-token embedding ``(B, D)``, the input of the head."""
        B, T = x.shape[0], x.shape[2]
        x = self.embed(x)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # only the class token leaves the last block: skip the rest of its work when allowed
            cls_only = i == last and block.cls_only_applies()
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


def create_model(name: str = "base_8x224", **overrides) -> TimeSformer:
    """A randomly initialised TimeSformer from a named preset (``PRESETS``), fields overridable.

    Example: ``create_model("tiny", attention_type="space_only", num_classes=10)``.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return TimeSformer.from_config(PRESETS[name], **overrides)


def count_flops(model: TimeSformer, num_frames: Optional[int] = None, img_size: Optional[int] = None) -> int:
    """Floating-point operations of one forward pass at batch 1 (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.config
    clip = torch.zeros(1, cfg.in_chans, num_frames or cfg.num_frames, img_size or cfg.img_size, img_size or cfg.img_size)
    counter = FlopCounterMode(display=False)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    shortcuts = [b._shortcuts for b in blocks]
    try:
        for b in blocks:  # the architecture's FLOPs, not those of the lean inference path
            b._shortcuts = False
        with counter, torch.no_grad():
            model(clip.to(model.cls_token.device))
    finally:
        for b, shortcut in zip(blocks, shortcuts):
            b._shortcuts = shortcut
    return counter.get_total_flops()


__all__ = ["TimeSformer", "TimeSformerConfig", "PRESETS", "ATTENTION_TYPES", "create_model", "count_flops"]
