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


def _schedstat(root, tid, text):
    (root / tid).mkdir()
    if text is not None:
        (root / tid / "schedstat").write_text(text)


def test_thread_times_reads_each_threads_schedstat(tmp_path):
    _schedstat(tmp_path, "11", "2000000000 500000000 7\n")  # ns on a CPU, ns waiting for one, time slices
    _schedstat(tmp_path, "12", "1000 0 1\n")
    _schedstat(tmp_path, "13", None)                       # a thread that ended while being read
    _schedstat(tmp_path, "14", "garbage\n")
    assert cpu.thread_times(tmp_path) == {"11": (2.0, 0.5), "12": (1e-6, 0.0)}
    assert cpu.thread_times(tmp_path / "missing") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cpu.thread_times(empty) is None


def test_cpu_wait_share_counts_the_working_threads_only():
    before = {"a": (10.0, 1.0), "b": (5.0, 0.0), "poller": (0.0, 0.0)}
    # over 4 s: a ran 2 s and waited 2 s, b ran 1 s, a new thread c ran 1 s and waited 1 s, the poller ran 10 ms
    # and waited 3 s (it only wakes up: its waits cost nothing and are left out at min_share 0.1 = 0.4 s)
    after = {"a": (12.0, 3.0), "b": (6.0, 0.0), "c": (1.0, 1.0), "poller": (0.01, 3.0)}
    assert cpu.cpu_wait_share(before, after, 4.0) == (2.0 + 0.0 + 1.0) / (2.0 + 1.0 + 1.0 + 3.0)
    assert cpu.cpu_wait_share(before, after, 4.0, min_share=0.3) == 2.0 / 4.0  # only a ran >= 1.2 s
    assert cpu.cpu_wait_share(None, after, 4.0) is None and cpu.cpu_wait_share(before, None, 4.0) is None
    assert cpu.cpu_wait_share(before, before, 4.0) is None  # nothing ran


def test_thread_times_of_this_process_see_its_own_work():
    import time

    import pytest

    t0 = cpu.thread_times()
    if t0 is None:
        pytest.skip("no /proc/self/task/*/schedstat here (not Linux)")
    start = time.perf_counter()
    while time.perf_counter() - start < 0.3:  # 0.3 s of work on this thread
        pass
    t1 = cpu.thread_times()
    ran = max(t1[tid][0] - t0.get(tid, (0.0, 0.0))[0] for tid in t1)
    assert 0.15 <= ran <= 0.35
    share = cpu.cpu_wait_share(t0, t1, time.perf_counter() - start)
    assert share is not None and 0.0 <= share < 1.0
