"""``torch_int8``: region classifiers statically quantised to int8 by PyTorch (FX graph mode, oneDNN).

Why a second int8 backend beside ONNX Runtime's (:mod:`detector.backends`): on the earlier sessions' machine
(AMD EPYC with AVX512-VNNI) oneDNN's int8 convolutions run GoogLeNet's own layers at ~400 GMAC/s, about 90% of
what they reach on large regular shapes, where ONNX Runtime's int8 classifier as a whole reaches ~60% of its own
ceiling (README "Speed": the ceiling rows, the profile and the paired comparison of the two backends); on an
AVX2-only EPYC without VNNI both are about half as fast, torch_int8 still ahead (98.8 vs 86.7 regions/s, run F).
Same recipe as ``onnx_int8``'s default (:data:`RECIPE`): the trunk
int8 (convolutions with their ReLUs, max pooling, concatenations), weights per output channel (symmetric
int8; 7-bit on CPUs without VNNI, ``weight_bits``, as ``onnx_int8``: :data:`detector.backends.INT8_RECIPE`),
activations per tensor (uint8, min/max over real warped calibration regions); the global average pool, the final
linear layer and the head (softmax, ImageNet->DET mapping) stay fp32.

The LRNs: FX leaves GoogLeNet's LRNs in fp32 (dequantise -> LRN -> quantise). :func:`quantize_net` then
replaces each such triple by a :class:`QuantizedLRN`, the fused uint8 kernel of :mod:`detector.lrn_kernels`
reading the quantised input and writing the quantised output with the scale the graph chose for it, the same
as ``onnx_int8`` with ``model.onnx_lrn=fused`` does between its ONNX Runtime segments.

Calibration (real warped Selective Search regions, :class:`~detector.backends.CalibrationSet`) runs
256 regions through the fp32 network with observers, ~10 s. The activation ranges it finds are cached in
``cache_dir`` under a key of the member's weights, the calibration set's key, the recipe, torch's version and
:data:`QUANT_VERSION`, so later starts skip it (the weights are quantised again, in well under a second).

PyTorch marks ``torch.ao.quantization`` as deprecated in favour of torchao; it is present and working in the
torch releases setup.py admits (<= 2.14.1), and :func:`require_torch_int8` says so clearly if it is not.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import cpu
from .classifier import RegionClassifier
from .cli import UserError

__all__ = ["QuantizedLRN", "QuantizedClassifier", "quantize_net", "quantize_member", "torch_int8_members", "convert_members_int8", "RECIPE", "QUANT_VERSION", "ENGINE"]

log = logging.getLogger(__name__)

QUANT_VERSION = 1  # part of the cache key: raise when the quantised model is made differently
ENGINE = "onednn"  # torch.backends.quantized.engine; on this CPU as fast as "x86" and without reduce_range
RECIPE = {"activations": "uint8 per tensor, min/max", "weights": "int8 per channel, symmetric",
          "fp32": ["avgpool", "classifier", "head"], "lrn": "fused uint8 kernel"}


def require_torch_int8() -> None:
    """A clear error when this torch cannot quantise here (no ``torch.ao.quantization``, no oneDNN engine)."""
    try:
        import torch.ao.quantization.quantize_fx  # noqa: F401
    except ImportError as e:
        raise UserError(f"model.backend=torch_int8 needs torch.ao.quantization (torch <= 2.14): {e}")
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise UserError(f"model.backend=torch_int8 needs torch's '{ENGINE}' quantized engine; this torch has "
                        f"{torch.backends.quantized.supported_engines}")
    try:
        from . import lrn_kernels  # noqa: F401
    except ImportError as e:
        raise UserError(f"model.backend=torch_int8 needs numba for its LRN kernel (a dependency: pip install -e .): {e}")


def _uint8_nhwc(q: torch.Tensor) -> np.ndarray:
    """The values of the channels-last quint8 tensor ``q`` ``[N, C, H, W]`` as a uint8 ``[N, H, W, C]`` numpy
    array sharing its memory (``int_repr()`` would copy: 1.3 ms for norm2's input at batch 16)."""
    u8 = torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
    return u8.permute(0, 2, 3, 1).numpy()


class QuantizedLRN(nn.Module):
    """GoogLeNet's LRN on a quantised ``quint8`` tensor ``[N, C, H, W]`` (channels-last memory, as the
    convolutions before it leave it): the fused uint8 kernel, output quantised with ``scale`` /
    ``zero_point`` (the graph's own for the LRN's output). The kernel reads the input's memory and writes
    into an output tensor kept per batch shape, so batches after the first allocate and copy nothing; the
    returned tensor is valid until the next call with that shape (the next layer reads it at once)."""

    def __init__(self, lrn: nn.LocalResponseNorm, scale: float, zero_point: int) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k
        self.scale, self.zero_point = float(scale), int(zero_point)
        self._out: dict[torch.Size, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .lrn_kernels import lrn_nhwc_u8

        if x.dtype != torch.quint8 or x.dim() != 4:
            raise TypeError(f"QuantizedLRN takes a 4-D quint8 tensor, not {x.dtype} {tuple(x.shape)}")
        if not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        out = self._out.get(x.shape)
        if out is None:
            out = self._out[x.shape] = torch._empty_affine_quantized(
                x.shape, scale=self.scale, zero_point=self.zero_point, dtype=torch.quint8,
                memory_format=torch.channels_last)
        lrn_nhwc_u8(_uint8_nhwc(x), self.size, self.alpha, self.beta, self.k, x.q_scale(), x.q_zero_point(),
                    self.scale, self.zero_point, threads=torch.get_num_threads(), out=_uint8_nhwc(out))
        return out

    def __getstate__(self) -> dict:  # pickled (image workers) without the kept arrays
        state = self.__dict__.copy()
        state["_out"] = {}
        return state

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, scale={self.scale}, " \
               f"zero_point={self.zero_point}"


def _qconfig_mapping(weight_bits: int = 8):
    """``weight_bits`` 7: observed range [-64, 63], so the weights are within +-64 (torch rounds the largest to
    64) and oneDNN's 16-bit pair sums on CPUs without VNNI cannot saturate (255 * 64 * 2 = 32,640; the reasoning
    and the measured effect: :data:`detector.backends.INT8_RECIPE`)."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, not {weight_bits!r}")
    wrange = {} if weight_bits == 8 else {"quant_min": -64, "quant_max": 63}
    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                                **wrange))
    mapping = QConfigMapping().set_global(qconfig)
    for name in RECIPE["fp32"]:
        mapping.set_module_name(name, None)
    return mapping


@contextlib.contextmanager
def _without_fx_stack_traces():
    """FX's quantisation tracer records and symbolises a Python stack trace for every node it traces (about 260
    in GoogLeNet), for error messages only. Without them preparing a member took 1.6-1.8 s instead of 3.1-3.6 s
    here (two runs each, alternating), with the same outputs; this was most of the start-up of a
    ``tools/detect.py --set model.backend=torch_int8`` command. Older torch without the switch: unchanged."""
    try:
        import torch.fx.config as fx_config
    except ImportError:
        fx_config = None
    if fx_config is None or not hasattr(fx_config, "do_not_emit_stack_traces"):
        yield
        return
    before = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = before


def _prepare(net: nn.Module, example: torch.Tensor, weight_bits: int = 8) -> tuple[torch.fx.GraphModule, int]:
    """``net`` (a copy, torch's own LRN modules back) prepared for calibration, and its number of LRNs."""
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    from .classifier import ChannelLRN, plain_lrn
    from .fast_eager import plain_eager

    torch.backends.quantized.engine = ENGINE
    # torch's own LRN modules (FX keeps them as leaves, in fp32), max poolings and convolutions
    net = plain_eager(plain_lrn(copy.deepcopy(net).eval()))
    lrns = sum(isinstance(m, nn.LocalResponseNorm) for m in net.modules())
    custom = PrepareCustomConfig().set_non_traceable_module_classes([ChannelLRN])
    with warnings.catch_warnings(), _without_fx_stack_traces():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices, once per call
        return prepare_fx(net, _qconfig_mapping(weight_bits), example_inputs=(example,),
                          prepare_custom_config=custom), lrns


def _observer_state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in prepared.state_dict().items() if "activation_post_process" in k}


def _fuse_lrns(gm: torch.fx.GraphModule) -> int:
    """Replace each ``dequantize -> LRN -> quantize_per_tensor`` of the converted graph by a
    :class:`QuantizedLRN` (in place); returns how many. Anything else around an LRN is an error."""
    n = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.LocalResponseNorm):
            continue
        deq, users = node.args[0], list(node.users)
        if not (deq.op == "call_method" and deq.target == "dequantize" and len(users) == 1
                and users[0].target == torch.quantize_per_tensor):
            raise RuntimeError(f"torch_int8: unexpected graph around LRN {node.target}: {deq.format_node()}, "
                               f"{[u.format_node() for u in users]}")
        quant = users[0]
        scale, zero = (getattr(gm, a.target) if isinstance(a, torch.fx.Node) else a for a in quant.args[1:3])
        name = f"{node.target.replace('.', '_')}_int8"
        gm.add_submodule(name, QuantizedLRN(gm.get_submodule(node.target), float(scale), int(zero)))
        with gm.graph.inserting_after(quant):
            fused = gm.graph.call_module(name, (deq.args[0],))
        quant.replace_all_uses_with(fused)
        for dead in (quant, node, deq):
            if not dead.users:
                gm.graph.erase_node(dead)
        n += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return n


