"""The CPU's matrix units, detected once for the whole kit: ``tsf.runtime`` (what ``--precision
auto`` picks), ``tsf.quantize`` (7-bit activations without VNNI) and ``tsf.bench`` (what the
report names and judges) all ask ``matrix_units()``.

The units that matter for inference and training here:

- **AMX-BF16 / AMX-INT8** (Intel Xeon since Sapphire Rapids): tile matrix multiplies, bf16 at
  ~16x and int8 at ~32x the fp32 FMA rate of a core.
- **AVX512-BF16** (Intel Cooper Lake and later, AMD Zen 4 and later): bf16 dot products
  (``vdpbf16ps``), ~2x fp32 (measured 2.8-4.5x on a Zen 5 guest, whose fp32 matmuls fall short of
  their peak; bench/README.md).
- **AVX512-VNNI / AVX-VNNI**: int8 dot products (``vpdpbusd``) without the 16-bit saturation of
  older x86 int8 arithmetic.
- ARM: **BF16** (``bfmmla``) and **I8MM** (``smmla``) in ``/proc/cpuinfo``'s Features.

Linux only (``/proc/cpuinfo``); elsewhere nothing is detected and every choice falls back to
fp32 (explicit ``--precision bf16`` still runs, emulated where the units are missing). Tests
simulate other CPUs by replacing ``cpu_flags``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

CPUINFO = "/proc/cpuinfo"


@lru_cache(maxsize=None)
def _read_flags(path: str = CPUINFO) -> frozenset[str]:
    try:
        with open(path) as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):  # x86 "flags", ARM "Features"
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``: x86 ``flags`` or ARM ``Features``; empty elsewhere)."""
    return _read_flags()


@dataclass(frozen=True)
class MatrixUnits:
    """Which matrix units the CPU has (``matrix_units()``)."""

    amx_bf16: bool = False
    amx_int8: bool = False
    avx512_bf16: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    arm_bf16: bool = False
    arm_i8mm: bool = False

    @property
    def amx(self) -> bool:
        return self.amx_bf16 or self.amx_int8

    @property
    def bf16(self) -> bool:
        """bf16 matrix arithmetic in hardware (AMX-BF16, AVX512-BF16 or ARM BF16)."""
        return self.amx_bf16 or self.avx512_bf16 or self.arm_bf16

    @property
    def int8(self) -> bool:
        """int8 dot products without 16-bit saturation (AMX-INT8, AVX512-VNNI, AVX-VNNI or ARM I8MM)."""
        return self.amx_int8 or self.avx512_vnni or self.avx_vnni or self.arm_i8mm

    @property
    def vnni(self) -> bool:
        """x86 int8 dot products without saturation: AVX512-VNNI, AVX-VNNI (or AMX-INT8)."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    @property
    def names(self) -> list[str]:
        """The units found, as the documentation spells them (``["none"]`` when there are none)."""
        found = [name for field, name in _NAMES if getattr(self, field)]
        return found or ["none"]

    def to_dict(self) -> dict:
        out = {field: getattr(self, field) for field, _ in _NAMES}
        out.update(bf16=self.bf16, int8=self.int8, names=self.names)
        return out


_NAMES = (("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"), ("avx512_bf16", "AVX512-BF16"),
          ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("arm_bf16", "BF16 (ARM)"),
          ("arm_i8mm", "I8MM (ARM)"))


def matrix_units(flags: frozenset[str] | set[str] | None = None) -> MatrixUnits:
    """The matrix units named by ``flags`` (default: this CPU's, ``cpu_flags()``)."""
    flags = cpu_flags() if flags is None else flags
    arm = "asimd" in flags  # every aarch64 Linux lists it; x86 never does
    return MatrixUnits(
        amx_bf16="amx_bf16" in flags, amx_int8="amx_int8" in flags, avx512_bf16="avx512_bf16" in flags,
        avx512_vnni="avx512_vnni" in flags, avx_vnni="avx_vnni" in flags,
        arm_bf16=arm and "bf16" in flags, arm_i8mm=arm and "i8mm" in flags,
    )


def has_vnni() -> bool:
    """x86 int8 dot products without the 16-bit saturation of older x86 (``MatrixUnits.vnni``)."""
    return matrix_units().vnni


__all__ = ["MatrixUnits", "matrix_units", "cpu_flags", "has_vnni"]
