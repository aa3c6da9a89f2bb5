"""Region-classification backends give the same outputs as torch eager fp32 (within stated tolerances).

Speed is measured in tools/benchmark.py, never here. Skipped when onnxruntime is not installed.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from detector.backends import EXPORT_ATOL, OrtMember, export_onnx, onnx_members, quantize_int8  # noqa: E402
from detector.classifier import ChannelLRN, RegionClassifier  # noqa: E402
from detector.googlenet import GoogLeNet  # noqa: E402
from detector.weights import BVLC_PREPROCESS  # noqa: E402


def _member(tiny: bool = False):
    torch.manual_seed(0)
    if tiny:  # for cache/refusal logic: a small stand-in network keeps the test fast
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 4)).eval()
    else:  # the real architecture (LRN, ceil-mode pools, 5x5 branches) at a small input size
        net = GoogLeNet(num_classes=4).eval()
    return RegionClassifier(net, ["a", "b", "c"], ["A", "B", "C"], BVLC_PREPROCESS, source="random")


def test_onnx_fp32_matches_torch_and_int8_stays_close(tmp_path):
    m = _member()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 96, 96, generator=g) * 255 - 120
    with torch.no_grad():
        ref = m(x).numpy()
    [om] = onnx_members([m], "onnx", tmp_path, size=96)
    got = om(x).numpy()
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    q = quantize_int8(tmp_path / next(p.name for p in tmp_path.glob("*_fp32.onnx")), tmp_path / "q.onnx",
                      [x[:3].numpy(), x[3:].numpy()])
    qp = OrtMember(q, m)(x).numpy()
    np.testing.assert_allclose(qp.sum(1), 1.0, atol=1e-4)  # still a softmax over K + 1
    assert np.abs(qp - ref).max() < 0.15  # int8: approximate by construction


@pytest.mark.parametrize("lrn_sums", ["int8", "fp32"])
def test_int8_quantises_the_trunk_and_keeps_the_head_fp32(tmp_path, monkeypatch, lrn_sums):
    import onnx

    import detector.backends as b
    monkeypatch.setitem(b.INT8_RECIPE, "lrn_sums", lrn_sums)
    m = _member()  # torch's LRN: the export itself must switch to ChannelLRN (NHWC: a band matrix product)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 64, 64, generator=g) * 255 - 120
    fp32 = export_onnx(m, tmp_path / "m.onnx", size=64, check_inputs=x)
    assert not any(isinstance(c, ChannelLRN) for c in m.modules())  # the caller's member is left as it was
    ops = [n.op_type for n in onnx.load(str(fp32)).graph.node]
    assert "Range" not in ops and ops.count("Conv") == 57  # GoogLeNet's 57 convolutions
    assert ops.count("MatMul") == 2 and ops.count("Pow") == 2  # one band product of x^2 per LRN
    q = onnx.load(str(quantize_int8(fp32, tmp_path / "q.onnx", [x.numpy()])))
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}

    def quantised(node):  # every input that is not a constant comes through a DequantizeLinear
        ins = [producer.get(i) for i in node.input if i not in inits and i in producer]
        return bool(ins) and all(p.op_type == "DequantizeLinear" for p in ins)

    by_type = {}
    for n in q.graph.node:
        by_type.setdefault(n.op_type, []).append(n)
    assert all(quantised(n) for n in by_type["Concat"])
    # the LRNs' band products (summing x^2 over channels) are int8 or fp32 as the recipe says
    bands = [n for n in by_type["MatMul"] if "norm" in n.name]
    assert len(bands) == 2 and all(quantised(n) == (lrn_sums == "int8") for n in bands)
    assert all(quantised(n) for n in by_type["Conv"])
    # as ONNX Runtime runs it, every max pooling is uint8 and channels-last, pool2 and inception_3a's pool
    # after the LRN's fp32 steps too (with ChannelLRN's NCHW form those two ran in ORT's slow NCHW pooling)
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), so, providers=["CPUExecutionProvider"])
    pools = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node if "MaxPool" in n.op_type]
    assert pools == ["NhwcMaxPool"] * 13
    [gemm] = by_type["Gemm"]
    assert not quantised(gemm) and inits[gemm.input[1]].data_type == onnx.TensorProto.FLOAT
    assert not quantised(by_type["Softmax"][0])
    [gap] = by_type["GlobalAveragePool"]  # reads the uint8 trunk, but its 1024-d average stays fp32
    assert not [n for n in q.graph.node if gap.output[0] in n.input and n.op_type == "QuantizeLinear"]


def test_export_is_cached_by_weights(tmp_path):
    m = _member(tiny=True)
    onnx_members([m], "onnx", tmp_path, size=32)
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    onnx_members([m], "onnx", tmp_path, size=32)
    assert files == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with torch.no_grad():
        m.net[3].bias.add_(1.0)  # changed weights -> a new export
    onnx_members([m], "onnx", tmp_path, size=32)
    assert len(list(tmp_path.glob("*_fp32.onnx"))) == 2


def test_export_refuses_mismatch(tmp_path, monkeypatch):
    m = _member(tiny=True)
    import detector.backends as b
    monkeypatch.setattr(b, "EXPORT_ATOL", -1.0)  # any difference at all is now too much
    with pytest.raises(RuntimeError, match="differs from torch"):
        export_onnx(m, tmp_path / "m.onnx", size=32)
    assert not (tmp_path / "m.onnx").exists()


def test_int8_cache_is_keyed_by_calibration_and_export(tmp_path, monkeypatch):
    m = _member(tiny=True)
    g = torch.Generator().manual_seed(2)
    a = [(torch.rand(4, 3, 32, 32, generator=g) * 255 - 120).numpy()]
    b = [a[0] * 0.1]  # other calibration regions -> other activation ranges -> another quantised graph
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32)
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32)
    assert len(list(tmp_path.glob("*_int8_*.onnx"))) == 1  # same calibration: reused
    onnx_members([m], "onnx_int8", tmp_path, calibration=b, size=32)
    assert len(list(tmp_path.glob("*_int8_*.onnx"))) == 2
    with pytest.raises(Exception, match="calibration"):
        onnx_members([m], "onnx_int8", tmp_path, calibration=None, size=32)
    import detector.backends as b
    before = {p.name for p in tmp_path.glob("*_int8_*.onnx")}
    monkeypatch.setattr(b, "EXPORT_VERSION", b.EXPORT_VERSION + 1)  # a new export: no int8 graph of the old
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32)
    assert {p.name for p in tmp_path.glob("*_int8_*.onnx")} - before


def test_int8_recipe_from_config(tmp_path):
    import detector.backends as b
    from detector.backends import int8_recipe
    from detector.cli import UserError
    from detector.config import load_config

    cfg = load_config(None, ["model.int8_lrn_sums=int8"]).model
    assert int8_recipe(cfg.int8_lrn_sums, cfg.int8_calibration, cfg.int8_weight_bits) == {
        **b.INT8_RECIPE, "lrn_sums": "int8", "weight_bits": b.int8_weight_bits(0)}
    assert int8_recipe(weight_bits=7)["weight_bits"] == 7
    with pytest.raises(UserError, match="calibration must be one of"):
        int8_recipe(calibration="entropy")
    with pytest.raises(UserError, match="int8_weight_bits must be"):
        int8_recipe(weight_bits=4)
    m = _member(tiny=True)
    a = [(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255 - 120).numpy()]
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32)
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32, recipe=int8_recipe(lrn_sums="int8"),
                 lrn="graph")
    assert len(list(tmp_path.glob("*_int8_*.onnx"))) == 2  # another recipe, another graph (not the cached one)
    onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32,
                 recipe=int8_recipe(weight_bits=15 - b.int8_weight_bits(0)))  # the other weight width
    assert len(list(tmp_path.glob("*_int8_*.onnx"))) == 3
    # the fused LRN kernel computes the sums exactly: it cannot stand for the int8-sums recipe
    with pytest.raises(UserError, match="needs model.onnx_lrn=graph"):
        onnx_members([m], "onnx_int8", tmp_path, calibration=a, size=32, recipe=int8_recipe(lrn_sums="int8"))
    with pytest.raises(UserError, match="onnx_lrn must be one of"):
        onnx_members([m], "onnx", tmp_path, size=32, lrn="kernel")


def test_split_classification_with_onnx_members_equals_eager(tmp_path):
    """detect_split --backend onnx: whole-classifier ONNX sessions give the eager networks' probabilities."""
    pytest.importorskip("cv2")
    from conftest import split_image
    from detector.training.split_eval import classify_split

    rec, boxes, warp = split_image(tmp_path)
    m = _member()
    [eager] = classify_split([rec], [boxes], [m.net], BVLC_PREPROCESS, warp)
    [onnx] = classify_split([rec], [boxes], onnx_members([m], "onnx", tmp_path / "c", size=64), BVLC_PREPROCESS,
                            warp, outputs_probs=True)
    assert onnx[0].shape == (3, 4)
    np.testing.assert_allclose(onnx[0], eager[0], atol=1e-4)


