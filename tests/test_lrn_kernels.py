"""The fused LRN kernels (detector/lrn_kernels.py) against torch's own LocalResponseNorm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("numba")

from detector.lrn_kernels import lrn_nhwc, lrn_nhwc_u8  # noqa: E402


def _torch_lrn(x_nhwc: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x_nhwc, np.float32)).permute(0, 3, 1, 2)
    return F.local_response_norm(t, size, alpha, beta, k).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("size,beta,channels", [(5, 0.75, 13), (4, 0.5, 7), (1, 0.75, 3), (5, 0.75, 192)])
def test_fp32_kernel_is_torchs_lrn(size, beta, channels):
    rng = np.random.default_rng(size * 100 + channels)
    x = rng.normal(0, 60, (2, 5, 6, channels)).astype(np.float32)  # large values: the sums matter
    got = lrn_nhwc(x, size, 1e-3, beta, 2.0, threads=2)
    ref = _torch_lrn(x, size, 1e-3, beta, 2.0)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("size", [5, 3])  # GoogLeNet's window (one-pass sums) and the general loop
def test_uint8_kernel_is_the_quantised_lrn(size):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (3, 7, 9, 64)).astype(np.uint8)
    sx, zx, sy, zy = 0.37, 3, 0.11, 10
    got = lrn_nhwc_u8(q, size, 1e-4, 0.75, 1.0, sx, zx, sy, zy, threads=2)
    lrn = _torch_lrn((q.astype(np.float32) - zx) * sx, size, 1e-4, 0.75, 1.0)
    ref = np.clip(np.rint(lrn / sy) + zy, 0, 255)  # ONNX QuantizeLinear: round half to even, saturate
    assert got.dtype == np.uint8 and got.shape == q.shape
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # fp32 rounding may cross a rounding boundary
    assert (got == 0).any() and (got == 255).any()  # both saturation ends exercised


def test_uint8_kernel_by_hand():
    # one pixel, two channels, window 3: x = (q - 1) * 0.5 = [2, 4]; sums of squares over the window
    # (zero padding) are 4 + 16 = 20 for both; t = 1 + 0.3 / 3 * 20 = 3; y = x * 3^-0.75 = [0.877, 1.755];
    # quantised with scale 0.25, zero point 2: round(3.509) + 2 = 6, round(7.019) + 2 = 9
    q = np.array([5, 9], np.uint8).reshape(1, 1, 1, 2)
    got = lrn_nhwc_u8(q, 3, 0.3, 0.75, 1.0, 0.5, 1, 0.25, 2)
    assert got.ravel().tolist() == [6, 9]
    assert lrn_nhwc(np.array([2, 4], np.float32).reshape(1, 1, 1, 2), 3, 0.3, 0.75, 1.0).ravel() == \
        pytest.approx([2 * 3 ** -0.75, 4 * 3 ** -0.75], rel=1e-6)


def test_kernels_reject_wrong_inputs():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\] float32"):
        lrn_nhwc(np.zeros((4, 5), np.float32), 5, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="uint8"):
        lrn_nhwc_u8(np.zeros((1, 2, 2, 3), np.float32), 5, 1e-4, 0.75, 1.0, 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="scales"):
        lrn_nhwc_u8(np.zeros((1, 2, 2, 3), np.uint8), 5, 1e-4, 0.75, 1.0, 0.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="<= 258"):
        lrn_nhwc_u8(np.zeros((1, 2, 2, 3), np.uint8), 259, 1e-4, 0.75, 1.0, 1.0, 0, 1.0, 0)


def test_kernels_write_into_a_given_array():
    rng = np.random.default_rng(3)
    x1, x2 = (rng.normal(0, 50, (2, 3, 4, 16)).astype(np.float32) for _ in range(2))
    out = np.empty_like(x1)
    assert lrn_nhwc(x1, 5, 1e-3, 0.75, 2.0, out=out) is out
    np.testing.assert_array_equal(out, lrn_nhwc(x1, 5, 1e-3, 0.75, 2.0))
    lrn_nhwc(x2, 5, 1e-3, 0.75, 2.0, out=out)  # reused: now x2's answer, nothing left of x1's
    np.testing.assert_array_equal(out, lrn_nhwc(x2, 5, 1e-3, 0.75, 2.0))
    q = rng.integers(0, 256, (1, 2, 3, 8)).astype(np.uint8)
    qout = np.empty_like(q)
    assert lrn_nhwc_u8(q, 5, 1e-4, 0.75, 1.0, 0.4, 2, 0.2, 5, out=qout) is qout
    np.testing.assert_array_equal(qout, lrn_nhwc_u8(q, 5, 1e-4, 0.75, 1.0, 0.4, 2, 0.2, 5))
    with pytest.raises(ValueError, match="not overlap"):
        lrn_nhwc(x1, 5, 1e-3, 0.75, 2.0, out=x1)
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        lrn_nhwc(x1, 5, 1e-3, 0.75, 2.0, out=np.empty((2, 3, 4, 15), np.float32))
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        lrn_nhwc_u8(q, 5, 1e-4, 0.75, 1.0, 0.4, 2, 0.2, 5, out=np.empty_like(q, np.float32))


def test_first_kernel_call_keeps_torchs_thread_count():
    """numba's OpenMP layer shares torch's OpenMP runtime (torch ships libgomp.so.1); starting it used to set
    that runtime to all cores, so a --threads 1 process (an image worker) ran torch on every core after its
    first LRN. A fresh process, as the layer starts once per process."""
    import subprocess
    import sys

    # get_num_threads() before the kernel, as build_classifier's log line does (it starts torch's OpenMP)
    code = ("import torch, numpy as np; torch.set_num_threads(1); torch.get_num_threads(); "
            "from detector.lrn_kernels import lrn_nhwc_u8; "
            "lrn_nhwc_u8(np.zeros((1, 3, 3, 8), np.uint8), 5, 1e-4, .75, 1., .3, 0, .25, 0, threads=1); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "1"
