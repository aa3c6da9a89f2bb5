"""Fast region-classification backends beside torch eager fp32 (issue: speed on a CPU).

* ``onnx``: the whole region classifier (GoogLeNet + its K+1 softmax or embedded ImageNet->DET head)
  exported to ONNX and run by ONNX Runtime in fp32. The export is checked: its probabilities must match
  torch's on real inputs (max abs difference <= ``EXPORT_ATOL``) or the export is refused.
* ``onnx_int8``: the same graph statically quantised to int8 (QDQ format, per-channel weights, the whole trunk;
  the head stays fp32) by ONNX Runtime, calibrated on real warped regions (each activation's min/max over
  the calibration set; :data:`INT8_RECIPE`).

* ``mnn``: the ``onnx`` backend's fp32 graph with its last segment (after the second LRN: inception 3a to the
  head, ~75% of the time) run by MNN (Alibaba's inference engine, ``pip install .[mnn]``) instead of ONNX
  Runtime: ~10% more regions/s on an AVX2 CPU, the same probabilities to ~1e-5 (:class:`MnnSegment`).

All are optional (``pip install .[onnx]``, ``.[mnn]``); without them a clear error says how to install them.
Exported models are cached in ``cache_dir`` keyed by the member's weights digest, so a second run starts at
once; the key is stored next to the model (caches are honest: a changed source rebuilds).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from . import cpu
from .cli import UserError
from .config import INT8_CALIBRATIONS, INT8_LRN_SUMS, ONNX_LRN_MODES as LRN_MODES
from .cpu import bf16_supported  # noqa: F401 - re-exported (was defined here)

__all__ = ["OrtMember", "export_onnx", "quantize_int8", "onnx_members", "state_digest", "bf16_supported", "int8_recipe",
           "int8_weight_bits", "CalibrationSet", "session_options", "lrn_specs", "split_at_lrns", "open_segments", "run_lrn", "LRN_MODES",
           "EXPORT_ATOL", "hash_calibration", "MnnSegment"]

log = logging.getLogger(__name__)

EXPORT_ATOL = 1e-4
# Part of the cache keys: bump when the export or the int8 recipe changes, so stale graphs are rebuilt.
# 2: LRN bands as constants; 3: every export uses ChannelLRN (not torch's LRN ops); 4: ChannelLRN's NHWC form
EXPORT_VERSION = 4
# MnnSegment's cache key: raise when the conversion to MNN, or how the converted model is run, changes (so that
# the conversion check runs again). 2: loaded without MNN's weight rearrangement (MnnSegment.__init__)
MNN_VERSION = 2
CALIBRATION_VERSION = 1  # CalibrationSet.key: raise when the calibration regions are made differently
# The int8 recipe (QDQ, per-channel int8 weights, uint8 activations; the trunk quantised, its global pool and
# the head fp32). ``lrn_sums``: "fp32" (the default) keeps the LRNs' squares and channel-window sums in fp32
# (x^2 needs more than 8 bits), "int8" quantises them too (less exact; 1.7x faster with export 3, no
# consistent gain with export 4); ``calibration``: "minmax" (default) or "percentile" (each activation's ``percentile``; ORT keeps every
# calibration activation in memory for it: a 17 GiB peak for 256 regions at 224x224). Measured choices are in
# quantize_int8 and the README "Speed" section.
# ``weight_bits``: 8, or 7 on CPUs without VNNI (:func:`int8_weight_bits`). There the int8 convolutions
# (ONNX Runtime's MLAS and oneDNN alike) multiply uint8 activations by int8 weights with VPMADDUBSW, which adds
# pairs of products into a saturating 16-bit sum: 255 * 127 * 2 = 64,770 overflows 32,767, while with 7-bit
# weights (|w| <= 64) 255 * 64 * 2 = 32,640 cannot. Measured on an AVX2 AMD EPYC, 512 real regions against
# fp32: top class agreement 94.7% (onnx_int8) and 97.7% (torch_int8) with 8-bit weights, 99.4% for both with
# 7-bit weights, at the same speed (README "Speed"). On VNNI CPUs the products are summed in 32 bits and 8 bits
# are kept. Users choose with the config keys model.int8_lrn_sums, model.int8_calibration and
# model.int8_weight_bits (:func:`int8_recipe`).
INT8_RECIPE = {"lrn_sums": "fp32", "calibration": "minmax", "percentile": 99.999, "weight_bits": 8}
_RECIPE_CHOICES = {"lrn_sums": INT8_LRN_SUMS, "calibration": INT8_CALIBRATIONS, "weight_bits": (7, 8)}


def int8_weight_bits(bits: int | None = 0) -> int:
    """``bits`` (7 or 8), or for 0/None this CPU's choice: 7 without VNNI (see :data:`INT8_RECIPE`), else 8."""
    if bits in (0, None):
        return 7 if cpu.cpu_has_vnni() is False else 8
    if bits not in _RECIPE_CHOICES["weight_bits"]:
        raise UserError(f"model.int8_weight_bits must be 0 (this CPU's choice), 7 or 8, not {bits!r}")
    return int(bits)


def int8_recipe(lrn_sums: str | None = None, calibration: str | None = None, weight_bits: int | None = 0) -> dict:
    """:data:`INT8_RECIPE` with the given choices (None keeps the default; ``weight_bits`` 0/None: this CPU's,
    :func:`int8_weight_bits`); a clear error for others."""
    recipe = dict(INT8_RECIPE, weight_bits=int8_weight_bits(weight_bits))
    for key, value in (("lrn_sums", lrn_sums), ("calibration", calibration)):
        if value is None:
            continue
        if value not in _RECIPE_CHOICES[key]:
            raise UserError(f"int8 {key} must be one of {list(_RECIPE_CHOICES[key])}, not {value!r}")
        recipe[key] = value
    return recipe


