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