def quantize_net(net: nn.Module, calibration: Sequence[np.ndarray] | None = None,
                 observers: dict[str, torch.Tensor] | None = None,
                 weight_bits: int = 8) -> tuple[torch.fx.GraphModule, dict]:
    """A quantised copy of the float network ``net`` (:data:`RECIPE`; its LRNs as :class:`QuantizedLRN`) and
    the activation ranges it used (a state dict, for the cache). The ranges come from ``observers`` when given
    (an earlier result of this function), else from running ``net`` on the ``calibration`` batches
    (``[n, C, H, W]`` float32 arrays, e.g. real warped regions). ``weight_bits``: 8, or 7 (:func:`_qconfig_mapping`)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    require_torch_int8()
    shape = tuple(calibration[0].shape[1:]) if calibration else (3, 224, 224)
    prepared, lrns = _prepare(net, torch.zeros(1, *shape), weight_bits)
    if observers is not None:
        if set(_observer_state(prepared)) != set(observers):  # (per-channel observers are resized on loading)
            raise ValueError("cached int8 activation ranges do not fit this network")
        prepared.load_state_dict(observers, strict=False)
    else:
        if not calibration:
            raise UserError("torch_int8 needs calibration regions (real warped regions)")
        with torch.inference_mode():
            for b in calibration:
                prepared(torch.from_numpy(np.ascontiguousarray(b, np.float32)))
        observers = _observer_state(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    found = _fuse_lrns(q)
    if found != lrns:
        raise RuntimeError(f"torch_int8: fused {found} LRNs of the network's {lrns}")
    return q, observers


class QuantizedClassifier(RegionClassifier):
    """A :class:`~detector.classifier.RegionClassifier` with a quantised network. Pickled through plain bytes:
    multiprocessing's pickler (image workers, :func:`detector.pipeline.detect_in_workers`) would hand torch
    tensors over as shared-memory file descriptors, which fails for the quantised weights ("bad value(s) in
    fds_to_keep"); a plain pickle copies them."""

    def __reduce__(self):
        return _unpickle_classifier, (pickle.dumps(self.__dict__),)


def _quiet_deprecation() -> None:
    """The quantised graph calls torch.quantize_per_tensor every batch, and torch 2.14 warns each process that
    these functions are deprecated (they are in every torch setup.py admits; :func:`torch_int8_members` logs
    it once instead)."""
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                            category=UserWarning)