def _require_ort():
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("the onnx backends need ONNX Runtime: pip install -e '.[onnx]'") from None
    import onnxruntime
    return onnxruntime


def _flush_c_stdio() -> None:
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to reach (not Linux/macOS): nothing buffered by us to move
        pass


@contextlib.contextmanager
def _native_output_to_log(what: str):
    """Send what native code prints on the process's stdout and stderr inside the block (MNN's import and
    converter print progress with printf) to this module's debug log, so that tools' own output stays clean."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    _flush_c_stdio()
    with tempfile.TemporaryFile() as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            _flush_c_stdio()  # printf's buffer (a pipe's is flushed only at exit) goes to the file, not the terminal
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace").strip()
            if text:
                log.debug("%s printed:\n%s", what, text)


def _require_mnn():
    """The ``MNN`` module (imported quietly), or a clear error saying how to install it."""
    try:
        with _native_output_to_log("import MNN"):
            import MNN
    except ImportError as e:
        raise UserError(f"model.backend=mnn needs MNN: pip install -e '.[mnn]' ({e})") from None
    return MNN


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names, shapes, bytes): the cache key of its exported graphs."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def session_options(threads: int = 0):
    """The ONNX Runtime session options every region-classifier session uses (OrtMember, the profiler):
    ``threads`` intra-op threads (0: ORT's default), all graph optimisations, no busy-waiting."""
    ort = _require_ort()
    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between batches: the pipeline warps, runs NMS and Selective Search workers
    # between ORT calls, and spinning threads took those cores (folder of 4 photos, int8: 6.9 vs
    # 7.2 s/image; the same regions/s within noise for back-to-back batches).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so




def lrn_specs(member: torch.nn.Module) -> list[dict]:
    """The LRN layers of a torch ``member`` in forward order, as the ONNX export names their nodes:
    ``{"prefix": "/net/norm1/", "size", "alpha", "beta", "k"}`` (a ChannelLRN counts once, not with its
    wrapped ``nn.LocalResponseNorm``)."""
    from .classifier import ChannelLRN

    out, wrapped = [], set()
    for name, mod in member.named_modules():
        if isinstance(mod, ChannelLRN):
            lrn = mod.lrn
            wrapped.add(f"{name}.lrn")
        elif isinstance(mod, torch.nn.LocalResponseNorm) and name not in wrapped:
            lrn = mod
        else:
            continue
        out.append({"prefix": "/" + name.replace(".", "/") + "/", "size": int(lrn.size),
                    "alpha": float(lrn.alpha), "beta": float(lrn.beta), "k": float(lrn.k)})
    return out


def split_at_lrns(model, specs: Sequence[dict]) -> tuple[list[bytes], list[dict]]:
    """Cut an exported region-classifier graph (fp32 or int8 QDQ, ONNX ``ModelProto``) around its
    channels-last LRNs (:class:`~detector.classifier.ChannelLRN` ``nhwc=True``, located by ``specs``' node-name
    prefixes): ``len(specs) + 1`` serialised segments and, per LRN, what runs between two segments.

    Segment ``i`` ends with LRN ``i``'s input ``[N, H, W, C]`` and segment ``i + 1`` starts from its output.
    In the int8 graph both cuts are uint8: the input as the graph quantised it (its QuantizeLinear after the
    LRN's transpose) and the output with the scale/zero point of the first QuantizeLinear after the LRN
    (through Transposes and MaxPools, which commute with quantisation: ONNX Runtime itself moves that
    quantisation before pool2). Each LRN dict: the spec plus ``"input"`` (the next segment's input name) and
    ``"in_q"`` / ``"out_q"`` (``(scale, zero_point)``, None in fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = {n.name: n for n in g.node}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    shapes = {v.name: v.type.tensor_type.shape
              for v in onnx.shape_inference.infer_shapes(model).graph.value_info}

    def scalar(name: str):
        if name not in inits or numpy_helper.to_array(inits[name]).size != 1:
            raise RuntimeError(f"LRN split: {name} is not a per-tensor quantisation constant")
        return numpy_helper.to_array(inits[name]).item()

    def quant(node) -> tuple[float, int]:
        return float(scalar(node.input[1])), int(scalar(node.input[2]))

    cuts, lrns = [g.input[0].name], []
    for spec in specs:
        p = spec["prefix"]
        first, last = nodes.get(p + "Transpose"), nodes.get(p + "Transpose_1")
        if first is None or last is None or first.op_type != "Transpose" or last.op_type != "Transpose":
            raise RuntimeError(f"LRN split: no channels-last LRN at {p} in this graph (an older export?); "
                               "set model.onnx_lrn=graph or clear the ONNX cache")
        t_in = first.output[0]  # the LRN input, channels-last; last.input[0] is its output
        q_in = [u for u in users.get(t_in, []) if u.op_type == "QuantizeLinear"]
        dims = [d.dim_param or d.dim_value or None for d in shapes[t_in].dim] if t_in in shapes else None
        new_in = p + "lrn_output"
        lrn = dict(spec, input=new_in, in_q=None, out_q=None)
        if q_in:  # int8 graph
            frontier, q_out = [last], None
            while frontier and q_out is None:
                for u in users.get(frontier.pop(0).output[0], []):
                    if u.op_type == "QuantizeLinear":
                        q_out = u
                        break
                    if u.op_type in ("Transpose", "MaxPool"):
                        frontier.append(u)
            if q_out is None:
                raise RuntimeError(f"LRN split: the int8 graph does not quantise the output of {p}")
            lrn["in_q"], lrn["out_q"] = quant(q_in[0]), quant(q_out)
            cuts += [q_in[0].output[0], new_in]
            g.input.append(helper.make_tensor_value_info(new_in, TensorProto.UINT8, dims))
            g.node.append(helper.make_node("DequantizeLinear", [new_in, q_out.input[1], q_out.input[2]],
                                           [new_in + "_dq"], name=p + "lrn_output_dq"))
            last.input[0] = new_in + "_dq"
        else:
            cuts += [t_in, new_in]
            g.input.append(helper.make_tensor_value_info(new_in, TensorProto.FLOAT, dims))
            last.input[0] = new_in
        lrns.append(lrn)
    cuts.append(g.output[0].name)
    segments = [_extract(model, cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2)]
    return segments, lrns


def _extract(model, inp: str, out: str) -> bytes:
    """The nodes of ``model`` computing ``out`` from ``inp`` alone (and constants), as a serialised model;
    an error if they need any other graph input (the cut would not separate the graph)."""
    from onnx import TensorProto, helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    inputs = {v.name: v for v in g.input}
    keep, stack, seen = {}, [out], set()
    while stack:
        t = stack.pop()
        if t in seen or t == inp or t in inits or not t:
            continue
        seen.add(t)
        if t not in producer:
            raise RuntimeError(f"LRN split: the segment {inp} -> {out} also needs {t}")
        n = producer[t]
        keep[id(n)] = n
        stack += list(n.input)
    order = {id(n): i for i, n in enumerate(g.node)}
    body = sorted(keep.values(), key=lambda n: order[id(n)])
    used = {i for n in body for i in n.input}
    out_type = (TensorProto.UINT8 if producer[out].op_type == "QuantizeLinear"
                else TensorProto.FLOAT)
    outputs = [o for o in g.output if o.name == out] or [helper.make_tensor_value_info(out, out_type, None)]
    seg = helper.make_graph(body, f"segment_{inp}", [inputs[inp]], outputs,
                            [inits[i] for i in sorted(used) if i in inits])
    m = helper.make_model(seg, opset_imports=model.opset_import, ir_version=model.ir_version)
    return m.SerializeToString()


class OrtMember:
    """An ONNX Runtime session standing in for a :class:`~detector.classifier.RegionClassifier`:
    same ``classes``, ``class_names``, ``preprocess``, ``source``; ``__call__(x [n,3,S,S]) -> [n, K+1]``.

    ``lrn`` (from :func:`lrn_specs`, ``model.onnx_lrn=fused``): the graph is cut around its LRNs
    (:func:`split_at_lrns`) and each LRN runs as one fused kernel (:mod:`detector.lrn_kernels`) between
    ONNX Runtime sessions, on uint8 in the int8 graph; same numbers as the whole graph to fp32 rounding.
    None or empty: the whole graph in one session. ``winograd`` (fp32, with ``lrn``): a segment that is only
    convolutions with ReLUs (GoogLeNet's conv2_reduce and conv2, between its two LRNs) runs in torch as a
    :class:`TorchConvSegment`, its 3x3 convolution by Winograd. ``trunk="mnn"`` (fp32, with ``lrn``): the last
    segment runs in MNN (:class:`MnnSegment`, its converted model cached in ``cache_dir``, default the ONNX
    file's directory)."""

    def __init__(self, onnx_path: Path, like, threads: int = 0, label: str = "onnx",
                 lrn: Sequence[dict] | None = None, winograd: bool = False, trunk: str = "ort",
                 cache_dir: Path | None = None) -> None:
        self.path, self.threads, self.lrn_spec = Path(onnx_path), threads, list(lrn or [])
        self.winograd, self.trunk = winograd, trunk
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.path.parent
        if trunk not in ("ort", "mnn") or (trunk == "mnn" and not self.lrn_spec):
            raise ValueError(f"OrtMember: trunk {trunk!r} (mnn needs the fused LRNs' cuts)")
        self._open()
        self.classes, self.class_names = like.classes, like.class_names
        self.preprocess = like.preprocess
        self.source = f"{like.source} [{label}: {onnx_path.name}{', LRN fused' if self.lrn_spec else ''}" \
                      f"{', conv2 in torch (Winograd)' if self.winograd and self.lrn_spec else ''}" \
                      f"{', inception blocks in MNN' if trunk == 'mnn' else ''}]"

    def _open(self) -> None:
        self.sessions, self.lrns = open_segments(self.path, session_options(self.threads), self.lrn_spec,
                                                 self.__dict__.get("winograd", False),
                                                 self.__dict__.get("trunk", "ort"), self.threads,
                                                 self.__dict__.get("cache_dir"))
        self._buffers: dict = {}  # run_lrn's outputs, one per LRN and batch shape, reused batch after batch
        self.input_name = self.sessions[0].get_inputs()[0].name

    # Pickled without the sessions, which are opened again from ``path`` (e.g. in an image-worker process).
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("sessions", "lrns", "_buffers")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # The Ensemble calls these on torch members; ONNX members have nothing to do.
    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # the cv2 sampler's channels-last batch made NCHW by numpy's (one-thread) copy: torch's .contiguous() runs an
        # OpenMP region whose threads then spin for milliseconds beside ONNX Runtime's (README "Speed": +4-12%)
        a = np.ascontiguousarray(x.detach().float().numpy())
        return torch.from_numpy(run_segments(self.sessions, self.lrns, a, self.threads, self._buffers,
                                             self.input_name))


def run_segments(sessions: Sequence, lrns: Sequence[dict], a: np.ndarray, threads: int = 0,
                 buffers: dict | None = None, input_name: str | None = None) -> np.ndarray:
    """The graph of :func:`open_segments` on the batch ``a``: its first session (its input ``input_name``, looked
    up when None), then each LRN (:func:`run_lrn`) and the session after it."""
    (a,) = sessions[0].run(None, {input_name or sessions[0].get_inputs()[0].name: a})
    for lrn, sess in zip(lrns, sessions[1:]):
        (a,) = sess.run(None, {lrn["input"]: run_lrn(lrn, a, threads, buffers)})
    return a


def open_segments(onnx_path: Path, options, lrn: Sequence[dict] | None = None,
                  torch_convs: bool = False, trunk: str = "ort", threads: int = 0,
                  cache_dir: Path | None = None) -> tuple[list, list[dict]]:
    """ONNX Runtime sessions (with ``options``) for the graph at ``onnx_path``: one for the whole graph, or
    with ``lrn`` specs one per segment of :func:`split_at_lrns` and the LRNs between them; with ``torch_convs``
    a segment of convolutions only is a :class:`TorchConvSegment` instead; with ``trunk="mnn"`` the last
    segment is an :class:`MnnSegment` (``threads``; converted into ``cache_dir``, default ``onnx_path``'s
    directory, and checked against ONNX Runtime on the first segments' outputs for random images)."""
    ort = _require_ort()
    if lrn:
        import onnx

        from . import lrn_kernels  # noqa: F401 - fails early, with the install hint, without numba
        segments, lrns = split_at_lrns(onnx.load(str(onnx_path)), lrn)
    else:
        segments, lrns = [str(onnx_path)], []
    out = []
    for s in segments:
        seg = TorchConvSegment.from_onnx(s) if torch_convs and isinstance(s, bytes) else None
        out.append(seg or ort.InferenceSession(s, options, providers=["CPUExecutionProvider"]))
    if trunk == "mnn":
        if not lrns:
            raise ValueError("open_segments: the MNN trunk is the segment after the last LRN: give the LRN specs")

        ref, last = out[-1], lrns[-1]

        def check() -> tuple:  # ONNX Runtime's last segment and its input for 4 random images in the network's range
            size = out[0].get_inputs()[0].shape[-1]
            x = np.random.default_rng(0).random((4, 3, size, size), np.float32) * 255 - 120
            return ref, last["input"], run_lrn(last, run_segments(out[:-1], lrns[:-1], x, threads), threads)

        out[-1] = MnnSegment.from_onnx(segments[-1], Path(cache_dir or Path(onnx_path).parent), threads, check)
    return out, lrns


class TorchConvSegment:
    """A graph segment that is only ``Transpose(NHWC -> NCHW) -> (Conv -> Relu)+ -> Transpose(NCHW -> NHWC)``,
    run in torch by :class:`~detector.googlenet.ConvReLU` modules built from its weights, with the eager fp32
    inference path (:func:`detector.fast_eager.fast_eager`: fused convolutions, Winograd for 3x3). Answers
    ONNX Runtime's ``run(None, {input: a})`` for :class:`OrtMember`. In GoogLeNet it is conv2_reduce + conv2
    between the two LRNs: 19% of the fp32 graph's time in ONNX Runtime, and Winograd does its 3x3 convolution
    ~1.6x faster (README "Speed": ONNX fp32 57.9 -> 61.2 regions/s with its output kept, the same
    probabilities to ~1e-6)."""

    def __init__(self, convs: torch.nn.Sequential, input_name: str) -> None:
        self.convs, self.input_name = convs, input_name
        self._out: dict = {}  # the last convolution's Winograd output, one per shape, reused batch after batch

    @classmethod
    def from_onnx(cls, segment: bytes) -> "TorchConvSegment | None":
        """The segment as torch modules, or None when it is anything but such a chain."""
        import onnx
        from onnx import numpy_helper

        from .fast_eager import fast_eager
        from .googlenet import ConvReLU

        g = onnx.load_from_string(segment).graph
        weights = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:  # the exporter shares equal initialisers (e.g. zero biases) through Identity nodes
            if n.op_type == "Identity" and n.input[0] in weights:
                weights[n.output[0]] = weights[n.input[0]]
        nodes = [n for n in g.node if not (n.op_type == "Identity" and n.input[0] in weights)]
        perms = [tuple(onnx.helper.get_attribute_value(a)) for n in (nodes[:1] + nodes[-1:]) for a in n.attribute
                 if n.op_type == "Transpose" and a.name == "perm"]
        body = nodes[1:-1]
        if (len(nodes) < 4 or perms != [(0, 3, 1, 2), (0, 2, 3, 1)] or len(g.input) != 1 or len(g.output) != 1
                or [n.op_type for n in body] != ["Conv", "Relu"] * (len(body) // 2)):
            return None
        mods, x = [], nodes[0].output[0]
        for conv, relu in zip(body[::2], body[1::2]):
            a = {at.name: onnx.helper.get_attribute_value(at) for at in conv.attribute}
            pads, group = list(a.get("pads", [0, 0, 0, 0])), a.get("group", 1)
            if (conv.input[0] != x or relu.input[0] != conv.output[0] or len(conv.input) != 3 or group != 1
                    or pads[:2] != pads[2:] or any(d != 1 for d in a.get("dilations", [1, 1]))
                    or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
                return None
            w, b = weights.get(conv.input[1]), weights.get(conv.input[2])
            if w is None or b is None:
                return None
            m = ConvReLU(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1, 1])),
                         padding=tuple(pads[:2]))
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(w.copy()))
                m.bias.copy_(torch.from_numpy(b.copy()))
            mods.append(m)
            x = relu.output[0]
        if nodes[-1].input[0] != x:
            return None
        seq = torch.nn.Sequential(*mods).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        return cls(fast_eager(seq, winograd=True), g.input[0].name)

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        """The segment's NHWC output for the NHWC input in ``feed``. Like :func:`run_lrn`'s kept outputs, the
        array is valid until the next call with that batch shape (the next LRN reads it at once)."""
        from .fast_eager import FastConv, inference_applies

        (a,) = feed.values()
        *first, last = self.convs
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(0, 3, 1, 2)
            for m in first:
                x = m(x)
            y = None
            if last.fast is not None and FastConv.fits_winograd(last, x) and inference_applies(x):
                shape = (x.shape[0], last.out_channels, *x.shape[2:])
                out = self._out.get(shape)
                if out is None:
                    out = self._out[shape] = torch.empty(shape, memory_format=torch.channels_last)
                y = last.fast(last, x, out=out)
            if y is None:
                y = last(x)
        return [y.permute(0, 2, 3, 1).numpy()]  # channels-last memory: the NHWC array without a copy


class MnnSegment:
    """The last graph segment of :func:`split_at_lrns` (GoogLeNet's inception blocks 3a-5b and the head, ~75% of
    the fp32 graph's time) run by MNN instead of ONNX Runtime (``model.backend=mnn``). Answers ONNX Runtime's
    ``run(None, {input: a})`` for :class:`OrtMember`.

    Why MNN for this segment only: on the AVX2 EPYC (README "Speed") MNN ran it at 10.8 ms per region at batch 4
    against ONNX Runtime's 12.8 at its best batch, while conv1 (ONNX Runtime 1.45 against 2.13) and conv2
    (torch's Winograd 2.31 against 3.41) stay where they were faster; the whole member went from 57.7 to 63.5
    regions/s (batch 8), and to 65.0 against 60.0 (paired) once loaded for MNN's largest Winograd tiles
    (``__init__``). OpenVINO 2026.4 was measured too and was no faster than ONNX Runtime on any segment.

    The ONNX segment is converted with MNN's converter, called directly (``_tools.mnnconvert``): MNN's Python
    wrapper ``MNN.tools.mnnconvert`` would send usage logs to Alibaba's servers and pip-install a logging SDK
    into whatever Python is on the PATH, so this module never imports ``MNN.tools``. The converted model is
    cached in ``cache_dir`` under a key of the segment's bytes, MNN's version and :data:`MNN_VERSION`, and is
    refused unless its outputs match ONNX Runtime's for the same segment (``check``, on conversion) within
    :data:`EXPORT_ATOL`. MNN runs it in fp32 (precision "high": no bf16/fp16 paths on any CPU), with
    ``threads`` threads (0: torch's count)."""

    def __init__(self, path: Path, input_name: str, threads: int = 0) -> None:
        mnn = _require_mnn()
        self.path, self.input_name = Path(path), input_name
        config = {"backend": "CPU", "numThread": threads or torch.get_num_threads(), "precision": "high"}
        with _native_output_to_log(f"MNN loading {self.path.name}"):
            manager = mnn.nn.create_runtime_manager((config,))
            # rearrange=False: with True, MNN prepares every convolution at load time on its global executor's
            # backend instead of ours, and its 3x3 and 5x5 convolutions then get smaller Winograd tiles (the same
            # outputs as with hint WINOGRAD_MEMORY_LEVEL 1 or 2). Prepared on our runtime when they first run, they
            # get MNN's largest tiles (level 3, its default): the segment 9.8 against 11.2 ms per region at batch
            # 8, the member 65.0 against 60.0 regions/s (AVX2 EPYC, paired; README "Speed"). The price of larger
            # tiles is rounding: probabilities within 6.7e-5 of ONNX Runtime's and torch's on real images instead
            # of 3e-6, inside EXPORT_ATOL, which the conversion check (from_onnx) enforces for this loading.
            self.module = mnn.nn.load_module_from_file(str(self.path), [], [], runtime_manager=manager,
                                                       dynamic=False, shape_mutable=True, rearrange=False)
        self._expr = mnn.expr
        self._inputs: dict = {}  # MNN input variables by batch shape (run)

    @classmethod
    def from_onnx(cls, segment: bytes, cache_dir: Path, threads: int = 0, check=None) -> "MnnSegment":
        """``segment`` (a serialised ONNX model with one input) as MNN runs it: converted on first use into
        ``cache_dir``. ``check()``, called only when converting, returns ``(reference, input_name, a)``: an ONNX
        Runtime session of the same segment and an input batch; the conversion is refused (and nothing cached)
        when MNN's output differs from the reference's by more than :data:`EXPORT_ATOL`."""
        import onnx

        mnn = _require_mnn()
        input_name = onnx.load_from_string(segment).graph.input[0].name
        key = hashlib.sha256(segment + f"|{mnn.version()}|{MNN_VERSION}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"mnn_{key}.mnn"
        if path.is_file():
            return cls(path, input_name, threads)
        with _native_output_to_log("import MNN's converter"):
            import _tools  # MNN's converter (native); see the class docstring for why not MNN.tools

        path.parent.mkdir(parents=True, exist_ok=True)
        src, tmp = path.with_suffix(".tmp.onnx"), path.with_suffix(".tmp.mnn")
        src.write_bytes(segment)
        try:
            with _native_output_to_log("MNN's converter"):
                _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(tmp),
                                   "--bizCode", "googlenet_rcnn"])
            if not tmp.is_file():
                raise RuntimeError(f"MNN could not convert the graph segment {input_name} -> output (the debug "
                                   "log has its converter's messages)")
            seg = cls(tmp, input_name, threads)
            if check is not None:
                ref, name, a = check()
                (want,) = ref.run(None, {name: a})
                (got,) = seg.run(None, {input_name: a})
                diff = float(np.abs(want - got).max()) if got.shape == want.shape else float("inf")
                if not diff <= EXPORT_ATOL:
                    raise RuntimeError(f"MNN's conversion of the graph segment from {input_name} differs from ONNX "
                                       f"Runtime by {diff:.3g} > {EXPORT_ATOL}: refused")
                log.info("converted the graph segment from %s to MNN %s (max |mnn - onnxruntime| = %.2g)",
                         input_name, path, diff)
            os.replace(tmp, path)
        finally:
            src.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
        seg.path = path
        return seg

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        """The segment's output (the probabilities ``[n, K + 1]``) for the one input in ``feed`` (``[n, H, W,
        C]`` float32, as the graph declares it; MNN is told not to reorder it)."""
        (a,) = feed.values()
        a = np.ascontiguousarray(a, np.float32)
        F = self._expr
        # one input variable per batch shape, written into: 2.2 ms for a batch of 8 against 5.1 ms for a new
        # F.const each time (on a ~90 ms batch; AVX2 EPYC)
        x = self._inputs.get(a.shape)
        if x is None:
            x = self._inputs[a.shape] = F.placeholder(list(a.shape), F.NCHW, F.float)
        x.write(a)
        (y,) = self.module.forward([x])
        return [np.array(F.convert(y, F.NCHW).read()).reshape(len(a), -1)]


def run_lrn(lrn: dict, a: np.ndarray, threads: int = 0, buffers: dict | None = None) -> np.ndarray:
    """One LRN of :func:`split_at_lrns` on the previous segment's output ``a`` (``[N, H, W, C]``, uint8 when
    the LRN has quantisation parameters, else float32). ``buffers`` (a dict the caller keeps): the output
    goes to the array kept there for this LRN and shape, so batches after the first allocate nothing; the
    result is then only valid until the next call with the same ``buffers``."""
    from .lrn_kernels import lrn_nhwc, lrn_nhwc_u8

    args = (lrn["size"], lrn["alpha"], lrn["beta"], lrn["k"])
    out = None
    if buffers is not None:
        key = (lrn["prefix"], a.shape, a.dtype.str)
        out = buffers.get(key)
        if out is None:
            out = buffers[key] = np.empty(a.shape, a.dtype)
    if lrn["in_q"] is None:
        return lrn_nhwc(a, *args, threads=threads, out=out)
    return lrn_nhwc_u8(a, *args, *lrn["in_q"], *lrn["out_q"], threads=threads, out=out)


def export_onnx(member, path: Path, size: int = 224, check_inputs: torch.Tensor | None = None) -> Path:
    """Export ``member`` (input ``[n, 3, size, size]`` -> probabilities) to ``path`` and check the outputs
    against torch on ``check_inputs`` (default: 4 random images in the network's value range)."""
    from .classifier import fast_lrn
    from .fast_eager import plain_eager

    _require_ort()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Always ChannelLRN in its NHWC form (same numbers as torch's LRN, checked below): torch's own LRN exports
    # as pad + 3-D average pooling + Pow, slow in ONNX Runtime (BCCD test split, int8: 211.7 vs 345.0
    # regions/s); the NHWC form keeps ORT's int8 graph channels-last through the LRNs (ChannelLRN's docstring).
    member = plain_eager(fast_lrn(copy.deepcopy(member).eval(), nhwc=True))  # torch's modules, not the numba path
    dummy = torch.zeros(2, 3, size, size)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # static shapes/checks, known constants
        member(dummy)  # fills ChannelLRN's band cache: the bands become constants, not a traced arange
        torch.onnx.export(member, dummy, str(tmp), input_names=["regions"], output_names=["probs"],
                          dynamic_axes={"regions": {0: "n"}, "probs": {0: "n"}}, opset_version=17,
                          dynamo=False)
    if check_inputs is None:
        g = torch.Generator().manual_seed(0)
        check_inputs = torch.rand(4, 3, size, size, generator=g) * 255 - 120
    with torch.no_grad():
        ref = member(check_inputs.float().contiguous()).numpy()
    got = OrtMember(tmp, member)(check_inputs).numpy()
    diff = float(np.abs(ref - got).max())
    if not diff <= EXPORT_ATOL:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export of {member.source} differs from torch by {diff:.3g} > {EXPORT_ATOL}")
    os.replace(tmp, path)
    log.info("exported %s to %s (max |onnx - torch| = %.2g)", member.source, path, diff)
    return path


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Iterable[np.ndarray],
                  recipe: dict | None = None) -> Path:
    """Static int8 quantisation (``recipe``, default :func:`int8_recipe`: QDQ, per-channel weights) of
    ``fp32_path``, calibrated on ``calibration``: batches of preprocessed warped regions ``[n, 3, S, S]``."""
    _require_ort()
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("int8 calibration needs at least one batch of warped regions")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"regions": b} for b in batches)

        def get_next(self):
            return next(self.it, None)

    from onnxruntime.quantization import CalibrationMethod

    recipe = recipe or int8_recipe()
    calib = {}
    if recipe["calibration"] == "percentile":
        calib = {"calibrate_method": CalibrationMethod.Percentile,
                 "extra_options": {"CalibPercentile": float(recipe["percentile"])}}
    elif recipe["calibration"] != "minmax":
        raise ValueError(f"unknown int8 calibration {recipe['calibration']!r}")
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    tmp = out_path.with_suffix(".tmp.onnx")
    # The trunk is quantised (convolutions, ReLU, max pooling, concatenations), so activations stay uint8
    # from one inception block to the next. The head -- the final linear layer, softmax and the embedded
    # ImageNet->DET mapping -- stays fp32 so probabilities keep their resolution, and so does the global
    # average pool feeding it (see _head_nodes). The LRNs' squares and window sums stay fp32 by default:
    # quantising them too was 1.7x faster with export 3 (with export 4's channels-last LRN, no consistent
    # gain) but, with min/max ranges, BCCD test mAP fell 1.0 point below fp32
    # (0.638 vs 0.648); with percentile ranges BCCD was fine (0.6505) but the 90 ILSVRC val2 images lost
    # 0.84 points (0.2763 vs 0.2847). Both beyond the 0.5-point tolerance; fp32 sums: README "Speed".
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=recipe.get("weight_bits", 8) == 7,  # ORT's reduce_range: 7-bit weights
                    nodes_to_exclude=_head_nodes(pre) + (_lrn_sum_nodes(pre) if recipe["lrn_sums"] == "fp32"
                                                         else []), **calib)
    pre.unlink(missing_ok=True)
    os.replace(tmp, out_path)
    log.info("int8 model %s calibrated on %d regions", out_path, sum(len(b) for b in batches))
    return out_path


