from pathlib import Path

import pytest

from detector.config import Config, ConfigError, config_hash, load_config


def test_defaults_match_the_method():
    cfg = load_config()
    assert cfg.detect.nms_threshold == 0.3 and cfg.detect.max_per_image == 100
    assert cfg.warp.context_pad == 16 and cfg.warp.size == 224
    assert cfg.proposals.selective_search.superpixel_scale == 2.0


def test_yaml_override_and_cli_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("detect:\n  nms_threshold: 0.4\nmodel:\n  checkpoints: [a.pt, b.pt]\n")
    cfg = load_config(p, ["detect.max_per_image=50", "proposals.selective_search.superpixel_scale=1"])
    assert cfg.detect.nms_threshold == 0.4 and cfg.detect.max_per_image == 50
    assert cfg.model.checkpoints == ["a.pt", "b.pt"]
    assert cfg.proposals.selective_search.superpixel_scale == 1.0 and isinstance(
        cfg.proposals.selective_search.superpixel_scale, float)


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("detect:\n  nms_treshold: 0.4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "detect.nms_treshold" in msg and "nms_threshold" in msg


def test_wrong_type_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("detect:\n  max_per_image: lots\n")
    with pytest.raises(ConfigError, match="max_per_image"):
        load_config(p)
    with pytest.raises(ConfigError, match="bool"):
        load_config(None, ["model.channels_last=3"])
    with pytest.raises(ConfigError):
        load_config(None, ["detect"])


def test_hash_changes_with_config():
    a, b = Config(), Config()
    assert config_hash(a) == config_hash(b)
    b.detect.nms_threshold = 0.5
    assert config_hash(a) != config_hash(b)


def test_shipped_configs_load():
    from pathlib import Path
    for p in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        load_config(p)


# Values no part of the pipeline can use, each with the words its one-line error must hold. Before these checks
# some failed deep inside a run with a traceback (warp.size=0, selective_search.mode=bogus) and others ran on
# silently: detect.max_per_image=-3 kept all but the last 3 of 283 detections, detect.nms_threshold=-0.1 kept
# one box, model.threads=-2 used every core, detect.score_threshold=.nan returned nothing.
ORDER = "train needs bg_threshold_low <= bg_threshold_high <= fg_threshold"
REFUSED = [
    ("model.threads=-2", "model.threads must be >= 0, not -2"),
    ("model.batch_size=-1", "model.batch_size must be >= 0"),
    ("model.backend=foo", "model.backend must be one of eager, bf16, onnx, onnx_int8, torch_int8, mnn; got 'foo'"),
    ("model.backbone=resnet", "model.backbone must be one of bvlc, torchvision"),
    ("model.onnx_lrn=numba", "model.onnx_lrn must be one of fused, graph"),
    ("model.int8_calibration=kl", "model.int8_calibration must be one of minmax, percentile"),
    ("model.int8_lrn_sums=int16", "model.int8_lrn_sums must be one of fp32, int8"),
    ("model.int8_weight_bits=5", "model.int8_weight_bits must be one of 0, 7, 8; got 5"),
    ("warp.size=0", "warp.size must be >= 1"),
    ("warp.context_pad=-5", "warp.context_pad must be >= 0"),
    ("warp.context_pad=112", "warp.size must be more than twice warp.context_pad"),
    ("warp.mode=squash", "warp.mode must be one of warp, square"),
    ("proposals.method=edges", "proposals.method must be one of ss, multibox, ss+multibox, whole_image"),
    ("proposals.selective_search.mode=bogus", "proposals.selective_search.mode must be one of single, fast"),
    ("proposals.selective_search.sigma=-1", "proposals.selective_search.sigma must be >= 0, not -1.0"),
    ("proposals.selective_search.superpixel_scale=0", "proposals.selective_search.superpixel_scale must be > 0"),
    ("proposals.selective_search.resize_width=-500", "proposals.selective_search.resize_width must be >= 0"),
    ("proposals.multibox.top_k=-1", "proposals.multibox.top_k must be >= 0"),
    ("proposals.multibox.nms_threshold=1.2", "proposals.multibox.nms_threshold must be in [0, 1]"),
    ("detect.nms_threshold=1.5", "detect.nms_threshold must be in [0, 1], not 1.5"),
    ("detect.nms_threshold=-0.1", "detect.nms_threshold must be in [0, 1]"),
    ("detect.max_per_image=-3", "detect.max_per_image must be >= 1"),
    ("detect.max_per_image=0", "detect.max_per_image must be >= 1"),
    ("detect.max_proposals=-1", "detect.max_proposals must be >= 0"),
    ("detect.score_threshold=.nan", "detect.score_threshold must be a finite number"),
    ("detect.score_threshold=.inf", "detect.score_threshold must be a finite number"),
    ("train.iterations=0", "train.iterations must be >= 1"),
    ("train.base_lr=0", "train.base_lr must be > 0"),
    ("train.momentum=1", "train.momentum must be in [0, 1), not 1.0"),
    ("train.ema_decay=-0.5", "train.ema_decay must be in [0, 1)"),
    ("train.fg_fraction=1.5", "train.fg_fraction must be in [0, 1]"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("train.bg_threshold_low=0.6", f"{ORDER}, got 0.6, 0.5, 0.5"),
    ("train.bg_threshold_high=0.7", f"{ORDER}, got 0, 0.7, 0.5"),
    ("multibox_train.checkpoint_every=0", "multibox_train.checkpoint_every must be >= 1"),
    ("multibox_train.num_priors=0", "multibox_train.num_priors must be >= 1"),
]


@pytest.mark.parametrize("override,words", REFUSED, ids=[o for o, _ in REFUSED])
def test_values_out_of_range_are_refused_when_the_config_is_read(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(f"<defaults> + command-line overrides: {words}"), str(e.value)


# The edges of each range, and the documented special values, are accepted.
ACCEPTED = ["detect.nms_threshold=0", "detect.nms_threshold=1", "detect.max_per_image=1", "detect.max_proposals=0",
            "detect.score_threshold=-1", "model.threads=0", "model.batch_size=0", "model.int8_weight_bits=7",
            "proposals.selective_search.resize_width=0", "proposals.selective_search.sigma=0",
            "proposals.multibox.top_k=0", "warp.size=33", "warp.context_pad=0", "train.momentum=0",
            "train.ema_decay=0", "train.checkpoint_every=0", "train.eval_every=0", "train.bg_threshold_low=0.5",
            "proposals.method=whole_image", "model.backend=torch_int8"]


@pytest.mark.parametrize("override", ACCEPTED)
def test_the_edges_of_each_range_are_accepted(override):
    key, value = override.split("=")
    section, *rest = key.split(".")
    cfg = load_config(None, [override])
    node = getattr(cfg, section)
    for name in rest:
        node = getattr(node, name)
    assert str(node) == value or float(node) == float(value)


def test_range_errors_name_the_file_and_sections_built_in_code_are_checked(tmp_path):
    from detector.config import Bound, DetectConfig, WarpConfig

    p = tmp_path / "c.yaml"
    p.write_text("warp:\n  size: 20\n  context_pad: 10\n")
    with pytest.raises(ConfigError, match=f"^{p}: warp.size must be more than twice warp.context_pad, got size=20"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"^detect.max_per_image must be >= 1, not -3$"):
        DetectConfig(max_per_image=-3)
    with pytest.raises(ConfigError, match="warp.mode"):
        WarpConfig(mode="squash")
    assert [str(b) for b in (Bound(0), Bound(0, lo_open=True), Bound(0, 1), Bound(0, 1, hi_open=True),
                             Bound(hi=5), Bound())] == [">= 0", "> 0", "in [0, 1]", "in [0, 1)", "<= 5", "a number"]


def test_every_shipped_config_passes_the_checks():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for p in configs:
        load_config(p)