def _unpickle_classifier(blob: bytes):
    _quiet_deprecation()  # in an image worker: this process's own warnings filter
    torch.backends.quantized.engine = ENGINE  # the weights are packed again for the engine current while unpickling
    obj = QuantizedClassifier.__new__(QuantizedClassifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "TypedStorage is deprecated", from torch's own unpickling of packed weights
        obj.__dict__.update(pickle.loads(blob))
    return obj


def quantize_member(member, calibration: Sequence[np.ndarray] | None = None,
                    observers: dict[str, torch.Tensor] | None = None, weight_bits: int = 8):
    """:func:`quantize_net` for the :class:`~detector.classifier.RegionClassifier` ``member``: a new region
    classifier with the quantised network and ``member``'s head, classes and preprocessing; and the ranges."""
    q, observers = quantize_net(member.net, calibration, observers, weight_bits)
    out = QuantizedClassifier(q, member.classes, member.class_names, member.preprocess, member.head,
                              f"{member.source} [torch_int8, {weight_bits}-bit weights]")  # member's head, shared
    return out, observers


def _cache_key(member, calibration_key: str, weight_bits: int = 8) -> str:
    from .backends import state_digest

    recipe = RECIPE if weight_bits == 8 else {**RECIPE, "weight_bits": weight_bits}  # 8: the keys of before
    return hashlib.sha256(json.dumps({"weights": state_digest(member), "calibration": calibration_key,
                                      "recipe": recipe, "engine": ENGINE, "torch": torch.__version__,
                                      "version": QUANT_VERSION}, sort_keys=True).encode()).hexdigest()[:16]


def torch_int8_members(members: Sequence, calibration, cache_dir: Path | None, weight_bits: int = 0) -> list:
    """``members`` quantised by :func:`quantize_member` with ``weight_bits``-bit weights (0: this CPU's choice,
    :func:`detector.backends.int8_weight_bits`), calibrated on
    ``calibration`` (a :class:`~detector.backends.CalibrationSet`, computed only when no cached ranges fit, or a
    list of batches), with the activation ranges cached in ``cache_dir`` (None: no cache)."""
    from .backends import CalibrationSet, hash_calibration, int8_weight_bits

    require_torch_int8()
    weight_bits = int8_weight_bits(weight_bits)
    _quiet_deprecation()
    if cpu.cpu_has_vnni() is False and weight_bits == 8:
        log.warning("torch_int8: this CPU has no VNNI instructions; oneDNN then multiplies uint8 by int8 with "
                    "16-bit intermediate sums that can saturate with 8-bit weights (oneDNN's 'int8 computation' "
                    "notes); model.int8_weight_bits=0 (the default) chooses 7 bits on such CPUs")
    log.info("torch_int8: torch.ao.quantization is deprecated upstream (torchao replaces it); torch %s has it",
             torch.__version__)
    h = hashlib.sha256()
    hash_calibration(h, calibration or [])
    cal_key = h.hexdigest()
    out = []
    for m in members:
        path = cache_dir / f"{_cache_key(m, cal_key, weight_bits)}_ranges.pt" if cache_dir is not None else None
        if path is not None and path.is_file():
            try:
                observers = torch.load(path, weights_only=True)
                q, _ = quantize_member(m, observers=observers, weight_bits=weight_bits)
                log.info("torch_int8: %s with cached activation ranges %s", m.source, path)
                out.append(q)
                continue
            except Exception as e:  # noqa: BLE001 - a damaged, truncated or foreign file: calibrate again
                log.warning("torch_int8: ignoring cached ranges %s (%s); calibrating again", path, e)
        regions = calibration.regions() if isinstance(calibration, CalibrationSet) else calibration
        log.info("torch_int8: calibrating %s on %d regions", m.source, sum(len(b) for b in regions or []))
        q, observers = quantize_member(m, regions, weight_bits=weight_bits)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(observers, tmp)
            tmp.replace(path)
        out.append(q)
    return out


def convert_members_int8(members: Sequence, warp_cfg=None, lrn_sums: str = "fp32", calibration: str = "minmax",
                         images: Sequence[np.ndarray] | None = None, cache_dir: Path | None = None,
                         weight_bits: int = 0) -> list:
    """``members`` for ``model.backend=torch_int8``, calibrated on the Selective Search regions of ``images``
    (default: scikit-image's photos; :class:`~detector.backends.CalibrationSet`), ranges cached in ``cache_dir``
    (default ``<user cache>/googlenet_rcnn/torch_int8``). Only ``onnx_int8``'s default recipe exists here:
    ``model.int8_lrn_sums`` and ``model.int8_calibration`` must keep their defaults. ``weight_bits``
    (``model.int8_weight_bits``): 7 or 8, 0 for this CPU's choice (:func:`detector.backends.int8_weight_bits`)."""
    from .backends import CalibrationSet, default_cache_dir
    from .config import WarpConfig

    if (lrn_sums, calibration) != ("fp32", "minmax"):
        raise UserError(f"model.backend=torch_int8 has one recipe (LRN sums fp32, min/max ranges); "
                        f"model.int8_lrn_sums={lrn_sums!r} / model.int8_calibration={calibration!r} are onnx_int8's")
    warp_cfg = warp_cfg or WarpConfig()
    cal = CalibrationSet(members[0].preprocess, warp_cfg, images)
    return torch_int8_members(members, cal, cache_dir or default_cache_dir().parent / "torch_int8", weight_bits)