def _head_nodes(onnx_path: Path) -> list[str]:
    """Names of the nodes int8 quantisation must leave in fp32: the trunk's global average pooling and all
    after it (flatten, the final linear layer, softmax, the embedded head's matrix products). The pooled
    1024-d feature stays fp32: an average of 8-bit values has more than 8 bits, and the classifier reads it."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [n.name for n in graph.node]
    pools = [i for i, n in enumerate(graph.node) if n.op_type in ("GlobalAveragePool", "AveragePool")]
    if not pools:
        raise ValueError(f"{onnx_path}: no global pooling found; cannot tell the trunk from the head")
    return names[pools[-1]:]


def _lrn_sum_nodes(onnx_path: Path) -> list[str]:
    """ChannelLRN's square (``Pow(x, 2)`` or ``Mul(x, x)``), the band product summing it over channels (a
    MatMul in the NHWC form, a Conv in the other) and the ``+ k`` after it, looking through any Transpose
    the optimiser moved between them: the nodes ``lrn_sums="fp32"`` keeps out of int8."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})

    def square(n) -> bool:
        if n.op_type == "Mul":
            return len(n.input) == 2 and n.input[0] == n.input[1]
        return n.op_type == "Pow" and n.input[1] in consts and consts[n.input[1]].size == 1 \
            and float(consts[n.input[1]]) == 2.0

    users: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def after(node, types):  # the users of node's output of the given types, looking through Transposes
        found = []
        for u in users.get(node.output[0], []):
            found += after(u, types) if u.op_type == "Transpose" else [u] if u.op_type in types else []
        return found

    out = []
    for n in graph.node:
        if square(n):
            out.append(n.name)
            for band in after(n, ("Conv", "MatMul")):
                out += [band.name] + [a.name for a in after(band, ("Add",))]
    return out