def test_profile_onnx_shares_add_up(tmp_path):
    """detector.bench.profile_onnx (tools/profile_onnx.py): ORT's profile of a real export, every kernel's
    time attributed to an operator type and a node, the shares summing to 1."""
    from detector.bench import profile_onnx

    m = _member(tiny=True)
    [om] = onnx_members([m], "onnx", tmp_path, size=32)
    x = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 255 - 120).numpy()
    r = profile_onnx(om.path, x, batch=4, threads=1, rounds=3)
    assert r["regions"] == 4 + 2 + 4 and r["regions_per_s"] > 0
    assert abs(sum(r["op_share"].values()) - 1) < 1e-9 and abs(sum(r["node_share"].values()) - 1) < 1e-9
    assert "Conv" in r["op_share"] and list(r["op_share"].values()) == sorted(r["op_share"].values(), reverse=True)


def test_fused_lrn_runs_the_same_network(tmp_path):
    """model.onnx_lrn=fused: the graph cut around its two LRNs, each run by the fused kernel between ONNX
    Runtime sessions (uint8 at the cuts in int8), gives the whole graph's probabilities; and survives pickling
    (image workers)."""
    pytest.importorskip("numba")
    import pickle

    import onnx

    from detector.backends import lrn_specs, split_at_lrns

    m = _member()
    assert [s["prefix"] for s in lrn_specs(m)] == ["/net/norm1/", "/net/norm2/"]
    g = torch.Generator().manual_seed(5)
    x = torch.rand(5, 3, 64, 64, generator=g) * 255 - 120
    with torch.no_grad():
        ref = m(x).numpy()
    [fused] = onnx_members([m], "onnx", tmp_path, size=64)
    [whole] = onnx_members([m], "onnx", tmp_path, size=64, lrn="graph")
    assert len(fused.sessions) == 3 and len(whole.sessions) == 1 and "LRN fused" in fused.source
    np.testing.assert_allclose(fused(x).numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(fused(x).numpy(), whole(x).numpy(), atol=1e-6)
    # a channels-last batch (the cv2 sampler's) is made NCHW by the member itself: the same numbers
    np.testing.assert_array_equal(fused(x.contiguous(memory_format=torch.channels_last)).numpy(), fused(x).numpy())
    # the LRN outputs go to arrays kept per LRN and batch shape: another batch size, then the first again
    np.testing.assert_allclose(fused(x[:2]).numpy(), ref[:2], atol=1e-5)
    np.testing.assert_allclose(fused(x).numpy(), ref, atol=1e-5)
    assert len(fused._buffers) == 4

    q = quantize_int8(fused.path, tmp_path / "q.onnx", [x.numpy()])
    q_whole, q_fused = OrtMember(q, m), OrtMember(q, m, lrn=lrn_specs(m))
    # the cuts are the int8 graph's own uint8 tensors, channels-last
    outs = [s.get_outputs()[0] for s in q_fused.sessions[:2]]
    assert [o.type for o in outs] == ["tensor(uint8)"] * 2
    assert [lrn["in_q"] is not None and lrn["out_q"] is not None for lrn in q_fused.lrns] == [True, True]
    a, b = q_whole(x).numpy(), q_fused(x).numpy()
    assert np.abs(a - b).max() < 0.02 and (a.argmax(1) == b.argmax(1)).all()  # one rounding step at most
    again = pickle.loads(pickle.dumps(q_fused))
    np.testing.assert_array_equal(again(x).numpy(), b)

    with pytest.raises(RuntimeError, match="no channels-last LRN at /net/norm9/"):
        split_at_lrns(onnx.load(str(q)), [{**lrn_specs(m)[0], "prefix": "/net/norm9/"}])


def test_conv_only_segment_runs_in_torch_with_winograd(tmp_path):
    """model.winograd with the fused LRNs: the segment between the two LRNs (conv2_reduce, conv2; only
    convolutions with ReLUs) runs in torch, its 3x3 convolution by Winograd: ONNX Runtime's numbers for that
    segment to fp32 rounding, the same probabilities to ~1e-6; the other segments stay ONNX Runtime sessions,
    and pickling (image workers) builds it again."""
    pytest.importorskip("numba")
    import pickle

    import onnx
    import onnxruntime as ort

    from detector.backends import TorchConvSegment, lrn_specs, split_at_lrns

    m = _member()
    g = torch.Generator().manual_seed(6)
    x = torch.rand(5, 3, 64, 64, generator=g) * 255 - 120  # conv2 on 16x16 maps: Winograd applies
    [plain] = onnx_members([m], "onnx", tmp_path, size=64)
    [wino] = onnx_members([m], "onnx", tmp_path, size=64, winograd=True)
    kinds = [type(s).__name__ for s in wino.sessions]
    assert kinds == ["InferenceSession", "TorchConvSegment", "InferenceSession"] and "Winograd" in wino.source
    assert not any(isinstance(s, TorchConvSegment) for s in plain.sessions)
    conv2 = wino.sessions[1].convs[1]
    assert conv2.kernel_size == (3, 3) and conv2.fast.winograd
    a, b = plain(x).numpy(), wino(x).numpy()
    assert np.abs(a - b).max() < 1e-5 and (a.argmax(1) == b.argmax(1)).all()
    # conv2's output is kept per batch shape: another batch size, then the first again
    np.testing.assert_allclose(wino(x[:2]).numpy(), a[:2], atol=1e-5)
    np.testing.assert_array_equal(wino(x).numpy(), b)
    assert sorted(s[0] for s in wino.sessions[1]._out) == [2, 5]
    again = pickle.loads(pickle.dumps(wino))
    assert isinstance(again.sessions[1], TorchConvSegment)
    np.testing.assert_array_equal(again(x).numpy(), b)

    segments, _ = split_at_lrns(onnx.load(str(plain.path)), lrn_specs(m))
    assert TorchConvSegment.from_onnx(segments[0]) is None and TorchConvSegment.from_onnx(segments[2]) is None
    seg = TorchConvSegment.from_onnx(segments[1])
    sess = ort.InferenceSession(segments[1], providers=["CPUExecutionProvider"])
    nhwc = np.random.default_rng(0).random((3, 16, 16, 64), np.float32) * 4
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: nhwc})
    (got,) = seg.run(None, {seg.input_name: nhwc})
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # int8 graphs have no such segment (quantise/dequantise nodes around every convolution)
    q = quantize_int8(plain.path, tmp_path / "q.onnx", [x.numpy()])
    assert not any(isinstance(s, TorchConvSegment) for s in OrtMember(q, m, lrn=lrn_specs(m), winograd=True).sessions)


