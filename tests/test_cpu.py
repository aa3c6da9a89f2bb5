"""detector/cpu.py: the CPU features read from /proc/cpuinfo, for two kinds of CPU and for none."""
from detector import cpu

# abridged /proc/cpuinfo lines: this session's AVX2-only EPYC, and a CPU with AVX512-VNNI, -BF16 and AMX
AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 avx avx2 bmi2 sha_ni vaes vpclmulqdq
"""
AVX512 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8
"""


def _with(monkeypatch, text):
    cpu._cpuinfo.cache_clear()
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: text)


def test_an_avx2_cpu_has_neither_vnni_nor_bf16(monkeypatch):
    _with(monkeypatch, AMD)
    assert cpu.cpu_model() == "AMD EPYC"
    assert "avx2" in cpu.cpu_flags() and "avx512f" not in cpu.cpu_flags()
    assert cpu.cpu_has_vnni() is False and cpu.bf16_supported() is False
    d = cpu.describe()
    assert d["flags"] == ["avx2", "fma"] and d["vnni"] is False and d["native_bf16"] is False
    assert cpu.summary() == "AMD EPYC, %d CPUs, flags avx2, fma" % d["cpus"]


def test_a_vnni_bf16_cpu(monkeypatch):
    _with(monkeypatch, AVX512)
    assert cpu.cpu_has_vnni() is True and cpu.bf16_supported() is True
    assert cpu.describe()["flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]


def test_no_cpuinfo_means_unknown(monkeypatch):
    _with(monkeypatch, None)
    assert cpu.cpu_flags() is None and cpu.cpu_has_vnni() is None and cpu.bf16_supported() is False
    assert cpu.describe()["flags"] is None and isinstance(cpu.cpu_model(), str)


def test_this_machine_is_read():
    cpu._cpuinfo.cache_clear()
    d = cpu.describe()
    assert d["cpus"] >= 1 and d["model"]