def onnx_members(members: Sequence, backend: str, cache_dir: Path, threads: int = 0,
                 calibration: Sequence[np.ndarray] | CalibrationSet | None = None, size: int = 224,
                 recipe: dict | None = None, lrn: str = "fused", winograd: bool = False) -> list[OrtMember]:
    """ONNX Runtime stand-ins for torch ``members`` (``backend`` "onnx", "onnx_int8" or "mnn"), exported and
    quantised on first use (with ``recipe``, default :func:`int8_recipe`) into ``cache_dir`` (keyed by each
    member's weights digest, and for int8 by the recipe and the calibration regions: a list of ``[n, 3, S, S]``
    batches, keyed by their values, or a :class:`CalibrationSet`, keyed by its ``key`` and computed only if a
    graph has to be quantised). ``lrn``: "fused" runs
    the LRNs as fused kernels between graph segments, "graph" as the graph's own operators (:class:`OrtMember`);
    the cached graphs are the same either way. ``winograd``: fp32 with fused LRNs only, :class:`OrtMember`.
    "mnn": the fp32 graph with its last segment in MNN (:class:`MnnSegment`; needs ``lrn="fused"``)."""
    if backend not in ("onnx", "onnx_int8", "mnn"):
        raise ValueError(f"not an onnx backend: {backend}")
    recipe = recipe or int8_recipe()
    check_lrn_mode(lrn, recipe if backend == "onnx_int8" else None, backend)
    out = []
    for m in members:
        digest = state_digest(m)[:16]
        fp32 = cache_dir / f"{digest}_fp32.onnx"
        key_file = cache_dir / f"{digest}.json"
        key = {"digest": digest, "source": m.source, "size": size, "export": EXPORT_VERSION}
        stale = not key_file.is_file() or json.loads(key_file.read_text()) != key
        if stale or not fp32.is_file():
            export_onnx(m, fp32, size)
            key_file.write_text(json.dumps(key))
        path = fp32
        if backend == "onnx_int8":
            if not calibration:
                raise UserError("onnx_int8 needs calibration regions (real warped regions)")
            # the quantised graph depends on the fp32 export (its key: weights, size, export version), the
            # recipe and the calibration regions: all are part of its name, so an int8 graph quantised from an
            # older export is never picked up again for another recipe
            cal = hashlib.sha256(json.dumps([key, recipe], sort_keys=True).encode())
            hash_calibration(cal, calibration)
            path = cache_dir / f"{digest}_int8_{cal.hexdigest()[:12]}.onnx"
            if stale or not path.is_file():
                regions = calibration.regions() if isinstance(calibration, CalibrationSet) else calibration
                quantize_int8(fp32, path, regions, recipe)
        out.append(OrtMember(path, m, threads, backend, lrn_specs(m) if lrn == "fused" else None,
                             winograd and backend in ("onnx", "mnn"), "mnn" if backend == "mnn" else "ort",
                             cache_dir))
    return out