def test_int8_calibration_regions_are_computed_only_to_quantise(tmp_path, monkeypatch):
    """A CalibrationSet finds the cached int8 graph by its key (the images' pixels and the settings), so a
    start with the graph in the cache runs no Selective Search; any input that changes the regions changes the key."""
    import detector.backends as b
    from detector.config import WarpConfig

    m = _member(tiny=True)
    rng = np.random.default_rng(0)
    imgs = []
    for _ in range(2):  # blocks of colour: Selective Search finds regions in them
        img = np.full((96, 128, 3), 200, np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, 70), rng.integers(0, 100)
            img[y:y + rng.integers(15, 40), x:x + rng.integers(15, 40)] = rng.integers(0, 255, 3)
        imgs.append(img)
    warp = WarpConfig(size=32, context_pad=2)
    calls = []
    real = b.calibration_regions
    monkeypatch.setattr(b, "calibration_regions", lambda *a, **k: calls.append(1) or real(*a, **k))
    cs = b.CalibrationSet(m.preprocess, warp, imgs, per_image=8)
    onnx_members([m], "onnx_int8", tmp_path, calibration=cs, size=32)
    regions = cs.regions()
    assert len(calls) == 1 and len(list(tmp_path.glob("*_int8_*.onnx"))) == 1
    assert sum(len(r) for r in regions) == 16 and regions[0].shape[1:] == (3, 32, 32)
    again = b.CalibrationSet(m.preprocess, warp, [i.copy() for i in imgs], per_image=8)
    onnx_members([m], "onnx_int8", tmp_path, calibration=again, size=32)
    assert len(calls) == 1 and len(list(tmp_path.glob("*_int8_*.onnx"))) == 1  # found by the key alone
    assert again.key == cs.key
    other = [i.copy() for i in imgs]
    other[1][0, 0, 0] ^= 1  # one pixel
    keys = {b.CalibrationSet(m.preprocess, warp, other, per_image=8).key,
            b.CalibrationSet(m.preprocess, WarpConfig(size=32, context_pad=4), imgs, per_image=8).key,
            b.CalibrationSet(m.preprocess, warp, imgs, per_image=4).key,
            b.CalibrationSet(m.preprocess, warp, imgs[:1], per_image=8).key}
    monkeypatch.setattr(b, "CALIBRATION_VERSION", b.CALIBRATION_VERSION + 1)
    keys.add(b.CalibrationSet(m.preprocess, warp, imgs, per_image=8).key)
    assert len(keys) == 5 and cs.key not in keys


