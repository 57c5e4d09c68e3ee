"""The lean path of ``tsf.model.Block``: the reference path's maths in less memory and time.

Every speed trick of the model lives here, so that ``tsf.model`` reads as the paper.
``Block.forward`` hands the block to ``forward`` below whenever ``applies(block)``, the one
place that says when the lean path may run; otherwise the plainly written reference path runs.
Outputs and gradients equal the reference path's to float rounding (tests/test_lean.py).

Training: LayerNorm+Linear and GELU+Linear are autograd functions that keep only their input
and recompute the LayerNorm / GELU output in the backward pass (cheap elementwise work), so a
block saves ~16 token-widths of activations instead of ~23 (CPU, base 8x224: 0.65x the step
memory of transformers' Timesformer, and a faster step).

Inference (eval, no grad): in-place GELU and residual adds on tensors the block owns (never on
its input), and ``temporal_attn.proj`` followed by ``temporal_fc`` folded into one Linear (two
linear maps in a row).

Both: in the last block (``cls_only``) only the class token is carried through the spatial
attention's queries, the projection and the MLP (the head reads nothing else): ~5% of the
model's FLOPs skipped. On CPU, attention over at most ``SHORT_SEQUENCE`` tokens (temporal
attention over T frames) runs as batched matmuls, which beat the flash kernel there (tuned for
long sequences): ~1.6x forward, ~2x forward+backward.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals
from torch.utils._python_dispatch import _get_current_dispatch_mode  # a FLOP counter's or tracer's mode

SHORT_SEQUENCE = 16  # CPU: attention over at most this many tokens runs as two batched matmuls


def applies(block: nn.Module) -> bool:
    """Whether the ``tsf.model.Block`` ``block`` may take the lean path now. It may not:

    - while ``TimeSformer.lean_path(False)`` holds (``block.lean_enabled``);
    - under ``torch.compile``: inductor fuses and rematerialises the reference path itself;
    - when a forward hook, global or on a module the lean path bypasses, would notice
      (``tsf.attention`` records maps through hooks);
    - when a norm or the activation is not the plain ``nn.LayerNorm`` (affine) or ``nn.GELU`` the
      lean path reimplements, or, with grad enabled, a linear layer is not an ``nn.Linear`` (its
      weights enter the autograd functions; inference calls the linear modules, so
      ``tsf.quantize``'s int8 layers take the inference lean path);
    - in training with MLP dropout, which would sit inside the fused GELU+Linear.
    """
    if not block.lean_enabled or _is_compiling():
        return False
    mlp, attentions = block.mlp, [block.attn]
    norms, linears = [block.norm1, block.norm2], [block.attn.qkv, block.attn.proj, mlp.fc1, mlp.fc2]
    if block.attention_type == "divided_space_time":
        attentions.append(block.temporal_attn)
        norms.append(block.temporal_norm1)
        linears += [block.temporal_attn.qkv, block.temporal_attn.proj, block.temporal_fc]
    return (
        all(type(m) is nn.LayerNorm and m.weight is not None and m.bias is not None for m in norms)
        and (not torch.is_grad_enabled() or all(type(m) is nn.Linear for m in linears))
        and type(mlp.act) is nn.GELU
        and (not block.training or mlp.drop.p == 0.0)
        and _hookless(block, mlp, mlp.act, *attentions, *norms, *linears)
    )


def forward(block: nn.Module, x: torch.Tensor, num_frames: int, cls_only: bool) -> torch.Tensor:
    """``block.forward`` on the lean path (see ``tsf.model.Block.forward`` for the arguments).

    Returns ``(B, 1, D)``, the class token alone, when ``cls_only`` and the attention allows
    skipping the other queries: fused (the explicit path's maps need every query) and no hook on
    its probabilities; ``(B, L, D)`` otherwise.

    CPU inference runs the linear maps on oneDNN's matmul with weights reordered into its blocked
    layout once and cached (``_cpu_linears``), GELU fused into fc1: fp32 2.0-2.4x faster than
    ``F.linear`` (MKL) on the AMD CPU measured, bf16 ~15%. Under bf16 autocast the block runs
    with autocast off and explicit dtypes: weights cast to bf16 once (autocast casts every weight
    on every call), the attention in bf16 (``_attend``), the residual stream and LayerNorm in
    fp32.
    """
    infer = not block.training and not torch.is_grad_enabled()
    if infer and x.device.type == "cpu":
        dtype = _autocast_dtype("cpu")
        if dtype == torch.bfloat16:
            lin = _cpu_linears(block, torch.bfloat16)
            with torch.autocast("cpu", enabled=False):
                return _forward(block, x, num_frames, cls_only, infer, lin)
        # under a dispatch mode (tsf.cost.executed_flops counts FLOPs in one) the plain modules run:
        # the same maths, in operators whose FLOPs have formulas
        if dtype is None and x.dtype == torch.float32 and _onednn_linear(torch.float32) and _get_current_dispatch_mode() is None:
            return _forward(block, x, num_frames, cls_only, infer, _cpu_linears(block, torch.float32))
    return _forward(block, x, num_frames, cls_only, infer, _PLAIN)


def _forward(block: nn.Module, x: torch.Tensor, num_frames: int, cls_only: bool, infer: bool, lin: "_Linears"):
    cls_only = cls_only and block.attn.fused and _hookless(block.attn.attn_probs)
    if block.attention_type != "divided_space_time":
        if cls_only:
            res = _cls_attention(block, x, lin)
            x = x[:, :1]
        else:
            a = block.attn
            res = block.drop_path(a.proj_drop(lin(a.proj, _attend(a, _layer_norm_linear(block.norm1, x, a.qkv, lin=lin)))))
        return _residual_mlp(block, _add_into(res, x) if infer else x + res, infer, lin)

    B, L, D = x.shape
    T = num_frames
    N = (L - 1) // T
    cls_token, patches = x[:, :1], x[:, 1:]

    # temporal: LayerNorm and qkv act per token, so they run on the (B, N*T, D) stream as it is;
    # the (B*N, T) sequences, one per patch, are a view of the qkv output
    t = block.temporal_attn
    a = _attend(t, _layer_norm_linear(block.temporal_norm1, patches, t.qkv, lin=lin).view(B * N, T, 3 * D))
    if infer and type(t.proj) is nn.Linear and type(block.temporal_fc) is nn.Linear:
        patches = _add_into(lin(_FOLD, a, block).view(B, N * T, D), patches)
    else:
        res = block.drop_path(t.proj_drop(lin(t.proj, a)))  # (B*N, T, D)
        res = lin(block.temporal_fc, res.view(B, N * T, D))
        patches = _add_into(res, patches) if infer else patches + res

    # spatial: one (1+N)-token sequence per frame, the class token prepended to each, in one copy:
    # (B, T, 1, D) and (B, N*T, D) -> (B, N, T, D) -> (B, T, N, D) -> (B*T, 1+N, D)
    xs = torch.cat((cls_token.unsqueeze(1).expand(B, T, 1, D), patches.view(B, N, T, D).transpose(1, 2)), dim=2)
    xs = xs.view(B * T, 1 + N, D)
    if cls_only:
        res_cls = _cls_attention(block, xs, lin).view(B, T, D).mean(dim=1, keepdim=True)  # (B, 1, D)
        return _residual_mlp(block, _add_into(res_cls, cls_token) if infer else cls_token + res_cls, infer, lin)
    s = block.attn
    res = block.drop_path(s.proj_drop(lin(s.proj, _attend(s, _layer_norm_linear(block.norm1, xs, s.qkv, lin=lin)))))
    res = res.view(B, T, 1 + N, D)
    res_cls = res[:, :, 0].mean(dim=1, keepdim=True)  # (B, 1, D)
    res_patches = res[:, :, 1:].transpose(1, 2)  # (B, N, T, D) view, back to patch-major order
    if infer:
        x = torch.empty_like(x)
        torch.add(cls_token, res_cls, out=x[:, :1])
        torch.add(patches.view(B, N, T, D), res_patches, out=x[:, 1:].view(B, N, T, D))
    else:
        # (B, N, T, D) -> (B, N*T, D)
        x = torch.cat((cls_token + res_cls, (patches.view(B, N, T, D) + res_patches).reshape(B, N * T, D)), dim=1)
    return _residual_mlp(block, x, infer, lin)


# -- the pieces of the block --------------------------------------------------------------------
def _attend(attn: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """``attn.attend(qkv)``, ``(S, L, 3D)`` -> ``(S, L, D)``; on CPU, short sequences with fused
    attention and no attention dropout run as batched matmuls (under autocast the kernels'
    own casting is kept).

    A bf16 ``qkv`` outside autocast (CPU bf16 inference and int8, whose qkv layer writes bf16)
    attends in bf16: over at most ``SHORT_SEQUENCE`` tokens in batched matmuls (the softmax computed
    in fp32 inside PyTorch's kernel; 1.4x SDPA at 8 tokens), over more (the 197 spatial tokens) in
    SDPA's CPU flash kernel, 3x the batched matmuls there (they write and re-read the whole
    (S, heads, 197, 197) score tensor). The explicit path (attention maps) attends in fp32."""
    S, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    dropping = attn.training and attn.attn_drop > 0
    cpu_plain = qkv.device.type == "cpu" and _autocast_dtype("cpu") is None
    if cpu_plain and qkv.dtype == torch.bfloat16 and not attn.fused:
        qkv = qkv.float()
    # CPU bf16 training: batched bf16 matmuls at any length (SDPA's CPU flash backward is slow in bf16:
    # 15% of a base 8x224 step), as transformers' explicit attention does under autocast
    cpu_bf16_training = (qkv.device.type == "cpu" and torch.is_grad_enabled()
                         and _autocast_dtype("cpu") == torch.bfloat16)
    if cpu_bf16_training and attn.fused and not dropping:
        return _ShortAttention.apply(qkv, attn.num_heads, attn.scale)
    if not attn.fused or L > SHORT_SEQUENCE or dropping or not cpu_plain:
        return attn.attend(qkv)
    if torch.is_grad_enabled():
        return _ShortAttention.apply(qkv, attn.num_heads, attn.scale)
    # (S, L, 3D) -> (3, S, heads, L, D/heads): views of the qkv output
    q, k, v = qkv.reshape(S, L, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
    x = torch.matmul(q, k.transpose(-2, -1)).mul_(attn.scale).softmax(dim=-1) @ v
    return x.transpose(1, 2).reshape(S, L, D)  # (S, heads, L, D/heads) -> (S, L, D)


def _cls_attention(block: nn.Module, xs: torch.Tensor, lin: "_Linears") -> torch.Tensor:
    """Spatial attention output ``(S, 1, D)`` of the first (class) token of each of the S
    sequences in ``xs`` ``(S, L, D)``: keys and values of every token, one query per sequence."""
    a, D = block.attn, xs.shape[-1]
    if type(a.qkv) is nn.Linear:
        w, b = lin.params(a.qkv)
        q = _layer_norm_linear(block.norm1, xs[:, :1], w[:D], None if b is None else b[:D])
        kv = _layer_norm_linear(block.norm1, xs, w[D:], None if b is None else b[D:])
    else:  # e.g. int8: the module computes all three
        qkv = lin(a.qkv, block.norm1(xs))
        q, kv = qkv[:, :1, :D], qkv[..., D:]
    S, L, Dh = xs.shape[0], xs.shape[1], D // a.num_heads
    q = q.reshape(S, 1, a.num_heads, Dh).transpose(1, 2)  # (S, 1, D) -> (S, heads, 1, D/heads)
    k, v = kv.reshape(S, L, 2, a.num_heads, Dh).permute(2, 0, 3, 1, 4)  # (S, L, 2D) -> 2 x (S, heads, L, D/heads)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=a.attn_drop if a.training else 0.0)
    out = out.transpose(1, 2).reshape(S, 1, D)  # (S, heads, 1, D/heads) -> (S, 1, D)
    return block.drop_path(a.proj_drop(lin(a.proj, out)))


def _residual_mlp(block: nn.Module, x: torch.Tensor, infer: bool, lin: "_Linears") -> torch.Tensor:
    """``x + drop_path(mlp(norm2(x)))``; in inference added into ``x``, which the caller owns."""
    mlp = block.mlp
    gelu_into = getattr(mlp.fc1, "gelu_into", None) if infer else None
    if gelu_into is not None:  # int8 layers (tsf.quantize): GELU, and fc2's input quantization, inside fc1's kernel
        out = mlp.fc2(gelu_into(block.norm2(x), mlp.act.approximate, mlp.fc2))
    elif infer and lin.packed(mlp.fc1):  # CPU: GELU inside fc1's oneDNN matmul
        out = lin(mlp.fc2, lin(mlp.fc1, block.norm2(x), gelu=mlp.act.approximate))
    else:
        out = _gelu_linear(mlp.act, mlp.fc2, _layer_norm_linear(block.norm2, x, mlp.fc1, lin=lin), lin)
    return x.add_(out) if infer else x + block.drop_path(out)


class _Linears:
    """How the inference path reaches a block's linear maps: ``lin(module, x)`` and
    ``lin.params(module)``. Plain (``_PLAIN``): the modules themselves (int8 layers of
    ``tsf.quantize``, GPUs, builds without oneDNN). CPU (``_cpu_linears``): each ``nn.Linear``'s
    weight in the compute dtype (bf16: cast once) and reordered into oneDNN's blocked layout once
    (``mkldnn._linear_pointwise``, GELU fusable; ``F.linear`` hands plain weights to MKL or
    reorders them on every call); ``x`` is cast to the compute dtype on the way in. ``_FOLD``
    stands for the folded ``temporal_fc(temporal_attn.proj(.))`` of the block given as third
    argument."""

    def __init__(self, weights: Optional[dict] = None, dtype: Optional[torch.dtype] = None):
        self.weights, self.dtype = weights or {}, dtype

    def params(self, module) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Plain weight and bias in the compute dtype (``_cls_attention`` slices q from k and v)."""
        cast = self.weights.get(module)
        return (module.weight, module.bias) if cast is None or cast[0] is None else (cast[0], cast[1])

    def packed(self, module) -> bool:
        cast = self.weights.get(module)
        return cast is not None and cast[2] is not None

    def __call__(self, module, x: torch.Tensor, block: Optional[nn.Module] = None, gelu: Optional[str] = None):
        cast = self.weights.get(module)
        if cast is None:
            y = F.linear(x, *_folded_temporal_projection(block)) if module is _FOLD else module(x)
            return y if gelu is None else F.gelu(y, approximate=gelu)
        weight, bias, packed = cast
        x = x.to(self.dtype)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none" if gelu is None else "gelu", [],
                                                     "" if gelu is None else gelu)
        y = F.linear(x, weight, bias)
        return y if gelu is None else F.gelu(y, approximate=gelu)


_FOLD = object()  # the folded temporal projection, as a key of _Linears.weights
_PLAIN = _Linears()
# dtype -> block -> (key, sums, scope, weights): its nn.Linear weights and the temporal fold, cast and reordered
_CASTS: dict[torch.dtype, weakref.WeakKeyDictionary] = {}


@functools.lru_cache(maxsize=None)
def _onednn_linear(dtype: torch.dtype) -> bool:
    """Whether this PyTorch runs ``mkldnn._linear_pointwise`` (oneDNN) in ``dtype`` on this CPU."""
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        x, w = torch.ones(2, 8, dtype=dtype), torch.ones(4, 8, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w), None, "none", [], "")
        return bool((y == 8).all())
    except (AttributeError, RuntimeError):
        return False