def check_lrn_mode(lrn: str, recipe: dict | None = None, backend: str = "onnx") -> None:
    """A clear error for an unknown ``model.onnx_lrn``, for ``fused`` without numba, for ``fused`` with
    the int8 recipe that quantises the LRN sums (the fused kernel computes them exactly, so it would not be
    that recipe; and the recipe existed only for speed), and for ``model.backend=mnn`` without MNN or with
    ``graph`` (MNN runs the segment after the fused LRNs' last cut)."""
    if lrn not in LRN_MODES:
        raise UserError(f"model.onnx_lrn must be one of {list(LRN_MODES)}, not {lrn!r}")
    if backend == "mnn":
        _require_mnn()
        if lrn != "fused":
            raise UserError("model.backend=mnn runs the graph after the fused LRN kernels: it needs model.onnx_lrn=fused")
    if lrn != "fused":
        return
    if recipe is not None and recipe["lrn_sums"] != "fp32":
        raise UserError("model.int8_lrn_sums=int8 quantises the LRN inside the graph: it needs model.onnx_lrn=graph")
    try:
        import numba  # noqa: F401
    except ImportError:
        raise UserError("model.onnx_lrn=fused needs numba (a dependency): pip install -e . (or set model.onnx_lrn=graph)")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/googlenet_rcnn/onnx`` (default ``~/.cache/...``): exported/quantised graphs."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "googlenet_rcnn" / "onnx"


