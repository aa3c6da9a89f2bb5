"""Read Caffe ``.caffemodel`` files (binary ``NetParameter`` protobuf) without Caffe or protobuf.

Only the wire format is parsed (varints and length-delimited fields), with the field numbers of
``caffe.proto`` (BVLC Caffe):

* ``NetParameter``: ``layer`` = 100 (``LayerParameter``), legacy ``layers`` = 2 (``V1LayerParameter``);
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7;
* ``V1LayerParameter``: ``name`` = 4, ``type`` = 5 (enum, ``CONVOLUTION`` = 4, ``INNER_PRODUCT`` = 14),
  ``blobs`` = 6, ``layer`` = 1 (an even older ``V0LayerParameter``: ``name`` = 1, ``type`` = 2, ``blobs`` = 50);
* ``BlobProto``: ``data`` = 5 (float, packed or not), ``double_data`` = 8, ``shape`` = 7 (``BlobShape``:
  ``dim`` = 1, int64, packed or not), legacy ``num``/``channels``/``height``/``width`` = 1..4.

:func:`caffemodel_to_arrays` turns the layers into the ``<layer name>/weight`` / ``<layer name>/bias``
float32 arrays of the shared ``bvlc_googlenet.npz`` (conv weights ``(out, in, kh, kw)``, inner-product
weights ``(out, in)``, biases ``(out,)``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CaffeModelError", "CaffeLayer", "read_caffemodel", "caffemodel_to_arrays"]

log = logging.getLogger(__name__)

_V1_INNER_PRODUCT = 14
_V1_TYPES = {4: "Convolution", 14: "InnerProduct"}


class CaffeModelError(ValueError):
    """A file that is not a well-formed Caffe NetParameter (names the file and what is wrong)."""


@dataclass(frozen=True)
class CaffeLayer:
    """One layer with parameters: ``blobs`` as float32 arrays in Caffe order (weight, bias)."""

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeModelError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeModelError("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """Yield ``(field number, wire type, value)``: int for varints, memoryview for the rest."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CaffeModelError(f"invalid field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CaffeModelError(f"unsupported wire type {wire} (field {field}) at byte {pos}")
        if pos > n:
            raise CaffeModelError(f"field {field} runs past the end of its message (truncated file?)")
        yield field, wire, value


def _packed_varints(value, wire: int) -> list[int]:
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _blob(buf: memoryview) -> np.ndarray:
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    shape: list[int] | None = None
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    has_legacy = False
    for field, wire, value in _fields(buf):
        if field == 5:  # data: packed (wire 2) or one fixed32 per field (wire 5)
            floats.append(np.frombuffer(value, "<f4"))
        elif field == 8:  # double_data
            doubles.append(np.frombuffer(value, "<f8"))
        elif field == 7 and wire == 2:  # BlobShape
            shape = []
            for f2, w2, v2 in _fields(value):
                if f2 == 1:
                    shape.extend(_packed_varints(v2, w2))
        elif field in legacy and wire == 0:
            legacy[field] = value
            has_legacy = True
    if floats and doubles:
        raise CaffeModelError("blob has both float and double data")
    data = np.concatenate(floats or doubles or [np.zeros(0, np.float32)]).astype(np.float32)
    if shape is None:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]] if has_legacy else [data.size]
    if int(np.prod(shape)) != data.size:
        raise CaffeModelError(f"blob shape {tuple(shape)} does not match its {data.size} values")
    return data.reshape(shape)


def _layer(buf: memoryview, legacy: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if legacy else (1, 2, 7)
    name, ltype, blobs = "", "", []
    for field, wire, value in _fields(buf):
        if field == name_f and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif field == type_f:
            ltype = _V1_TYPES.get(value, f"V1:{value}") if legacy and wire == 0 else \
                bytes(value).decode("utf-8", "replace")
        elif field == blobs_f and wire == 2:
            blobs.append(_blob(value))
        elif legacy and field == 1 and wire == 2:  # V0LayerParameter inside a V1 layer
            v0 = _v0_layer(value)
            name, ltype, blobs = name or v0.name, ltype or v0.type, blobs or list(v0.blobs)
    return CaffeLayer(name, ltype, tuple(blobs))


def _v0_layer(buf: memoryview) -> CaffeLayer:
    name, ltype, blobs = "", "", []
    for field, wire, value in _fields(buf):
        if field == 1 and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 2 and wire == 2:
            ltype = {"conv": "Convolution", "innerproduct": "InnerProduct"}.get(
                bytes(value).decode("utf-8", "replace"), bytes(value).decode("utf-8", "replace"))
        elif field == 50 and wire == 2:
            blobs.append(_blob(value))
    return CaffeLayer(name, ltype, tuple(blobs))


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    """All layers of a ``.caffemodel`` in file order (layers without blobs included, with ``blobs=()``)."""
    p = Path(path)
    if not p.is_file():
        raise CaffeModelError(f"{p}: file not found")
    buf = memoryview(p.read_bytes())
    layers: list[CaffeLayer] = []
    try:
        for field, wire, value in _fields(buf):
            if field == 100 and wire == 2:
                layers.append(_layer(value, legacy=False))
            elif field == 2 and wire == 2:
                layers.append(_layer(value, legacy=True))
    except CaffeModelError as e:
        raise CaffeModelError(f"{p}: not a valid Caffe NetParameter ({e})") from None
    if not any(layer.blobs for layer in layers):
        raise CaffeModelError(f"{p}: no layers with weights found (expected a binary .caffemodel, "
                              f"not a .prototxt or another file)")
    return layers


def caffemodel_to_arrays(layers: list[CaffeLayer], keep_aux: bool = False) -> dict[str, np.ndarray]:
    """``{"<layer>/weight": ..., "<layer>/bias": ...}`` float32, in file order.

    Inner-product weights stored in the legacy 4-D form ``(1, 1, out, in)`` become ``(out, in)``; biases
    become 1-D. The auxiliary classifiers ``loss1/*`` and ``loss2/*`` of a training-time model are dropped
    unless ``keep_aux`` (the shared ``bvlc_googlenet.npz`` has none).
    """
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        if not keep_aux and layer.name.startswith(("loss1/", "loss2/")):
            log.info("dropping auxiliary layer %s", layer.name)
            continue
        if len(layer.blobs) > 2:
            raise CaffeModelError(f"layer {layer.name!r} ({layer.type}) has {len(layer.blobs)} blobs; only "
                                  "weight + bias layers (convolution, inner product) are supported")
        weight = layer.blobs[0]
        if layer.type == "InnerProduct" and weight.ndim == 4 and weight.shape[:2] == (1, 1):
            weight = weight.reshape(weight.shape[2:])
        if f"{layer.name}/weight" in out:
            raise CaffeModelError(f"duplicate layer name {layer.name!r}")
        out[f"{layer.name}/weight"] = np.ascontiguousarray(weight, np.float32)
        if len(layer.blobs) == 2:
            out[f"{layer.name}/bias"] = np.ascontiguousarray(layer.blobs[1].reshape(-1), np.float32)
    return out
