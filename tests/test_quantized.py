"""model.backend=torch_int8 (detector/quantized.py): torch's int8 GoogLeNet against the fp32 network it
came from; the uint8 LRN against dequantise -> torch's LRN -> quantise; the cached ranges; pickling.

Speed is measured in tools/benchmark.py, never here."""
import contextlib
import pickle

import numpy as np
import pytest
import torch

from detector import cpu
from detector.classifier import RegionClassifier
from detector.googlenet import GoogLeNet
from detector.weights import BVLC_PREPROCESS

pytest.importorskip("numba")
quantized = pytest.importorskip("detector.quantized")
if quantized.ENGINE not in torch.backends.quantized.supported_engines:
    pytest.skip(f"this torch has no {quantized.ENGINE} quantized engine", allow_module_level=True)


def _member() -> RegionClassifier:
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=4).eval()  # the real architecture (LRN, ceil-mode pools, 5x5 branches)
    return RegionClassifier(net, ["a", "b", "c"], ["A", "B", "C"], BVLC_PREPROCESS, source="random")


def _batches(n: int = 2, size: int = 64, seed: int = 1) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, 3, size, size, generator=g) * 255 - 120).numpy() for _ in range(n)]


def test_quantized_lrn_equals_dequantise_lrn_quantise():
    """The fused uint8 kernel computes what FX's fp32 LRN between a dequantise and a quantise computes: the
    same uint8 values except, rarely, one step apart where float rounding lands on the other side of .5."""
    lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 40, 9, 11, generator=g) * 90).contiguous(memory_format=torch.channels_last)
    q = torch.quantize_per_tensor(x, 0.37, 3, torch.quint8)
    scale, zero = 0.29, 5
    ref = torch.quantize_per_tensor(lrn(q.dequantize()), scale, zero, torch.quint8).int_repr().int()
    layer = quantized.QuantizedLRN(lrn, scale, zero)
    got = layer(q)
    assert got.dtype == torch.quint8 and (got.q_scale(), got.q_zero_point()) == (scale, zero)
    diff = (got.int_repr().int() - ref).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    again = layer(torch.quantize_per_tensor(x.contiguous(), 0.37, 3, torch.quint8))  # NCHW input, kept output
    assert torch.equal(again.int_repr(), got.int_repr())
    with pytest.raises(TypeError, match="quint8"):
        layer(x)


def test_torch_int8_member_stays_close_to_fp32_and_keeps_the_head_fp32():
    m = _member()
    cal = _batches()
    q, observers = quantized.quantize_member(m, cal)
    names = {type(mod).__name__ for mod in q.net.modules()}
    assert "QuantizedLRN" in names and "LocalResponseNorm" not in names  # both LRNs run on uint8
    assert sum(isinstance(mod, quantized.QuantizedLRN) for mod in q.net.modules()) == 2
    assert type(q.net.classifier) is torch.nn.Linear  # the final linear layer stays fp32
    assert observers and all("activation_post_process" in k for k in observers)
    x = torch.from_numpy(_batches(1, seed=7)[0])
    with torch.inference_mode():
        ref, got = m(x).numpy(), q(x).numpy()
    assert got.shape == (4, 4)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # still a softmax over K + 1
    assert np.abs(got - ref).max() < 0.15  # int8: approximate by construction (as onnx_int8's test)
    assert q.classes == m.classes and q.preprocess is m.preprocess and "torch_int8" in q.source
    # the caller's member is left as it was (still torch's LRN, fp32)
    assert any(isinstance(mod, torch.nn.LocalResponseNorm) for mod in m.net.modules())


def test_torch_int8_ranges_are_cached_and_a_bad_cache_is_recomputed(tmp_path, caplog):
    from detector.backends import CalibrationSet
    from detector.config import WarpConfig

    m = _member()
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    cal = CalibrationSet(BVLC_PREPROCESS, WarpConfig(size=64), [image])
    calls = []
    cal.regions = lambda: calls.append(1) or _batches()  # stands in for Selective Search + warps
    x = torch.from_numpy(_batches(1, seed=9)[0])
    [first] = quantized.torch_int8_members([m], cal, tmp_path)
    [cached] = list(tmp_path.glob("*_ranges.pt"))
    assert len(calls) == 1
    with torch.inference_mode():
        want = first(x)
        [again] = quantized.torch_int8_members([m], cal, tmp_path)  # the cache: no regions computed
        assert len(calls) == 1 and torch.equal(again(x), want)
        cached.write_bytes(b"not a torch file")
        [fresh] = quantized.torch_int8_members([m], cal, tmp_path)  # calibrated again, the same ranges
        assert len(calls) == 2 and torch.equal(fresh(x), want)
    assert "ignoring cached ranges" in caplog.text
    # other calibration images: another key, another file
    other = CalibrationSet(BVLC_PREPROCESS, WarpConfig(size=64), [image[::-1].copy()])
    other.regions = lambda: _batches(seed=5)
    quantized.torch_int8_members([m], other, tmp_path)
    assert len(list(tmp_path.glob("*_ranges.pt"))) == 2