def _default_calibration_images() -> list[np.ndarray]:
    import skimage.data

    return [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]


def calibration_regions(pre, warp_cfg, images: Sequence[np.ndarray] | None = None, per_image: int = 64,
                        batch: int = 32) -> list[np.ndarray]:
    """Real warped regions for int8 calibration: Selective Search proposals (the paper's setting) of
    ``images`` (default: scikit-image's bundled photos chelsea, coffee, astronaut, rocket), warped exactly as
    at test time; ``per_image`` regions evenly spread over each image's proposal list. Deterministic."""
    from proposals.selective_search import selective_search

    from .config import SelectiveSearchConfig
    from .warp import prepare_image, warp_prepared

    if images is None:
        images = _default_calibration_images()
    regions = []
    for img in images:
        boxes = selective_search(img, SelectiveSearchConfig())
        if len(boxes) == 0:
            continue
        pick = boxes[np.linspace(0, len(boxes) - 1, min(per_image, len(boxes))).astype(int)]
        regions.append(warp_prepared(prepare_image(img, pre), pick, warp_cfg).numpy())
    allr = np.concatenate(regions)
    return [allr[i:i + batch] for i in range(0, len(allr), batch)]


class CalibrationSet:
    """The int8 calibration regions of :func:`calibration_regions`, computed only when a graph has to be
    quantised. ``key`` identifies them without running Selective Search: a digest of the images' pixels, the
    proposal, warp and preprocessing settings, the sampling, OpenCV's version and :data:`CALIBRATION_VERSION`
    (raise it when the way the regions are made changes). Before, every ``onnx_int8`` start computed the
    regions (Selective Search on four photos, ~3 s) only to look the cached graph up by their digest."""

    def __init__(self, pre, warp_cfg, images: Sequence[np.ndarray] | None = None, per_image: int = 64,
                 batch: int = 32) -> None:
        self.pre, self.warp_cfg, self.images, self.per_image, self.batch = pre, warp_cfg, images, per_image, batch
        self._regions: list[np.ndarray] | None = None

    @functools.cached_property
    def key(self) -> str:
        import dataclasses

        import cv2

        from .classifier import preprocess_key
        from .config import SelectiveSearchConfig

        h = hashlib.sha256(json.dumps(
            {"version": CALIBRATION_VERSION, "cv2": cv2.__version__, "per_image": self.per_image,
             "batch": self.batch, "warp": dataclasses.asdict(self.warp_cfg),
             "proposals": dataclasses.asdict(SelectiveSearchConfig()),
             "preprocess": preprocess_key(self.pre)},
            sort_keys=True).encode())
        for img in self.images if self.images is not None else _default_calibration_images():
            h.update(repr(img.shape).encode())
            h.update(np.ascontiguousarray(img).tobytes())
        return h.hexdigest()

    def regions(self) -> list[np.ndarray]:
        if self._regions is None:
            self._regions = calibration_regions(self.pre, self.warp_cfg, self.images, self.per_image, self.batch)
        return self._regions


