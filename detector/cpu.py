"""What this CPU can do fast: the instruction-set features the backends' choices depend on.

The figures in the README were measured on two 2-core machines: earlier sessions' AMD EPYC with AVX512-VNNI
and AVX512-BF16, and this session's AMD EPYC (family 25 model 1, Zen 3) with AVX2 only. What changes between them:

* int8 (``onnx_int8``, ``torch_int8``): without VNNI the int8 products are summed pairwise in saturating 16
  bits, so the weights are quantised to 7 bits there (:func:`detector.backends.int8_weight_bits`);
* bf16 autocast pays off only with native bf16 dot products (AVX512-BF16 or AMX); elsewhere it is emulated
  and slower than fp32, and ``model.backend=bf16`` warns.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the answers are None / unknown.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model", "cpu_has_vnni", "bf16_supported", "describe", "summary"]

# the flags the README's figures depend on, in the order describe() lists them
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_flags() -> frozenset[str] | None:
    """The first processor's feature flags, or None where ``/proc/cpuinfo`` is not readable (not Linux)."""
    text = _cpuinfo()
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    for line in (_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_has_vnni() -> bool | None:
    """Whether the CPU has AVX512-VNNI or AVX-VNNI (None where the flags are not readable)."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & {"avx512_vnni", "avx_vnni"})


def bf16_supported() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX), so bf16 autocast can pay off."""
    return bool((cpu_flags() or frozenset()) & {"avx512_bf16", "amx_bf16"})


def describe() -> dict:
    """Model name, core count and the key flags present, for benchmark reports (JSON-able)."""
    flags = cpu_flags()
    return {"model": cpu_model(), "cpus": os.cpu_count(),
            "flags": None if flags is None else [f for f in KEY_FLAGS if f in flags],
            "vnni": cpu_has_vnni(), "native_bf16": bf16_supported()}


def summary(machine: dict | None = None) -> str:
    """One line for logs and tables: ``machine`` (a :func:`describe` result, e.g. from a saved benchmark; default
    this CPU) as "model, N CPUs, flags a, b"."""
    machine = machine or describe()
    return f"{machine['model']}, {machine['cpus']} CPUs, flags {', '.join(machine['flags'] or ['unknown'])}"
