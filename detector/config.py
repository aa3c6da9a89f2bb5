"""Configuration: dataclass defaults in one place, YAML files in ``configs/`` that only override them.

``load_config(path, overrides)`` returns a :class:`Config`. An unknown key or a value of the wrong type
is a :class:`ConfigError` naming the file, the dotted key and the valid keys. Command-line overrides are
``section.key=value`` strings whose value is parsed as YAML (``detect.nms_threshold=0.4``,
``model.checkpoints=[a.pt,b.pt]``). There is no global config: tools load it once and pass the narrow
part down.

Each section belongs to one part of the pipeline; edit a section's fields only together with the code
that reads them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import yaml

__all__ = [
    "ConfigError", "Config", "SelectiveSearchConfig", "MultiBoxConfig", "ProposalConfig", "WarpConfig",
    "ModelConfig", "DetectConfig", "TrainConfig", "MultiBoxTrainConfig", "load_config", "apply_overrides",
    "config_to_dict", "config_hash", "from_dict", "Bound", "AT_LEAST_0", "AT_LEAST_1", "POSITIVE", "FRACTION",
    "BELOW_1", "SS_MODES", "PROPOSAL_METHODS", "WARP_MODES",
    "BACKBONES", "BACKENDS", "INT8_LRN_SUMS", "INT8_CALIBRATIONS", "INT8_WEIGHT_BITS", "ONNX_LRN_MODES",
]


class ConfigError(ValueError):
    """A configuration file or override that does not fit the dataclasses."""


# The values the string keys (and model.int8_weight_bits) may take. The modules that act on them import these,
# so a config is refused when it is read, naming the key, rather than deep inside a run.
SS_MODES = ("single", "fast", "quality", "opencv_fast")  # proposals/selective_search.py
PROPOSAL_METHODS = ("ss", "multibox", "ss+multibox", "whole_image")  # proposals/cache.py
WARP_MODES = ("warp", "square")  # detector/warp.py
BACKBONES = ("bvlc", "torchvision")  # detector/weights.py
# onnx*, mnn: detector/backends.py (pip install .[onnx], .[mnn]); torch_int8: detector/quantized.py (torch only)
BACKENDS = ("eager", "bf16", "onnx", "onnx_int8", "torch_int8", "mnn")
INT8_LRN_SUMS = ("fp32", "int8")  # detector/backends.py INT8_RECIPE
INT8_CALIBRATIONS = ("minmax", "percentile")
INT8_WEIGHT_BITS = (0, 7, 8)  # 0: this CPU's choice (detector/backends.py int8_weight_bits)
ONNX_LRN_MODES = ("fused", "graph")


@dataclass(frozen=True)
class Bound:
    """The interval a numeric key must lie in (``lo`` / ``hi`` None: unbounded on that side); every float key
    must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False

    def admits(self, v: float) -> bool:
        return not ((self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)))
                    or (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi))))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}" if self.hi is not None else "a number"


AT_LEAST_0 = Bound(0)
AT_LEAST_1 = Bound(1)
POSITIVE = Bound(0, lo_open=True)
FRACTION = Bound(0, 1)
BELOW_1 = Bound(0, 1, hi_open=True)


def _check_section(section) -> None:
    """Refuse a section whose keys break its ``_valid`` rules (a :class:`Bound` or a tuple of choices) or whose
    float keys are not finite; the message names the dotted key (``_name``). Called by each section's
    ``__post_init__``, so sections built in code are checked too."""
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        rule = section._valid.get(f.name)
        where = f"{section._name}.{f.name}"
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where} must be a finite number, not {v!r}")
        if isinstance(rule, tuple) and v not in rule:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, rule))}; got {v!r}")
        if isinstance(rule, Bound) and number and not rule.admits(v):
            raise ConfigError(f"{where} must be {rule}, not {v!r}")


