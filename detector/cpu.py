"""What this CPU can do fast: the instruction-set features the backends' choices depend on.

The figures in the README were measured on two 2-core machines: earlier sessions' AMD EPYC with AVX512-VNNI
and AVX512-BF16, and this session's AMD EPYC (family 25 model 1, Zen 3) with AVX2 only. What changes between them:

* int8 (``onnx_int8``, ``torch_int8``): without VNNI the int8 products are summed pairwise in saturating 16
  bits, so the weights are quantised to 7 bits there (:func:`detector.backends.int8_weight_bits`);
* bf16 autocast pays off only with native bf16 dot products (AVX512-BF16 or AMX); elsewhere it is emulated
  and slower than fp32, and ``model.backend=bf16`` warns.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the answers are None / unknown.

Also whether other processes compete for the cores while the classifier runs (:func:`thread_times`,
:func:`cpu_wait_share`): each runtime here splits every layer over its threads and waits for all of them, so one
busy process beside a 2-thread classifier on 2 cores made it 3.5-5.2x slower, where one thread lost 0-23%
(README "Speed", session 24). The pipeline measures it per image and says so.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model", "cpu_has_vnni", "bf16_supported", "describe", "summary", "thread_times",
           "cpu_wait_share"]

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


def thread_times(task_dir: str | os.PathLike = "/proc/self/task") -> dict[str, tuple[float, float]] | None:
    """Per thread of this process (thread id -> ``(on_cpu_s, waiting_s)``): the seconds it ran and the seconds it
    was ready to run but waited for a CPU, from Linux's ``/proc/self/task/*/schedstat``. None where that is not
    readable (not Linux, or a kernel without it). Threads that end while being read are left out."""
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            fields = (Path(task_dir) / tid / "schedstat").read_text().split()
            out[tid] = (int(fields[0]) / 1e9, int(fields[1]) / 1e9)
        except (OSError, ValueError, IndexError):
            continue
    return out or None


def cpu_wait_share(before: dict | None, after: dict | None, wall_s: float, min_share: float = 0.1) -> float | None:
    """Of the time this process's working threads wanted a CPU between two :func:`thread_times` snapshots, the
    share they spent waiting for one (0: they always had a core; 0.5: half the time they waited, e.g. a
    2-thread network beside one busy process on 2 cores). Working threads: those that ran at least ``min_share``
    of ``wall_s``; the others (pollers that wake, wait for a core and run for microseconds) would count waits
    that cost nothing. None when either snapshot is missing or no thread worked."""
    if not before or not after or wall_s <= 0:
        return None
    ran = waited = 0.0
    for tid, (cpu1, wait1) in after.items():
        cpu0, wait0 = before.get(tid, (0.0, 0.0))
        if cpu1 - cpu0 >= min_share * wall_s:
            ran += cpu1 - cpu0
            waited += wait1 - wait0
    return waited / (ran + waited) if ran > 0 else None