def _cpu_linears(block: nn.Module, dtype: torch.dtype) -> _Linears:
    """The block's ``nn.Linear`` weights (and the folded temporal projection) in ``dtype``,
    reordered for oneDNN where it runs (``_onednn_linear``), cached (``_cached``): casting every
    weight, as autocast does on every call, costs more than the cache's check. Holds one reordered
    copy of the block's weights: fp32 doubles the memory of the weights, bf16 adds half."""
    linears = [m for m in block.modules() if type(m) is nn.Linear]

    def build() -> dict:
        pack = _onednn_linear(dtype)
        sources = {m: (m.weight, m.bias) for m in linears}
        t = getattr(block, "temporal_attn", None)
        if t is not None and type(t.proj) is nn.Linear and type(block.temporal_fc) is nn.Linear:
            sources[_FOLD] = _folded_temporal_projection(block)
        weights = {}
        for module, (w, b) in sources.items():
            w, b = w.to(dtype), None if b is None else b.to(dtype)
            packed = torch.ops.mkldnn._reorder_linear_weight(w) if pack else None
            keep = packed is None or module is block.attn.qkv  # _cls_attention slices the plain qkv weight
            weights[module] = (w if keep else None, b, packed)
        return weights

    tensors = [t for m in linears for t in (m.weight, m.bias) if t is not None]
    with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
        return _Linears(_cached(_CASTS.setdefault(dtype, weakref.WeakKeyDictionary()), block, tensors, build), dtype)


