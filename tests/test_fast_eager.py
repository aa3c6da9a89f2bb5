"""The eager fp32 inference path (detector/fast_eager.py, detector/eager_kernels.py): the numba max pooling
against torch's, Winograd F(4x4, 3x3) against a float64 direct convolution, the fused convolution + ReLU
bit for bit against the plain module, and the fast path staying out of training, autocast and tracing.

Speed is measured in tools/benchmark.py and the README's A/B scripts, never here."""
import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("numba")
from detector import fast_eager as fe  # noqa: E402
from detector.eager_kernels import max_pool_nhwc, pool_output_size  # noqa: E402
from detector.googlenet import ConvReLU, GoogLeNet  # noqa: E402

if fe._pointwise_conv() is None:
    pytest.skip("this torch has no oneDNN fused convolution", allow_module_level=True)


def _cl(*shape, seed=0, relu=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return (x.relu() if relu else x).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size,kernel,stride,padding,ceil", [
    ((2, 7, 112, 112), 3, 2, 0, True), ((3, 5, 56, 55), 3, 2, 0, True), ((2, 9, 28, 28), 3, 1, 1, True),
    ((1, 4, 14, 14), 3, 2, 0, True), ((2, 3, 7, 7), 3, 1, 1, True), ((2, 6, 13, 10), 2, 2, 0, False),
    ((1, 5, 9, 12), 3, 2, 1, False), ((2, 3, 5, 6), 2, 2, 0, True)])
def test_max_pool_kernel_is_torchs_max_pool(size, kernel, stride, padding, ceil):
    x = _cl(*size)
    ref = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    pool = fe.ChannelMaxPool(torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil))
    with torch.inference_mode():
        got = pool(x)
    assert got.shape == ref.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, ref)


def test_pool_output_size_is_torchs():
    for size in range(1, 30):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    if size + 2 * p < k:
                        continue
                    for ceil in (False, True):
                        want = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), ceil_mode=ceil).shape[2]
                        assert pool_output_size(size, k, s, p, ceil) == want, (size, k, s, p, ceil)


def test_max_pool_kernel_rejects_wrong_arrays():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="float32"):
        max_pool_nhwc(x.astype(np.float64), np.zeros((1, 2, 2, 2), np.float32), 2, 2, 0)
    with pytest.raises(ValueError, match="float32"):
        max_pool_nhwc(x, np.zeros((1, 2, 2, 3), np.float32), 2, 2, 0)


@pytest.mark.parametrize("shape,cin,cout", [((2, 16, 16), 8, 12), ((3, 15, 17), 5, 7), ((1, 28, 28), 16, 32),
                                            ((2, 14, 21), 3, 4)])