@dataclass
class SelectiveSearchConfig:
    """Selective Search as R-CNN ran it (see proposals/selective_search.py)."""

    _name: ClassVar[str] = "proposals.selective_search"
    _valid: ClassVar[dict] = {"mode": SS_MODES, "superpixel_scale": POSITIVE, "resize_width": AT_LEAST_0,
                              "min_box_size": AT_LEAST_0, "sigma": AT_LEAST_0}

    mode: str = "fast"  # single | fast (R-CNN) | quality | opencv_fast (OpenCV's own switchToSelectiveSearchFast)
    superpixel_scale: float = 2.0  # the GoogLeNet entry: superpixels 2x -> k {100, 200} in fast mode
    resize_width: int = 500  # R-CNN resizes to width 500 before Selective Search; 0 = the image's own size
    min_box_size: int = 20  # boxes narrower or shorter than this (at resize_width) are dropped
    sigma: float = 0.8
    fallback_whole_image: bool = False  # on an OpenCV failure: whole-image box + warning instead of an error

    def __post_init__(self) -> None:
        _check_section(self)


@dataclass
class MultiBoxConfig:
    """MultiBox proposals at test time (proposals/multibox)."""

    _name: ClassVar[str] = "proposals.multibox"
    _valid: ClassVar[dict] = {"top_k": AT_LEAST_0, "nms_threshold": FRACTION, "image_size": AT_LEAST_1}

    checkpoint: Optional[str] = None
    top_k: int = 200  # the GoogLeNet entry added the top 200 MultiBox boxes
    nms_threshold: float = 0.7
    image_size: int = 224

    def __post_init__(self) -> None:
        _check_section(self)


@dataclass
class ProposalConfig:
    _name: ClassVar[str] = "proposals"
    _valid: ClassVar[dict] = {"method": PROPOSAL_METHODS}

    method: str = "ss"  # ss | multibox | ss+multibox | whole_image (the lower bound: one box, the whole image)
    selective_search: SelectiveSearchConfig = field(default_factory=SelectiveSearchConfig)
    multibox: MultiBoxConfig = field(default_factory=MultiBoxConfig)

    def __post_init__(self) -> None:
        _check_section(self)


@dataclass
class WarpConfig:
    """R-CNN region crops (detector/warp.py)."""

    _name: ClassVar[str] = "warp"
    _valid: ClassVar[dict] = {"mode": WARP_MODES, "size": AT_LEAST_1, "context_pad": AT_LEAST_0}

    mode: str = "warp"  # warp (R-CNN's default) | square
    size: int = 224
    context_pad: int = 16

    def __post_init__(self) -> None:
        _check_section(self)
        if self.size <= 2 * self.context_pad:
            raise ConfigError(f"warp.size must be more than twice warp.context_pad, got size={self.size}, "
                              f"context_pad={self.context_pad}")


