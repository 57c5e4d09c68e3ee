"""Int8 CPU inference: dynamic quantization of a TimeSformer's Linear layers.

``quantize(model)`` returns a copy whose ``nn.Linear`` layers (q/k/v, projections, ``temporal_fc``,
MLP, head: 99% of the FLOPs) hold int8 weights, one scale per output channel, and quantize their
input per call (dynamic quantization: no calibration data). The matmuls run on oneDNN's int8
kernels (fbgemm where PyTorch lacks oneDNN; VNNI where the CPU has it); patch embedding, LayerNorm,
softmax and GELU stay fp32.

    from tsf.quantize import int8_agreement, quantize

    model = tsf.from_pretrained("runs/demo/best.pt").eval()
    int8 = quantize(model)                # model itself is left untouched
    with torch.no_grad():                 # CPU, inference only (no autograd through int8 layers);
        logits = int8(clip)               # no grad also lets the blocks take tsf.lean's inference path
    int8_agreement(model, clips)          # top-1 agreement with the fp32 model

The quantized model is for inference in the process that made it: save the fp32 model, and
quantize after loading (it takes a second).
"""
from __future__ import annotations

import copy
import warnings
from functools import lru_cache
from typing import Iterable, Union

import torch
from torch import nn


@lru_cache(maxsize=None)
def cpu_has_vnni() -> bool:
    """AVX512-VNNI or AVX-VNNI: int8 dot products without the 16-bit saturation of older x86."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def default_engine() -> str:
    """oneDNN where this PyTorch has it (~7-10% faster than fbgemm on the Zen CPU measured), else
    the current quantized engine."""
    engines = torch.backends.quantized.supported_engines
    return "onednn" if "onednn" in engines else torch.backends.quantized.engine


class DynamicInt8Linear(nn.Module):
    """A frozen ``nn.Linear`` with per-output-channel symmetric int8 weights; the input is
    quantized to uint8 per call (one scale/zero point per tensor) inside the int8 kernel.

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


def quantize(model: nn.Module, inplace: bool = False, engine: str | None = None) -> nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` in ``model`` for CPU inference.

    Args:
        model: a TimeSformer (or any module); moved to CPU and set to eval mode.
        inplace: replace the layers in ``model`` itself instead of a deep copy.
        engine: ``"onednn"`` or ``"fbgemm"``/``"x86"`` (default: ``default_engine()``).

    Returns:
        The quantized model (eval mode, CPU). Its int8 layers have no gradients and no state-dict
        entries for their weights: keep and save the fp32 model, quantize after loading.
    """
    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise RuntimeError("this PyTorch build has no quantized CPU kernels (torch.ops.quantized.linear_dynamic)")
    target = model if inplace else copy.deepcopy(model)
    target = target.cpu().eval()
    for parent in list(target.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, DynamicInt8Linear(child, engine=engine))
    return target


@torch.no_grad()
def int8_agreement(
    model: nn.Module,
    clips: Union[torch.Tensor, Iterable[torch.Tensor]],
    quantized: nn.Module | None = None,
    batch_size: int = 4,
) -> float:
    """Top-1 agreement of the int8 model with the fp32 ``model`` on ``clips``.

    Args:
        model: the fp32 model.
        clips: a ``(B, C, T, H, W)`` tensor or an iterable of such batches (e.g. the validation
            loader's normalised clips; ``(clip, label)`` pairs are accepted and the label ignored).
        quantized: an already quantized model (default: ``quantize(model)``).
        batch_size: batch size when ``clips`` is one tensor.

    Returns:
        The fraction of clips whose arg-max class is the same for both models.
    """
    model = model.eval()
    quantized = quantize(model) if quantized is None else quantized.eval()
    if isinstance(clips, torch.Tensor):
        clips = clips.split(batch_size)
    same = total = 0
    for batch in clips:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        device = next(model.parameters()).device
        reference = model(batch.float().to(device)).argmax(-1).cpu()
        same += int((reference == quantized(batch.float().cpu()).argmax(-1)).sum())
        total += batch.shape[0]
    if total == 0:
        raise ValueError("int8_agreement got no clips")
    return same / total


__all__ = ["quantize", "int8_agreement", "DynamicInt8Linear", "cpu_has_vnni", "default_engine"]