# block -> (key, sums, scope, (weight, bias)) of its folded temporal projection
_FOLDS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _folded_temporal_projection(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``temporal_fc(temporal_attn.proj(a))`` as one linear map ``(W_fc W_proj, W_fc b_proj + b_fc)``
    (inference only: dropout and drop path sit between the two in training).

    On CPU the product is cached (``_cached``). On GPU it is recomputed every forward: 0.9 GFLOP
    is nothing there, and the cache's check would synchronise.
    """
    proj, fc = block.temporal_attn.proj, block.temporal_fc
    with torch.inference_mode(False), torch.no_grad(), _autocast_off(proj.weight.device.type):
        fold = lambda: (fc.weight @ proj.weight, torch.addmv(fc.bias, fc.weight, proj.bias))  # noqa: E731
        if proj.weight.device.type != "cpu":
            return fold()
        return _cached(_FOLDS, block, (proj.weight, proj.bias, fc.weight, fc.bias), fold)


def _cached(cache: weakref.WeakKeyDictionary, block: nn.Module, tensors, build: Callable[[], object]):
    """``build()``, a value derived from ``tensors`` (the block's weights), cached in ``cache`` for
    ``block`` until one of them changes: keyed on their storages and version counters (optimiser
    steps, ``load_state_dict``, in-place edits) plus their sums (edits through ``.data``, which
    bypass version counters). The sums read every weight (~6% of a bf16 forward pass at batch 1 on
    an AMX CPU, where the matmuls are fast), so inside ``TimeSformer.fixed_weights()`` (the block's
    ``fixed_weights_scope``) they are checked on the first call only."""
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
    scope = block.fixed_weights_scope
    entry = cache.get(block)  # (key, sums, scope it was checked in, value)
    if entry is not None and entry[0] == key and scope is not None and entry[2] is scope:
        return entry[3]
    sums = torch.stack([t.sum() for t in tensors]) if tensors else torch.zeros(0)
    value = entry[3] if entry is not None and entry[0] == key and torch.equal(entry[1], sums) else build()
    cache[block] = (key, sums, scope, value)
    return value


def _add_into(owned: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``owned + other``, in place in ``owned`` (a tensor the caller made) when that keeps the dtype
    the sum would have (under autocast a bf16 branch output must not demote the fp32 stream)."""
    if owned.dtype == torch.result_type(owned, other):
        return owned.add_(other)
    return other + owned


def _hookless(*modules: nn.Module) -> bool:
    """True when no forward (pre-)hook, global or per module, would notice a module being bypassed."""
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return False
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def _is_compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


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
    return torch.autocast(device_type, enabled=False) if _autocast_dtype(device_type) else contextlib.nullcontext()


# -- autograd functions that save less for the backward pass ------------------------------------
def _layer_norm_linear(norm: nn.LayerNorm, x: torch.Tensor, linear, bias: Optional[torch.Tensor] = None,
                       lin: _Linears = _PLAIN) -> torch.Tensor:
    """``linear(norm(x))``; ``linear`` is a module (reached through ``lin`` in inference), or a
    weight tensor with ``bias``."""
    if isinstance(linear, nn.Module):
        if not torch.is_grad_enabled():
            return lin(linear, norm(x))
        linear, bias = linear.weight, linear.bias
    if torch.is_grad_enabled():
        return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear, bias)
    return F.linear(norm(x).to(linear.dtype), linear, bias)


def _gelu_linear(act: nn.GELU, linear: nn.Module, h: torch.Tensor, lin: _Linears = _PLAIN) -> torch.Tensor:
    """``linear(act(h))``; in inference GELU runs in place in ``h``, a fresh fc1 output."""
    if torch.is_grad_enabled():
        return _GeluLinear.apply(h, linear.weight, linear.bias, act.approximate)
    return lin(linear, torch.ops.aten.gelu_(h, approximate=act.approximate))


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
        dy2 = dy.reshape(-1, dy.shape[-1])  # (..., out) -> (tokens, out)
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
        dy2 = dy.reshape(-1, dy.shape[-1])  # (..., out) -> (tokens, out)
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


class _ShortAttention(torch.autograd.Function):
    """Softmax attention of ``(S, L, 3D)`` packed q/k/v over many short sequences (CPU): batched
    matmuls both ways. Saves its qkv input and the ``(S, heads, L, L)`` probabilities, no copies."""

    @staticmethod
    def forward(ctx, qkv, num_heads, scale):
        S, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        with _autocast_off(qkv.device.type):  # in qkv's dtype (bf16 under CPU autocast), both ways
            # (S, L, 3D) -> (3, S, heads, L, D/heads)
            q, k, v = qkv.reshape(S, L, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
            probs = torch.matmul(q, k.transpose(-2, -1)).mul_(scale).softmax(dim=-1)
            ctx.save_for_backward(qkv, probs)
            ctx.num_heads, ctx.scale = num_heads, scale
            return (probs @ v).transpose(1, 2).reshape(S, L, D)  # (S, heads, L, D/heads) -> (S, L, D)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        qkv, probs = ctx.saved_tensors
        S, L, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        H = ctx.num_heads
        q, k, v = qkv.reshape(S, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
        do = dout.reshape(S, L, H, D // H).transpose(1, 2)  # (S, L, D) -> (S, heads, L, D/heads)
        dv = probs.transpose(-2, -1) @ do
        ds = torch._softmax_backward_data(do @ v.transpose(-2, -1), probs, -1, probs.dtype).mul_(ctx.scale)
        dq, dk = ds @ k, ds.transpose(-2, -1) @ q
        # (3, S, heads, L, D/heads) -> (S, L, 3, heads, D/heads): the qkv layout
        return torch.stack((dq, dk, dv)).permute(1, 3, 0, 2, 4).reshape(S, L, 3 * D), None, None