@dataclass
class ModelConfig:
    """Region classifier(s)."""

    _name: ClassVar[str] = "model"
    _valid: ClassVar[dict] = {"backbone": BACKBONES, "batch_size": AT_LEAST_0, "threads": AT_LEAST_0,
                              "backend": BACKENDS,
                              "int8_lrn_sums": INT8_LRN_SUMS, "int8_calibration": INT8_CALIBRATIONS,
                              "int8_weight_bits": INT8_WEIGHT_BITS, "onnx_lrn": ONNX_LRN_MODES}

    backbone: str = "bvlc"  # bvlc (the paper's network, BVLC weights) | torchvision (BatchNorm port)
    weights: Optional[str] = None  # ImageNet weights file; None -> $GOOGLENET_WEIGHTS -> user cache dir
    checkpoints: list[str] = field(default_factory=list)  # trained classifiers; several = ensemble
    # regions per forward; 0 = the backend's own (detector/classifier.py BEST_BATCH: 8 for eager, bf16 and mnn,
    # 16 for ONNX Runtime fp32, 32 for both int8 backends, the fastest on this machine: tools/benchmark.py
    # --batch-sizes, README "Speed"); larger batches only add memory
    batch_size: int = 0
    threads: int = 0  # torch's intra-op threads; 0 = torch's default (every core)
    channels_last: bool = True
    # eager | bf16 | onnx | onnx_int8 | torch_int8 (detector/quantized.py) | mnn (onnx's fp32 graph with the
    # inception blocks in MNN: pip install -e '.[mnn]'; detector/backends.py MnnSegment)
    backend: str = "eager"
    # eager fp32 inference: GoogLeNet's LRNs by the fused numba kernel (true) or torch operators (false);
    # same numbers (detector/classifier.py ChannelLRN)
    lrn_kernel: bool = True
    # eager fp32 inference: each convolution fused with its ReLU in one oneDNN primitive and max pooling by a
    # numba kernel (true; the same numbers) or torch's own modules (false) (detector/fast_eager.py)
    eager_kernels: bool = True
    # Winograd F(4x4, 3x3) for 3x3 convolutions: fewer multiplications, fp32 rounding differs from the direct
    # convolution (probabilities by ~1e-6). eager (with eager_kernels): those on maps >= 14 pixels; onnx and mnn
    # (fp32, onnx_lrn=fused): the graph segment between the two LRNs (conv2_reduce, conv2) runs in torch with it
    # (detector/backends.py TorchConvSegment)
    winograd: bool = True
    # onnx_int8 only (detector/backends.py INT8_RECIPE; README "Speed" has the measured speed and mAP;
    # torch_int8 has the defaults' recipe only):
    # the LRNs' squares and window sums in fp32 (accurate, the default) or int8 (faster, lost up to 1 mAP point)
    int8_lrn_sums: str = "fp32"
    int8_calibration: str = "minmax"  # minmax | percentile (99.999th; a 17 GiB peak while calibrating at 224x224)
    # onnx_int8 and torch_int8: 8-bit or 7-bit weights; 0 = this CPU's choice, 7 where it has no VNNI (its int8
    # products are summed in saturating 16 bits; 7-bit weights cannot overflow them: detector/backends.py
    # INT8_RECIPE), else 8
    int8_weight_bits: int = 0
    # onnx and onnx_int8: the LRNs as one fused kernel each between graph segments (fused; needs numba, in the
    # dependencies) or as the graph's own operators (graph); same numbers (detector/backends.py OrtMember).
    # mnn needs fused
    onnx_lrn: str = "fused"

    def __post_init__(self) -> None:
        _check_section(self)


@dataclass
class DetectConfig:
    _name: ClassVar[str] = "detect"
    _valid: ClassVar[dict] = {"nms_threshold": FRACTION, "max_per_image": AT_LEAST_1, "max_proposals": AT_LEAST_0}

    nms_threshold: float = 0.3  # R-CNN per-class NMS
    score_threshold: float = 0.05
    max_per_image: int = 100  # ILSVRC: at most 100 detections per image
    # Classify only the first N proposals per image; 0 (the default) classifies all, as the paper does. N > 0 is
    # a speed knob that departs from the paper.
    # The order is the proposer's (MultiBox boxes by score, then Selective Search's by OpenCV's randomised
    # hierarchical rank), so the kept boxes are the best-ranked; README "Speed" has the measured mAP cost.
    max_proposals: int = 0

    def __post_init__(self) -> None:  # checked once here, for detect.py, detect_split.py and the Detector alike
        _check_section(self)