def test_torch_int8_member_pickles(tmp_path):
    """Image workers receive the built classifier pickled: the same probabilities on the other side."""
    q, _ = quantized.quantize_member(_member(), _batches())
    x = torch.from_numpy(_batches(1, seed=3)[0]).contiguous(memory_format=torch.channels_last)
    blob = pickle.dumps(q)
    keep = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "x86"  # a fresh process's default: the weights are packed for oneDNN
        with torch.inference_mode():
            got = pickle.loads(blob)
            assert torch.backends.quantized.engine == quantized.ENGINE
            assert torch.equal(got(x), q(x))
    finally:
        torch.backends.quantized.engine = keep


def test_image_workers_run_torch_int8_members(tmp_path):
    """detect_in_workers hands the quantised classifier to spawned processes (multiprocessing's pickler, which
    shares plain tensors as file descriptors): each image's detections are what one process finds."""
    from detector.classifier import Ensemble
    from detector.config import load_config
    from conftest import patch_images
    from detector.pipeline import Detector, detect_in_workers, make_proposer

    paths = patch_images(tmp_path, 2)
    cfg = load_config(None, ["warp.size=64", "warp.mode=square", "proposals.selective_search.resize_width=120",
                             "proposals.selective_search.superpixel_scale=1.0", "detect.score_threshold=0.0"])
    q, _ = quantized.quantize_member(_member(), _batches())
    classifier = Ensemble([q], batch_size=4, backend="torch_int8")
    got = list(detect_in_workers(paths, classifier, cfg, workers=2, threads=2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in each worker
        one = Detector(make_proposer(cfg.proposals), classifier, cfg.warp, cfg.detect)
        for path, image, dets, timings, err in got:
            assert err is None and len(dets) > 0
            ref = one.detect(image, path.stem)
            np.testing.assert_array_equal(dets.labels, ref.labels)
            np.testing.assert_allclose(dets.scores, ref.scores, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_torch_int8_refuses_onnx_recipes():
    from detector.cli import UserError

    with pytest.raises(UserError, match="int8_lrn_sums"):
        quantized.convert_members_int8([_member()], lrn_sums="int8")
    with pytest.raises(UserError, match="int8_calibration"):
        quantized.convert_members_int8([_member()], calibration="percentile")


def test_split_classification_with_torch_int8_members(tmp_path):
    """detect_split --backend torch_int8: quantised whole classifiers, close to the eager networks."""
    pytest.importorskip("cv2")
    from conftest import split_image
    from detector.training.split_eval import classify_split

    rec, boxes, warp = split_image(tmp_path)
    m = _member()
    [eager] = classify_split([rec], [boxes], [m.net], BVLC_PREPROCESS, warp)
    nets = quantized.torch_int8_members([m], _batches(), tmp_path / "c")
    [int8] = classify_split([rec], [boxes], nets, BVLC_PREPROCESS, warp, outputs_probs=True)
    assert int8[0].shape == (3, 4)
    assert np.abs(int8[0] - eager[0]).max() < 0.15


def test_torch_int8_agrees_with_fp32_on_real_regions(bvlc_weights, shared_data):
    """BVLC weights, real warped Selective Search regions of a real photo, calibrated on another photo
    (CalibrationSet, as model.backend=torch_int8 does): where fp32 is confident the int8 network's top ImageNet
    class is the same, elsewhere mostly (ambiguous crops among 1,000 classes; onnx_int8 calibrated the same way
    agreed on 29 of these 32 regions, this backend on 27), and its probabilities are close. Measured: with
    8-bit weights on a VNNI CPU 27 of 32 and max |diff| 0.17; on an AVX2 CPU without VNNI, 26 and 0.21 with
    the 7-bit weights chosen there, but 20 and 0.53 (a confident region flipped) with saturating 8-bit ones."""
    from detector.backends import CalibrationSet, calibration_regions
    from detector.config import WarpConfig
    from detector.imageio import read_image
    from detector.weights import build_backbone

    net = build_backbone("bvlc", 1000, bvlc_weights)[0].eval()
    m = RegionClassifier(net, [str(i) for i in range(999)], [str(i) for i in range(999)], BVLC_PREPROCESS,
                         source="bvlc")
    raccoon = shared_data / "raccoon" / "images"
    warp = WarpConfig()
    cal = CalibrationSet(BVLC_PREPROCESS, warp, [read_image(raccoon / "raccoon-1.jpg")], per_image=32)
    [q] = quantized.torch_int8_members([m], cal, None)
    [x] = calibration_regions(BVLC_PREPROCESS, warp, [read_image(raccoon / "raccoon-70.jpg")], per_image=32)
    x = torch.from_numpy(x)
    with torch.inference_mode():
        ref, got = m(x).numpy(), q(x).numpy()
    same = ref.argmax(1) == got.argmax(1)
    confident = ref.max(1) > 0.5
    assert confident.sum() >= 2 and same[confident].all()
    assert same.mean() >= 0.75
    assert np.abs(ref - got).max() < 0.25


def test_a_cpu_without_vnni_is_warned_about_8_bit_weights_and_gets_7(monkeypatch, caplog, tmp_path):
    from detector.backends import int8_weight_bits

    monkeypatch.setattr(cpu, "cpu_has_vnni", lambda: False)
    quantized.torch_int8_members([_member()], _batches(1), None, weight_bits=8)
    assert "no VNNI" in caplog.text
    caplog.clear()
    assert int8_weight_bits(0) == 7 and int8_weight_bits(8) == 8  # the default (0): this CPU's choice
    [q] = quantized.torch_int8_members([_member()], _batches(1), None)  # 0, the default: this CPU's choice
    assert "no VNNI" not in caplog.text and "7-bit weights" in q.source
    monkeypatch.setattr(cpu, "cpu_has_vnni", lambda: True)
    assert int8_weight_bits(0) == 8
    quantized.torch_int8_members([_member()], _batches(1), None, weight_bits=8)
    assert "no VNNI" not in caplog.text


def _quantized_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """The int8 weights of the converted graph's convolutions (kept as packed-parameter script objects)."""
    packed = [v for mod in net.modules() for v in vars(mod).values() if isinstance(v, torch.ScriptObject)]
    return [p.unpack()[0].int_repr() for p in packed]


def test_seven_bit_weights_stay_in_seven_bits_and_close_to_fp32():
    m, cal = _member(), _batches()
    q8, obs = quantized.quantize_member(m, cal)
    q7, obs7 = quantized.quantize_member(m, cal, weight_bits=7)
    w8, w7 = _quantized_weights(q8.net), _quantized_weights(q7.net)
    assert len(w7) == len(w8) == 57  # every convolution
    assert max(int(w.abs().max()) for w in w8) == 127  # symmetric per channel: each channel's largest is +-127
    # |w| <= 64 (torch rounds the largest to 64 = 63.5 rounded): 255 * 64 * 2 = 32,640 still fits 16 bits
    assert max(int(w.abs().max()) for w in w7) == 64
    assert all(torch.equal(obs[k], obs7[k]) for k in obs)  # the activation ranges do not depend on it
    x = torch.from_numpy(_batches(1, seed=7)[0])
    with torch.inference_mode():
        assert np.abs(q7(x).numpy() - m(x).numpy()).max() < 0.15
    with pytest.raises(ValueError, match="7 or 8"):
        quantized.quantize_member(m, cal, weight_bits=6)


def test_seven_bit_weights_cannot_saturate_the_16_bit_pair_sums():
    """One 1x1 convolution summing 64 channels of the largest uint8 activation (255) times the largest weight:
    the exact result is 640. Without VNNI oneDNN adds pairs of uint8 x int8 products in saturating 16 bits,
    so with 8-bit weights (255 * 127 * 2 = 64,770 > 32,767) it gets about half; with 7-bit weights
    (255 * 64 * 2 = 32,640) it cannot overflow. With VNNI both are exact."""
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 1, 1, bias=False)).eval()
    torch.nn.init.constant_(net[0].weight, 1.0)
    x = np.full((2, 64, 4, 4), 10.0, np.float32)
    out = {}
    for bits in (8, 7):
        q, _ = quantized.quantize_net(net, [x], weight_bits=bits)
        with torch.inference_mode():
            out[bits] = q(torch.from_numpy(x))
    np.testing.assert_allclose(out[7].numpy(), 640.0, rtol=0.01)
    if cpu.cpu_has_vnni() is False:
        assert float(out[8].max()) < 0.6 * 640  # the saturation 7-bit weights avoid
    elif cpu.cpu_has_vnni():
        np.testing.assert_allclose(out[8].numpy(), 640.0, rtol=0.01)


def test_preparing_without_fx_stack_traces_changes_nothing_but_the_traces():
    """quantized._prepare switches off FX's per-node stack traces (their symbolisation was most of a torch_int8
    member's start-up) and restores the switch after; the quantised network computes exactly the same numbers as
    one prepared with the traces."""
    fx_config = pytest.importorskip("torch.fx.config")
    if not hasattr(fx_config, "do_not_emit_stack_traces"):
        pytest.skip("this torch has no torch.fx.config.do_not_emit_stack_traces")
    m, cal = _member(), _batches()
    x = torch.from_numpy(_batches(1, seed=3)[0])
    assert fx_config.do_not_emit_stack_traces is False
    prepared, _ = quantized._prepare(m.net, torch.zeros(1, 3, 64, 64))
    assert fx_config.do_not_emit_stack_traces is False  # restored
    assert not any(n.stack_trace for n in prepared.graph.nodes)
    fast, obs = quantized.quantize_net(m.net, cal)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantized, "_without_fx_stack_traces", contextlib.nullcontext)
        traced, _ = quantized._prepare(m.net, torch.zeros(1, 3, 64, 64))
        assert any(n.stack_trace for n in traced.graph.nodes)  # what the switch saves
        slow, obs_slow = quantized.quantize_net(m.net, cal)
    assert all(torch.equal(obs[k], obs_slow[k]) for k in obs)
    with torch.inference_mode():
        assert torch.equal(fast(x), slow(x))
