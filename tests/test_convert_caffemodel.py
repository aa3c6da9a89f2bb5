"""Caffe .caffemodel conversion: hand-encoded protobuf messages (new, legacy V1 and packed/unpacked
variants), bad files, and a round trip of the real BVLC arrays through a caffemodel written here."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from detector.caffemodel import CaffeModelError, caffemodel_to_arrays, read_caffemodel

REPO = Path(__file__).resolve().parents[1]


def convert_main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("tool_convert_caffemodel", REPO / "tools" / "convert_caffemodel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


# --- a minimal protobuf encoder (wire format only) ------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def field_bytes(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def blob(arr: np.ndarray, legacy_shape: bool = False, packed: bool = True) -> bytes:
    arr = np.asarray(arr, np.float32)
    if legacy_shape:  # num/channels/height/width = fields 1..4
        dims = (1,) * (4 - arr.ndim) + arr.shape
        msg = b"".join(field_varint(f, d) for f, d in zip((1, 2, 3, 4), dims))
    else:  # BlobShape (field 7) with packed int64 dims (field 1)
        msg = field_bytes(7, field_bytes(1, b"".join(varint(d) for d in arr.shape)))
    if packed:
        msg += field_bytes(5, arr.astype("<f4").tobytes())
    else:  # one fixed32 per value (wire type 5)
        msg += b"".join(varint(5 << 3 | 5) + struct.pack("<f", v) for v in arr.reshape(-1))
    return msg


def layer(name: str, ltype: str, blobs: list[bytes]) -> bytes:
    """NetParameter.layer (field 100) holding LayerParameter(name=1, type=2, blobs=7)."""
    msg = field_bytes(1, name.encode()) + field_bytes(2, ltype.encode())
    msg += b"".join(field_bytes(7, b) for b in blobs)
    return field_bytes(100, msg)


def v1_layer(name: str, type_enum: int, blobs: list[bytes]) -> bytes:
    """NetParameter.layers (field 2) holding V1LayerParameter(name=4, type=5 enum, blobs=6)."""
    msg = field_bytes(4, name.encode()) + field_varint(5, type_enum)
    msg += b"".join(field_bytes(6, b) for b in blobs)
    return field_bytes(2, msg)


# --- tests -------------------------------------------------------------------------------------------------
def test_known_small_model(tmp_path):
    w = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1) - 2.5
    b = np.array([0.5, -1.0], np.float32)
    fc = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    net = field_bytes(1, b"tiny")  # NetParameter.name
    net += layer("data", "Input", [])
    net += layer("conv/1x1", "Convolution", [blob(w), blob(b, packed=False)])
    net += layer("relu", "ReLU", [])
    net += layer("fc", "InnerProduct", [blob(fc, legacy_shape=True), blob(np.ones(3), legacy_shape=True)])
    p = tmp_path / "tiny.caffemodel"
    p.write_bytes(net)
    layers = read_caffemodel(p)
    assert [(x.name, x.type, len(x.blobs)) for x in layers] == [
        ("data", "Input", 0), ("conv/1x1", "Convolution", 2), ("relu", "ReLU", 0), ("fc", "InnerProduct", 2)]
    arrays = caffemodel_to_arrays(layers)
    assert list(arrays) == ["conv/1x1/weight", "conv/1x1/bias", "fc/weight", "fc/bias"]
    np.testing.assert_array_equal(arrays["conv/1x1/weight"], w)
    np.testing.assert_array_equal(arrays["conv/1x1/bias"], b)
    assert arrays["fc/weight"].shape == (3, 2)  # legacy (1, 1, 3, 2) -> (out, in)
    np.testing.assert_array_equal(arrays["fc/weight"], fc)
    assert arrays["fc/bias"].shape == (3,) and arrays["fc/bias"].dtype == np.float32


def test_legacy_v1_layers_and_aux_dropping(tmp_path):
    fc = np.full((4, 2), 0.25, np.float32)
    net = v1_layer("loss1/fc", 14, [blob(fc, legacy_shape=True), blob(np.zeros(4), legacy_shape=True)])
    net += v1_layer("conv", 4, [blob(np.ones((1, 1, 3, 3)), legacy_shape=True)])
    p = tmp_path / "v1.caffemodel"
    p.write_bytes(net)
    layers = read_caffemodel(p)
    assert [(x.name, x.type) for x in layers] == [("loss1/fc", "InnerProduct"), ("conv", "Convolution")]
    assert list(caffemodel_to_arrays(layers)) == ["conv/weight"]  # aux dropped, no bias blob
    kept = caffemodel_to_arrays(layers, keep_aux=True)
    assert kept["loss1/fc/weight"].shape == (4, 2) and kept["conv/weight"].shape == (1, 1, 3, 3)


def test_bad_files(tmp_path):
    good = layer("conv", "Convolution", [blob(np.ones((2, 1, 1, 1)))])
    trunc = tmp_path / "trunc.caffemodel"
    trunc.write_bytes(good[:-5])
    with pytest.raises(CaffeModelError, match="trunc.caffemodel: not a valid Caffe NetParameter"):
        read_caffemodel(trunc)
    text = tmp_path / "deploy.prototxt"
    text.write_text('name: "GoogleNet"\nlayer {\n  name: "data"\n}\n')
    with pytest.raises(CaffeModelError, match="deploy.prototxt"):
        read_caffemodel(text)
    bad_shape = tmp_path / "shape.caffemodel"
    msg = field_bytes(7, field_bytes(1, varint(3))) + field_bytes(5, np.ones(2, "<f4").tobytes())
    bad_shape.write_bytes(layer("x", "Convolution", [msg]))
    with pytest.raises(CaffeModelError, match=r"shape \(3,\) does not match its 2 values"):
        read_caffemodel(bad_shape)
    with pytest.raises(CaffeModelError, match="not found"):
        read_caffemodel(tmp_path / "absent.caffemodel")


def test_tool_reports_bad_input(tmp_path, capsys):
    from detector.cli import run

    (tmp_path / "x.caffemodel").write_bytes(b"\xff\xff")
    assert run(convert_main, [str(tmp_path / "x.caffemodel"), str(tmp_path / "o.npz")]) == 2
    assert "x.caffemodel: not a valid Caffe NetParameter" in capsys.readouterr().err


def test_round_trip_of_the_bvlc_arrays(bvlc_weights, tmp_path):
    """Encode the real .npz as a caffemodel (new-style layers; FC weights in the legacy 4-D form as the
    2014 file has them), convert it with the tool, and get exactly the same arrays back."""
    with np.load(bvlc_weights) as z:
        ref = {k: z[k] for k in z.files}
    names = list(dict.fromkeys(k.rpartition("/")[0] for k in ref))
    net = layer("data", "Input", [])
    for name in names:
        w, b = ref[f"{name}/weight"], ref[f"{name}/bias"]
        ltype = "InnerProduct" if w.ndim == 2 else "Convolution"
        net += layer(name, ltype, [blob(w, legacy_shape=w.ndim == 2), blob(b)])
    # a train-time model also carries an auxiliary classifier; the converter drops it by default
    net += layer("loss1/classifier", "InnerProduct", [blob(np.zeros((1000, 1024))), blob(np.zeros(1000))])
    src = tmp_path / "bvlc.caffemodel"
    src.write_bytes(net)
    out = tmp_path / "converted.npz"
    assert convert_main([str(src), str(out)]) == 0  # also loads it strictly into GoogLeNet
    with np.load(out) as z:
        got = {k: z[k] for k in z.files}
    assert list(got) == list(ref)
    for k in ref:
        assert got[k].dtype == np.float32 and got[k].shape == ref[k].shape, k
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