def test_winograd_equals_a_float64_direct_convolution(shape, cin, cout, monkeypatch):
    """F(4x4, 3x3) against the convolution computed in float64: within fp32 rounding (relative 1e-5 of the
    output's range), including maps that are not multiples of 4 and batches cut into several chunks."""
    n, h, w = shape
    torch.manual_seed(0)
    conv = ConvReLU(cin, cout, 3, padding=1).eval()
    x = _cl(n, cin, h, w, relu=True)
    ref = F.relu(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
    monkeypatch.setattr(fe, "CHUNK_BYTES", 1)  # one region per chunk
    monkeypatch.setattr(fe, "WINOGRAD_MIN_SIZE", 4)
    fe.fast_eager(conv, winograd=True)
    with torch.inference_mode():
        assert fe.FastConv.fits_winograd(conv, x)
        got = conv(x)
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    err = (got.double() - ref).abs().max().item()
    assert err <= 1e-5 * ref.abs().max().item(), err
    assert (got >= 0).all()
    with torch.inference_mode():  # into a given output (kept by a caller across batches), or a clear error
        out = torch.full((n, cout, h, w), 7.0).contiguous(memory_format=torch.channels_last)
        assert conv.fast(conv, x, out=out) is out and torch.equal(out, got)
        with pytest.raises(ValueError, match="Winograd output"):
            conv.fast(conv, x, out=torch.empty(n, cout, h, w))


def test_winograd_follows_changed_weights():
    torch.manual_seed(1)
    conv = fe.fast_eager(ConvReLU(4, 6, 3, padding=1).eval())
    x = _cl(2, 4, 16, 16)
    with torch.inference_mode():
        before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(-2.0)
    with torch.inference_mode():
        after = conv(x)
    ref = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert not torch.allclose(before, after)
    assert (after - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("cin,cout,k,stride,pad,hw", [(3, 16, 7, 2, 3, 40), (24, 8, 1, 1, 0, 14), (8, 16, 5, 1, 2, 14),
                                                      (8, 16, 3, 1, 1, 7)])
def test_fused_convolution_is_the_plain_module_bit_for_bit(cin, cout, k, stride, pad, hw):
    torch.manual_seed(2)
    conv = ConvReLU(cin, cout, k, stride=stride, padding=pad).eval().to(memory_format=torch.channels_last)
    x = _cl(3, cin, hw, hw)
    with torch.inference_mode():
        ref = conv(x)
        fe.fast_eager(conv, winograd=True)  # 7x7 maps and non-3x3 kernels: never Winograd
        assert not fe.FastConv.fits_winograd(conv, x)
        got = conv(x)
    assert torch.equal(got, ref)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_the_fast_path_runs_only_in_fp32_channels_last_inference(monkeypatch):
    """Training (autograd), bf16 autocast, NCHW inputs and tracing run torch's modules: the fast path raising
    here would fail them."""
    torch.manual_seed(3)
    net = fe.fast_eager(GoogLeNet(num_classes=5))
    called = []

    def spy(self, conv, x):
        called.append(tuple(x.shape))
        return None  # "not here": the module's own path runs

    monkeypatch.setattr(fe.FastConv, "__call__", spy)
    x = _cl(2, 3, 64, 64)
    net.train()
    net(x)[0].sum().backward()  # autograd through the modules
    assert net.conv1.weight.grad is not None and not called
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.bfloat16
    with torch.inference_mode():
        net(x.contiguous())  # NCHW memory
        torch.jit.trace(net, x, check_trace=False)
    assert not called
    with torch.inference_mode():
        net(x)
    assert len(called) == 57  # every convolution of GoogLeNet, once


def test_fast_eager_keeps_state_dict_pickles_and_undoes():
    torch.manual_seed(4)
    net = GoogLeNet(num_classes=5).eval().to(memory_format=torch.channels_last)
    keys = list(net.state_dict())
    x = _cl(2, 3, 96, 96)
    with torch.inference_mode():
        ref = net(x)
        fe.fast_eager(net)
        fast = net(x)
        assert list(net.state_dict()) == keys
        assert isinstance(net.pool1, fe.ChannelMaxPool) and isinstance(net.inception_4a.pool, fe.ChannelMaxPool)
        fe.fast_eager(net)  # again: no ChannelMaxPool inside a ChannelMaxPool
        assert isinstance(net.pool1.pool, torch.nn.MaxPool2d)
        for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            assert torch.equal(other(x), fast)
        assert torch.allclose(fast, ref, atol=1e-5)
        fe.plain_eager(net)
        assert type(net.pool1) is torch.nn.MaxPool2d and net.conv1.fast is None
        assert torch.equal(net(x), ref)


def test_build_classifier_applies_the_config(monkeypatch):
    from detector.classifier import Ensemble, RegionClassifier
    from detector.weights import BVLC_PREPROCESS

    def member():
        torch.manual_seed(5)
        return RegionClassifier(GoogLeNet(num_classes=3), ["a", "b"], ["A", "B"], BVLC_PREPROCESS)

    on = Ensemble([member()], batch_size=2)
    off = Ensemble([member()], batch_size=2, eager_kernels=False)
    direct = Ensemble([member()], batch_size=2, winograd=False)
    bf16 = Ensemble([member()], batch_size=2, backend="bf16")
    assert on.members[0].net.conv2.fast.winograd and not direct.members[0].net.conv2.fast.winograd
    assert off.members[0].net.conv2.fast is None and bf16.members[0].net.conv2.fast is None
    x = torch.rand(3, 3, 112, 112) * 255 - 120
    p_off, p_direct, p_on = off.predict(x), direct.predict(x), on.predict(x)
    assert np.array_equal(p_direct, p_off)
    assert np.abs(p_on - p_off).max() < 1e-5


def test_eager_kernels_on_real_regions(bvlc_weights, shared_data):
    """BVLC GoogLeNet on real warped Selective Search regions: the default path (fused convolutions, pooling
    kernel, Winograd) gives the probabilities of torch's modules to ~1e-6 and the same top classes."""
    from detector.backends import calibration_regions
    from detector.classifier import Ensemble, RegionClassifier
    from detector.config import WarpConfig
    from detector.imageio import read_image
    from detector.weights import BVLC_PREPROCESS, build_backbone

    def member():
        net = build_backbone("bvlc", 1000, bvlc_weights)[0]
        names = [str(i) for i in range(999)]
        return RegionClassifier(net, names, names, BVLC_PREPROCESS, source="bvlc")

    [x] = calibration_regions(BVLC_PREPROCESS, WarpConfig(), [read_image(shared_data / "raccoon" / "images" /
                                                                          "raccoon-70.jpg")], per_image=16)
    x = torch.from_numpy(x)
    ref = Ensemble([member()], batch_size=8, eager_kernels=False).predict(x)
    got = Ensemble([member()], batch_size=8).predict(x)
    assert np.array_equal(ref.argmax(1), got.argmax(1))
    assert np.abs(ref - got).max() < 1e-5
