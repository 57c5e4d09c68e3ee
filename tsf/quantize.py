"""Int8 CPU inference: a TimeSformer's Linear layers in int8, on the CPU's int8 units.

``quantize(model)`` returns a copy whose ``nn.Linear`` layers (q/k/v, projections, ``temporal_fc``,
MLP, head: 99% of the FLOPs) hold int8 weights, one scale per output channel; their inputs are
quantized to uint8, one scale and zero point per tensor:

- **static** (``quantize(model, calibration=clips)``): each layer's input range is measured once
  on calibration clips (``calibrate``) and fixed. The MLP's first layer then applies GELU and
  quantizes its output for the second inside the int8 kernel (no fp32 hidden activations at all).
  The fastest; ranges from clips unlike those it will see cost accuracy (values outside saturate).
- **dynamic** (``quantize(model)``, no calibration): each call measures its input's range.

Where it runs (``kernels()`` says, ``quantize(..., kernel=)`` chooses):

- ``onednn``: ``torch.ops.onednn.qlinear_pointwise``, oneDNN's int8 matmul with fused
  post-ops, on x86 builds of PyTorch. oneDNN dispatches to AMX-INT8 tiles (Xeon since Sapphire
  Rapids), AVX512-VNNI or AVX-VNNI (``tsf.cpu.matrix_units``), and to plain AVX2/AVX-512 int8
  arithmetic on older CPUs (correct, with less gain). Static and dynamic.
- ``dynamic``: ``torch.ops.quantized.linear_dynamic`` on the quantized engine (``default_engine``:
  oneDNN, else fbgemm on x86, qnnpack on ARM); the fallback where the first is missing, dynamic
  only. fbgemm without VNNI keeps activations to 7 bits (``reduce_range``): its int8 instructions
  saturate 16-bit sums there.

Patch embedding, LayerNorm, softmax and the attention matmuls stay in floating point (fp32, or
bf16 under ``torch.autocast("cpu", torch.bfloat16)``).

    from tsf.quantize import int8_agreement, quantize

    model = tsf.from_pretrained("runs/demo/best.pt").eval()
    int8 = quantize(model, calibration=train_clips)   # model itself is left untouched
    with torch.no_grad():                 # CPU, inference only (no autograd through int8 layers);
        logits = int8(clip)               # no grad also lets the blocks take tsf.lean's inference path
    int8_agreement(model, clips, int8)    # top-1 agreement with the fp32 model

The quantized model is for inference in the process that made it: save the fp32 model, and
quantize after loading (a second, plus the calibration's forward passes).
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable, Optional, Union

import torch
from torch import nn

from . import cpu
from .model import Attention

KERNELS = ("onednn", "dynamic")
Clips = Union[torch.Tensor, Iterable]


def cpu_has_vnni() -> bool:
    """AVX512-VNNI, AVX-VNNI or AMX-INT8 (``tsf.cpu.matrix_units``): int8 dot products without saturation."""
    return cpu.has_vnni()


def default_engine() -> str:
    """The quantized engine of the ``dynamic`` kernel: oneDNN where this PyTorch has it (~7-10% faster
    than fbgemm on the Zen CPU measured), else the current one (fbgemm on x86, qnnpack on ARM)."""
    engines = torch.backends.quantized.supported_engines
    return "onednn" if "onednn" in engines else torch.backends.quantized.engine


def kernels() -> list[str]:
    """The int8 kernels this PyTorch offers, best first (see the module's docstring)."""
    found = []
    if hasattr(torch.ops, "onednn") and hasattr(torch.ops.onednn, "qlinear_pointwise") and torch.backends.mkldnn.is_available():
        found.append("onednn")
    if hasattr(torch.ops.quantized, "linear_dynamic"):
        found.append("dynamic")
    return found


def _weight_int8(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Per-output-channel symmetric int8 weight, its fp32 scales, and the fp32 bias."""
    weight = linear.weight.detach().float().cpu()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    qweight = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    bias = None if linear.bias is None else linear.bias.detach().float().cpu()
    return qweight, scales, bias


def _uint8_params(low: float, high: float) -> tuple[float, int]:
    """Scale and zero point of asymmetric uint8 for the range ``[low, high]`` (0 always representable)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255.0, 1e-8)
    return scale, int(min(255, max(0, round(-low / scale))))


def _to_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``x`` quantized to a plain uint8 tensor (saturating), in one fused kernel."""
    if x.dtype != torch.float32:
        x = x.float()
    with warnings.catch_warnings():  # quantized-tensor constructors warn of a future migration
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    # its bytes as a plain uint8 tensor: int_repr() would copy them, at more than the quantization's cost
    return torch.empty(0, dtype=torch.uint8, device=x.device).set_(q.untyped_storage(), q.storage_offset(), q.shape,
                                                                  q.stride())


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` on oneDNN's int8 matmul (``torch.ops.onednn.qlinear_pointwise``):
    per-output-channel int8 weights, uint8 input (one scale and zero point per tensor).

    Args:
        linear: the layer to replace.
        input_range: ``(min, max)`` of its input from calibration (static); None: measured per call
            (dynamic).
        out_dtype: the output's dtype (default: the input's, fp32 for uint8 input); ``quantize``
            gives the attention's q/k/v projections bf16 outputs where the CPU has bf16 units, so
            that the attention runs as in bf16 inference (``tsf.lean._attend``).
    """

    def __init__(self, linear: nn.Linear, input_range: Optional[tuple[float, float]] = None,
                 out_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.out_dtype = out_dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight, self.w_scales, self.bias = _weight_int8(linear)
        self.w_zero_points = torch.zeros(self.out_features, dtype=torch.long)
        self._packed = torch.ops.onednn.qlinear_prepack(qweight, None)
        self.input_range = None if input_range is None else (float(input_range[0]), float(input_range[1]))
        self.x_params = None if input_range is None else _uint8_params(*self.input_range)

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """``x`` as this layer's uint8 input, with its scale and zero point."""
        if self.x_params is not None:
            scale, zero_point = self.x_params
        else:
            low, high = torch.aminmax(x)
            scale, zero_point = _uint8_params(float(low), float(high))
        return _to_uint8(x, scale, zero_point), scale, zero_point

    def _matmul(self, x: torch.Tensor, post_op: str = "none", algorithm: str = "", out: Optional[tuple] = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The int8 matmul of ``x`` (float, or uint8 already in this layer's static input params), with
        ``post_op`` fused; ``out``: the uint8 ``(scale, zero_point)`` to quantize the output to, else ``dtype``."""
        shape = x.shape
        if x.dtype == torch.uint8:
            q, (scale, zero_point) = x.reshape(-1, self.in_features), self.x_params
        else:
            q, scale, zero_point = self.quantize_input(x.reshape(-1, self.in_features))
        out_scale, out_zero_point = out if out is not None else (1.0, 0)
        y = torch.ops.onednn.qlinear_pointwise(
            q, scale, zero_point, self._packed, self.w_scales, self.w_zero_points, self.bias, out_scale,
            out_zero_point, None if out is not None else dtype, post_op, [], algorithm)
        return y.reshape(*shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8 and self.x_params is None:
            raise ValueError("a uint8 input needs a statically quantized layer (quantize(..., calibration=...))")
        dtype = self.out_dtype or (torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32)
        return self._matmul(x, dtype=dtype)

    def gelu_into(self, x: torch.Tensor, approximate: str, following: nn.Module) -> torch.Tensor:
        """``gelu(self(x))`` ready for the layer ``following`` (``tsf.lean``'s MLP): quantized to its
        static uint8 input inside the kernel when it has one, else in ``x``'s dtype."""
        if isinstance(following, Int8Linear) and following.x_params is not None:
            return self._matmul(x, "gelu", approximate, out=following.x_params)
        return self._matmul(x, "gelu", approximate, dtype=torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32)

    def extra_repr(self) -> str:
        mode = "dynamic" if self.input_range is None else f"static input range [{self.input_range[0]:.3g}, {self.input_range[1]:.3g}]"
        out = f", out_dtype={self.out_dtype}" if self.out_dtype else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel=onednn, {mode}{out}"


class DynamicInt8Linear(nn.Module):
    """A frozen ``nn.Linear`` on ``torch.ops.quantized.linear_dynamic``: per-output-channel symmetric
    int8 weights; the input is quantized to uint8 per call inside the kernel.

    ``reduce_range`` keeps activations to 7 bits, needed on x86 CPUs without VNNI (their int8
    instructions saturate 16-bit sums); it costs accuracy, so it is off where VNNI exists.
    """

    def __init__(self, linear: nn.Linear, reduce_range: bool | None = None, engine: str | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.engine = engine or default_engine()
        if reduce_range is None:  # oneDNN compensates by itself; fbgemm needs it without VNNI
            reduce_range = self.engine != "onednn" and not cpu_has_vnni()
        self.reduce_range = reduce_range
        weight = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        previous = torch.backends.quantized.engine
        try:
            # the packed weight remembers its kernel library; the global engine matters only here
            torch.backends.quantized.engine = self.engine
            with warnings.catch_warnings():  # quantized-tensor constructors warn of a future migration
                warnings.simplefilter("ignore")
                qweight = torch.quantize_per_channel(
                    weight, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
                )
                self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        finally:
            torch.backends.quantized.engine = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, self.in_features).float(), self._packed, self.reduce_range)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, "
                f"reduce_range={self.reduce_range}")


@torch.no_grad()
def calibrate(model: nn.Module, clips: Clips, batch_size: int = 8) -> dict[str, tuple[float, float]]:
    """The input range ``(min, max)`` of every ``nn.Linear`` of ``model`` over ``clips``.

    Args:
        model: the fp32 model (its reference path runs: the hooks that record the ranges make
            ``tsf.lean`` step aside, so every layer sees all its inputs).
        clips: a ``(B, C, T, H, W)`` tensor or an iterable of batches / ``(clip, label)`` pairs,
            normalised as the model expects (e.g. a few training batches).
        batch_size: batch size when ``clips`` is one tensor.

    Returns:
        Layer name -> ``(min, max)``.
    """
    ranges: dict[str, list[float]] = {}
    handles = []

    def hook(name):
        def record(module, args):
            low, high = torch.aminmax(args[0].detach().float())
            seen = ranges.setdefault(name, [float("inf"), float("-inf")])
            seen[0], seen[1] = min(seen[0], float(low)), max(seen[1], float(high))
        return record

    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            handles.append(module.register_forward_pre_hook(hook(name)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    seen_clips = 0
    try:
        for batch in _batches(clips, batch_size):
            model(batch.float().to(device))
            seen_clips += batch.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen_clips == 0:
        raise ValueError("calibrate got no clips")
    return {name: (low, high) for name, (low, high) in ranges.items()}


def quantize(model: nn.Module, inplace: bool = False, calibration: Optional[Clips] = None,
             kernel: Optional[str] = None, engine: str | None = None, bf16_attention: Optional[bool] = None) -> nn.Module:
    """Int8 quantization of every ``nn.Linear`` in ``model`` for CPU inference.

    Args:
        model: a TimeSformer (or any module); moved to CPU and set to eval mode.
        inplace: replace the layers in ``model`` itself instead of a deep copy.
        calibration: clips (as ``calibrate`` takes them) for static quantization; None: dynamic.
        kernel: ``"onednn"`` or ``"dynamic"`` (default: the first of ``kernels()``; static needs onednn).
        engine: the ``dynamic`` kernel's quantized engine, ``"onednn"`` or ``"fbgemm"``/``"x86"``
            (default: ``default_engine()``).
        bf16_attention: onednn kernel: q/k/v projections output bf16, and the attention runs in
            bf16 matmuls (~10% faster at base 8x224 on a Zen 5 CPU, relative logit error 0.035 ->
            0.036); default: where the CPU has bf16 matrix units (``tsf.cpu.matrix_units``).

    Returns:
        The quantized model (eval mode, CPU). Its int8 layers have no gradients and no state-dict
        entries for their weights: keep and save the fp32 model, quantize after loading.
    """
    available = kernels()
    if not available:
        raise RuntimeError("this PyTorch build has no quantized CPU kernels (torch.ops.onednn.qlinear_pointwise, "
                           "torch.ops.quantized.linear_dynamic)")
    kernel = kernel or available[0]
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
    if kernel not in available:
        raise RuntimeError(f"kernel={kernel!r} is not in this PyTorch build (it has {available})")
    if calibration is not None and kernel != "onednn":
        raise ValueError("static quantization (calibration=) needs the onednn kernel; this build offers "
                         f"{available}: quantize without calibration")
    ranges = calibrate(model.cpu(), calibration) if calibration is not None else {}
    if bf16_attention is None:
        bf16_attention = cpu.matrix_units().bf16
    target = model if inplace else copy.deepcopy(model)
    target = target.cpu().eval()
    for parent_name, parent in list(target.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                full = f"{parent_name}.{name}" if parent_name else name
                qkv = bf16_attention and name == "qkv" and isinstance(parent, Attention)
                layer = (Int8Linear(child, ranges.get(full), torch.bfloat16 if qkv else None) if kernel == "onednn"
                         else DynamicInt8Linear(child, engine=engine))
                setattr(parent, name, layer)
    return target


def _batches(clips: Clips, batch_size: int):
    if isinstance(clips, torch.Tensor):
        yield from clips.split(batch_size)
        return
    for batch in clips:
        if isinstance(batch, dict):
            batch = batch["clip"]
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield batch


@torch.no_grad()
def int8_agreement(
    model: nn.Module,
    clips: Clips,
    quantized: nn.Module | None = None,
    batch_size: int = 4,
) -> float:
    """Top-1 agreement of the int8 model with the fp32 ``model`` on ``clips``.

    Args:
        model: the fp32 model.
        clips: a ``(B, C, T, H, W)`` tensor or an iterable of such batches (e.g. the validation
            loader's normalised clips; ``(clip, label)`` pairs are accepted and the label ignored).
        quantized: an already quantized model (default: ``quantize(model)``, dynamic).
        batch_size: batch size when ``clips`` is one tensor.

    Returns:
        The fraction of clips whose arg-max class is the same for both models.
    """
    model = model.eval()
    quantized = quantize(model) if quantized is None else quantized.eval()
    same = total = 0
    device = next(model.parameters()).device
    for batch in _batches(clips, batch_size):
        reference = model(batch.float().to(device)).argmax(-1).cpu()
        same += int((reference == quantized(batch.float().cpu()).argmax(-1)).sum())
        total += batch.shape[0]
    if total == 0:
        raise ValueError("int8_agreement got no clips")
    return same / total


__all__ = ["quantize", "calibrate", "int8_agreement", "kernels", "Int8Linear", "DynamicInt8Linear", "cpu_has_vnni",
           "default_engine", "KERNELS"]