def test_onnx_int8_seven_bit_weights_cannot_saturate(tmp_path):
    """ONNX Runtime's int8 convolutions on a CPU without VNNI add pairs of uint8 x int8 products in saturating
    16 bits (its own quantisation notes), like oneDNN: one 1x1 convolution over 64 channels of the largest
    activation and weight, exactly 640 in fp32, is about half that with 8-bit weights there and exact with the
    7-bit weights ``weight_bits=7`` (ORT's reduce_range) gives."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from detector.backends import int8_recipe, quantize_int8
    from detector.cpu import cpu_has_vnni

    net = torch.nn.Sequential(torch.nn.Conv2d(64, 1, 1, bias=False), torch.nn.AdaptiveAvgPool2d(1)).eval()
    torch.nn.init.constant_(net[0].weight, 1.0)
    x = np.full((2, 64, 4, 4), 10.0, np.float32)
    fp32 = tmp_path / "conv.onnx"
    torch.onnx.export(net, torch.from_numpy(x), str(fp32), input_names=["regions"], output_names=["out"],
                      opset_version=17, dynamo=False)
    out = {}
    for bits in (8, 7):
        path = quantize_int8(fp32, tmp_path / f"conv{bits}.onnx", [x], int8_recipe(weight_bits=bits))
        ints = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if numpy_helper.to_array(i).dtype == np.int8 and numpy_helper.to_array(i).size == 64]
        assert len(ints) == 1 and int(np.abs(ints[0].astype(int)).max()) == (127 if bits == 8 else 64)
        out[bits] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"regions": x})[0]
    np.testing.assert_allclose(out[7], 640.0, rtol=0.01)
    if cpu_has_vnni() is False:
        assert float(out[8].max()) < 0.6 * 640
    elif cpu_has_vnni():
        np.testing.assert_allclose(out[8], 640.0, rtol=0.01)


def test_mnn_runs_the_last_segment_with_the_same_numbers(tmp_path, capfd):
    """model.backend=mnn: the fp32 graph's segment after the second LRN runs in MNN, converted once into the
    cache (a second member loads it, converts nothing), with ONNX Runtime's and torch's probabilities within the
    export tolerance (MNN's own Winograd tiles round differently: up to 6.7e-5 on real images, README "Speed") and
    the same top class; other batch sizes, pickling (image workers); MNN's own printing does not reach the tools'
    output."""
    pytest.importorskip("MNN")
    pytest.importorskip("numba")
    import pickle

    from detector.backends import MnnSegment

    m = _member()
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 3, 64, 64, generator=g) * 255 - 120
    with torch.no_grad():
        ref = m(x).numpy()
    [plain] = onnx_members([m], "onnx", tmp_path, size=64, winograd=True)
    capfd.readouterr()
    [mnn] = onnx_members([m], "mnn", tmp_path, size=64, winograd=True)
    assert capfd.readouterr().out == ""
    kinds = [type(s).__name__ for s in mnn.sessions]
    assert kinds == ["InferenceSession", "TorchConvSegment", "MnnSegment"] and "inception blocks in MNN" in mnn.source
    [cached] = list(tmp_path.glob("mnn_*.mnn"))
    a, b = plain(x).numpy(), mnn(x).numpy()
    assert np.abs(a - b).max() <= EXPORT_ATOL and (a.argmax(1) == b.argmax(1)).all()
    np.testing.assert_allclose(b, ref, atol=EXPORT_ATOL)
    np.testing.assert_allclose(mnn(x[:2]).numpy(), b[:2], atol=1e-6)  # another batch shape, then the first
    np.testing.assert_allclose(mnn(x).numpy(), b, atol=1e-6)
    stamp = cached.stat().st_mtime_ns
    [again] = onnx_members([m], "mnn", tmp_path, size=64, winograd=True)
    assert list(tmp_path.glob("mnn_*.mnn")) == [cached] and cached.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again(x).numpy(), b, atol=1e-6)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(mnn))(x).numpy(), b, atol=1e-6)
    assert isinstance(again.sessions[-1], MnnSegment)


def test_mnn_conversion_is_refused_when_it_differs(tmp_path, monkeypatch):
    pytest.importorskip("MNN")
    pytest.importorskip("numba")
    import detector.backends as b

    m = _member()
    monkeypatch.setattr(b, "EXPORT_ATOL", -1.0)  # any difference at all is now too much
    with pytest.raises(RuntimeError, match="differs from torch"):  # the ONNX export itself is checked first
        onnx_members([m], "mnn", tmp_path, size=64)
    monkeypatch.setattr(b, "EXPORT_ATOL", 1e-4)
    onnx_members([m], "onnx", tmp_path, size=64)  # the export is cached now
    for f in tmp_path.glob("mnn_*"):
        f.unlink()
    monkeypatch.setattr(b, "EXPORT_ATOL", -1.0)
    with pytest.raises(RuntimeError, match="differs from ONNX Runtime"):
        onnx_members([m], "mnn", tmp_path, size=64)
    assert not list(tmp_path.glob("mnn_*")) and not list(tmp_path.glob("*.tmp.*"))


def test_mnn_needs_the_fused_lrns(tmp_path):
    pytest.importorskip("MNN")
    from detector.cli import UserError

    with pytest.raises(UserError, match="needs model.onnx_lrn=fused"):
        onnx_members([_member(tiny=True)], "mnn", tmp_path, size=32, lrn="graph")


def test_mnn_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from detector.cli import UserError

    monkeypatch.setitem(sys.modules, "MNN", None)  # as if not installed
    with pytest.raises(UserError, match=r"needs MNN: pip install -e '\.\[mnn\]'"):
        onnx_members([_member(tiny=True)], "mnn", tmp_path, size=32)