@dataclass
class TrainConfig:
    """Fine-tuning region classifiers (detector/training)."""

    _name: ClassVar[str] = "train"
    _valid: ClassVar[dict] = {"iterations": AT_LEAST_1, "batch_size": AT_LEAST_1, "fg_fraction": FRACTION,
                              "fg_threshold": FRACTION,
                              "bg_threshold_high": FRACTION, "bg_threshold_low": FRACTION, "base_lr": POSITIVE,
                              "momentum": BELOW_1, "weight_decay": AT_LEAST_0, "lr_step": AT_LEAST_1,
                              "lr_gamma": POSITIVE, "aux_loss_weight": AT_LEAST_0, "head_lr_mult": AT_LEAST_0,
                              "ema_decay": BELOW_1, "max_fg_per_image": AT_LEAST_0,
                              "max_bg_per_image": AT_LEAST_0, "eval_every": AT_LEAST_0,
                              "checkpoint_every": AT_LEAST_0, "seed": AT_LEAST_0, "threads": AT_LEAST_0}

    iterations: int = 2000
    batch_size: int = 128
    fg_fraction: float = 0.25
    fg_threshold: float = 0.5
    bg_threshold_high: float = 0.5
    bg_threshold_low: float = 0.0
    base_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    lr_step: int = 1000
    lr_gamma: float = 0.1
    aux_loss_weight: float = 0.3
    head_lr_mult: float = 10.0  # R-CNN's fine-tuning prototxt: the new fc8 layer learns at 10x the base lr
    hflip: bool = True
    photometric: bool = False
    ema_decay: float = 0.999  # Polyak averaging; 0 disables
    freeze_below: str = "none"  # none | inception_4e | inception_5b ... (train only layers after it)
    # CPU budget (detector/training/features.py): train from cached outputs of this frozen layer, e.g.
    # pool4 with freeze_below=inception_5a; "" = off (R-CNN: every step runs the whole network)
    feature_layer: str = ""
    max_fg_per_image: int = 0  # with feature_layer: foreground proposals kept per image (0 = all)
    max_bg_per_image: int = 0  # with feature_layer: background proposals kept per image (0 = all)
    eval_every: int = 500
    checkpoint_every: int = 100
    seed: int = 0
    num_workers: int = 1  # not used (proposals are computed by the tools' --workers processes); kept so configs
    # and checkpoints that name it still load
    threads: int = 0

    def __post_init__(self) -> None:
        _check_section(self)
        if not self.bg_threshold_low <= self.bg_threshold_high <= self.fg_threshold:  # R-CNN: 0 <= 0.5 <= 0.5
            raise ConfigError(f"train needs bg_threshold_low <= bg_threshold_high <= fg_threshold, got "
                              f"{self.bg_threshold_low:g}, {self.bg_threshold_high:g}, {self.fg_threshold:g}")


@dataclass
class MultiBoxTrainConfig:
    """Training the MultiBox proposal network (proposals/multibox/train.py)."""

    _name: ClassVar[str] = "multibox_train"
    _valid: ClassVar[dict] = {"num_priors": AT_LEAST_1, "iterations": AT_LEAST_1, "batch_size": AT_LEAST_1,
                              "base_lr": POSITIVE,
                              "momentum": BELOW_1, "weight_decay": AT_LEAST_0, "lr_step": AT_LEAST_1,
                              "lr_gamma": POSITIVE, "alpha": AT_LEAST_0, "checkpoint_every": AT_LEAST_1,
                              "seed": AT_LEAST_0, "kmeans_iterations": AT_LEAST_1}

    num_priors: int = 200  # K priors from k-means over the training boxes
    iterations: int = 3000
    batch_size: int = 16  # images per step
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    lr_step: int = 2000
    lr_gamma: float = 0.1
    alpha: float = 0.3  # location weight of the MultiBox loss (Erhan et al.)
    freeze_below: str = "inception_5a"  # train this layer and above (+ heads) on cached lower features
    hflip: bool = True
    checkpoint_every: int = 500
    seed: int = 0
    kmeans_iterations: int = 100

    def __post_init__(self) -> None:
        _check_section(self)


@dataclass
class Config:
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    multibox_train: MultiBoxTrainConfig = field(default_factory=MultiBoxTrainConfig)


# ----------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping (section {tp.__name__}), "
                              f"got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=where + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{source}: '{where}' expects {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' expects a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{source}: '{where}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: dict, source: str = "<dict>", prefix: str = ""):
    """Build dataclass ``cls`` from defaults overridden by ``data`` (strictly checked)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}'; valid keys"
                          f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], prefix + k, source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a section's own check (_check_section): say where the value came from
        if getattr(e, "source", None) is not None:  # a subsection's, already said
            raise
        err = ConfigError(f"{source}: {e}")
        err.source = source
        raise err from None


def config_to_dict(cfg) -> dict:
    """Plain-dict view of a config (or any section), for logs, checkpoints and hashes."""
    return dataclasses.asdict(cfg)


def config_hash(cfg) -> str:
    """Stable sha256 (hex) of a config section, for cache keys."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
    node[parts[-1]] = value


def apply_overrides(tree: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` strings (value parsed as YAML) onto a nested dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': value is not valid YAML ({e})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Config):
    """Defaults of ``cls``, overridden by the YAML file ``path`` (if any), then by ``overrides``."""
    tree: dict = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded
    if overrides:
        apply_overrides(tree, overrides)
        source = f"{source} + command-line overrides"
    return from_dict(cls, tree, source=source)