def hash_calibration(h, calibration: Sequence[np.ndarray] | CalibrationSet) -> None:
    """Feed what identifies ``calibration`` to the hash ``h``: a :class:`CalibrationSet`'s key (without
    computing its regions), or the values of a list of region batches."""
    if isinstance(calibration, CalibrationSet):
        h.update(calibration.key.encode())
    else:
        for b in calibration:
            h.update(np.ascontiguousarray(b, np.float32).tobytes())


def convert_members(members: Sequence, backend: str, warp_cfg, threads: int = 0,
                    cache_dir: Path | None = None, recipe: dict | None = None, lrn: str = "fused",
                    winograd: bool = False) -> list:
    """``members`` for ``backend``: unchanged for torch backends, ONNX Runtime sessions for onnx/onnx_int8/mnn
    (int8 with ``recipe``, default :func:`int8_recipe`; LRNs run as ``lrn``; ``winograd``: :func:`onnx_members`)."""
    if backend not in ("onnx", "onnx_int8", "mnn"):
        return list(members)
    from .config import WarpConfig
    check_lrn_mode(lrn, (recipe or int8_recipe()) if backend == "onnx_int8" else None, backend)  # before calibrating
    warp_cfg = warp_cfg or WarpConfig()
    calib = CalibrationSet(members[0].preprocess, warp_cfg) if backend == "onnx_int8" else None
    return onnx_members(members, backend, cache_dir or default_cache_dir(), threads, calib, warp_cfg.size,
                        recipe, lrn, winograd)
