"""What the benchmark ran on: the device, its documented peak, and the software versions."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

from .. import __version__
from .. import cpu
from ..quantize import kernels

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, matched in order
# as substrings of torch.cuda.get_device_name(); the more specific names come first.
GPU_BF16_PEAK_TFLOPS: list[tuple[str, Optional[float]]] = [
    ("GH200", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),  # SXM4 and PCIe
    ("A10G", None),  # AWS variant, no public dense bf16 figure: the measured matmul is used
    ("A10", 125.0),
    ("A30", 165.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
    ("RTX 4090", 165.2),  # bf16 with fp32 accumulation
]


def gpu_bf16_peak_tflops(name: str) -> Optional[float]:
    """The documented dense bf16 peak of a GPU named ``name`` (None when unknown)."""
    for key, peak in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    """The CPU (always: it feeds the GPU too), memory, platform and, on CUDA, the GPU."""
    info = {
        "type": device.type,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_family_model": f"{_cpuinfo('cpu family')}/{_cpuinfo('model')}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        # the CPU's matrix units (tsf.cpu, from /proc/cpuinfo) and what PyTorch itself dispatches to
        "matrix_units": cpu.matrix_units().to_dict(),
        "cpu_vnni": cpu.has_vnni(),
        "mkldnn_bf16": _torch_flag("_is_mkldnn_bf16_supported", torch.ops.mkldnn),
        "amx_tile": _torch_flag("_is_amx_tile_supported", torch.cpu),
        "int8_kernels": kernels(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        info.update(
            name=name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}", bf16_dense_peak_tflops=gpu_bf16_peak_tflops(name),
        )
    else:
        info["name"] = f"{info['cpu']} ({info['cpu_cores']} cores, CPU)"
    return info


def versions() -> dict:
    """Python, torch, the baselines' libraries, tsf and its git revision (CUDA and cuDNN on GPUs)."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "timm", "numpy", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    out["tsf"] = __version__
    try:
        out["tsf_git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["tsf_git"] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def _torch_flag(name: str, namespace) -> Optional[bool]:
    try:
        return bool(getattr(namespace, name)())
    except (AttributeError, RuntimeError):
        return None


def _cpuinfo(field: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> Optional[float]:
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / 2**30, 1)
