"""Detector pipeline: post-processing with hand-computed answers, empty proposals, an end-to-end run
with a tiny colour classifier whose answer is known, and (with the real weights) a real photo."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from detector.classifier import Ensemble, RegionClassifier
from detector.config import DetectConfig, WarpConfig
from detector.pipeline import Detector, select_detections, whole_image_proposer

IDENTITY = SimpleNamespace(channel_order="RGB", scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class ColourNet(nn.Module):
    """Logits ``[0, red, green]`` = background 0 vs the mean red / green value of the region / 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))  # [N, 3] RGB means 0..255
        return torch.stack([torch.zeros(len(x)), m[:, 0] / 10, m[:, 1] / 10], dim=1)


def colour_ensemble(batch_size: int = 2) -> Ensemble:
    member = RegionClassifier(ColourNet(), ("red", "green"), ("red thing", "green thing"), IDENTITY)
    return Ensemble([member], batch_size=batch_size, channels_last=False)


def test_select_detections_nms_threshold_topk():
    boxes = np.array([[0, 0, 10, 10],     # 0
                      [1, 0, 11, 10],     # 1: IoU 9/11 = 0.82 with 0
                      [5, 0, 15, 10],     # 2: IoU 5/15 = 0.33 with 0 (> 0.3: suppressed), 6/14 with 1
                      [20, 20, 30, 30]],  # 3: far away
                     np.float32)
    probs = np.array([[0.1, 0.9, 0.0],
                      [0.2, 0.8, 0.0],
                      [0.3, 0.7, 0.0],
                      [0.3, 0.04, 0.66]], np.float32)
    d = select_detections(boxes, probs, nms_threshold=0.3, score_threshold=0.05, max_per_image=100)
    # class 0: box 0 (0.9) suppresses 1 and 2; box 3's 0.04 is below the threshold; class 1: box 3
    np.testing.assert_array_equal(d.labels, [0, 1])
    np.testing.assert_allclose(d.scores, [0.9, 0.66])
    np.testing.assert_array_equal(d.boxes, boxes[[0, 3]])
    # NMS never crosses classes: the same box can be reported for two classes
    probs2 = np.array([[0.0, 0.5, 0.5]], np.float32)
    d2 = select_detections(boxes[:1], probs2, 0.3, 0.05, 100)
    assert sorted(d2.labels.tolist()) == [0, 1]
    # at IoU threshold 0.9 nothing overlaps enough: 3 boxes of class 0 + box 3 of class 1; top-2 keeps the best
    d3 = select_detections(boxes, probs, nms_threshold=0.9, score_threshold=0.05, max_per_image=2)
    np.testing.assert_allclose(d3.scores, [0.9, 0.8])
    # nothing above the threshold -> empty
    assert len(select_detections(boxes, probs, 0.3, 0.95, 100)) == 0


def test_empty_proposals_give_empty_detections():
    img = np.zeros((20, 30, 3), np.uint8)
    det = Detector(lambda im, name=None: np.zeros((0, 4), np.float32), colour_ensemble(),
                   WarpConfig(size=16, context_pad=2), DetectConfig())
    d = det.detect(img)
    assert len(d) == 0 and d.boxes.shape == (0, 4)
    # proposals entirely outside the image are dropped (counted in a warning), not classified
    det2 = Detector(lambda im, name=None: np.array([[40, 40, 50, 50]], np.float32), colour_ensemble(),
                    WarpConfig(size=16, context_pad=2), DetectConfig())
    assert len(det2.detect(img)) == 0
    assert det2.last_timings.num_proposals == 0


def test_end_to_end_finds_the_red_square():
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (250, 0, 0)   # red square
    img[50:60, 2:12] = (0, 200, 0)    # small green patch
    proposals = np.array([[16, 16, 48, 48],   # the red square exactly
                          [20, 20, 52, 52],   # overlaps it (IoU 0.6) with some black: lower red score
                          [0, 0, 64, 64],     # whole image
                          [2, 50, 12, 60]],   # the green patch
                         np.float32)
    det = Detector(lambda im, name=None: proposals, colour_ensemble(batch_size=3),
                   WarpConfig(size=16, context_pad=2), DetectConfig(score_threshold=0.5))
    d = det.detect(img, "synthetic")
    red = d.boxes[d.labels == 0]
    green = d.boxes[d.labels == 1]
    np.testing.assert_array_equal(red[0], proposals[0])  # best red box = the square; its overlap suppressed
    assert not any((b == proposals[1]).all() for b in red)
    np.testing.assert_array_equal(green[0], proposals[3])
    assert det.last_timings.num_proposals == 4 and det.last_timings.total_s > 0
    assert np.all(np.diff(d.scores) <= 0)


def _fixed_proposals_detector(proposals: np.ndarray) -> Detector:
    """A Detector proposing ``proposals`` for any image, with the colour classifier (batch 2, 16x16 warps)."""
    return Detector(lambda im, name=None: proposals, colour_ensemble(batch_size=2), WarpConfig(size=16, context_pad=2),
                    DetectConfig(score_threshold=0.5))


def test_given_proposals_report_the_proposer_time(caplog):
    """Proposals computed before ``detect`` (tools/detect.py reads and proposes first): their seconds are the
    image's proposal time in ``last_timings`` and the log line, not the ~0 s of clipping them; computed in a
    worker (the overlap) they are reported as such and left out of this process's ``total_s``."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (250, 0, 0)
    proposals = np.array([[16, 16, 48, 48], [0, 0, 64, 64]], np.float32)
    det = _fixed_proposals_detector(proposals)
    with caplog.at_level(logging.INFO, logger="detector.pipeline"):
        det.detect(img, "here", proposals=proposals, proposals_s=1.25)
        here = det.last_timings
        det.detect(img, "there", proposals=proposals, proposals_s=1.25, in_worker=True)
        there = det.last_timings
    assert 1.25 <= here.proposals_s < 1.5 and here.proposals_worker_s == 0.0
    assert here.total_s == pytest.approx(here.proposals_s + here.warp_s + here.classify_s + here.postprocess_s)
    assert there.proposals_worker_s == 1.25 and there.proposals_s < 0.25 and there.total_s < here.total_s
    lines = [r.getMessage() for r in caplog.records if "proposals (" in r.getMessage()]
    assert "here: 2 proposals (1.25 s)" in lines[0] and "there: 2 proposals (1.25 s in a worker)" in lines[1]


def test_max_proposals_classifies_the_first_n():
    """``detect.max_proposals``: only the first N proposals (the proposer's best-ranked) are classified, from
    the proposer and from precomputed proposals alike; the green patch, 4th in the list, is not found with 3."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (250, 0, 0)
    img[50:60, 2:12] = (0, 200, 0)
    proposals = np.array([[16, 16, 48, 48], [20, 20, 52, 52], [0, 0, 64, 64], [2, 50, 12, 60]], np.float32)
    seen = []
    ens = colour_ensemble(batch_size=3)
    classify = ens.classify_regions
    ens.classify_regions = lambda img_, boxes, warp, **kw: seen.append(len(boxes)) or classify(img_, boxes, warp, **kw)
    warp = WarpConfig(size=16, context_pad=2)
    full = Detector(lambda im, name=None: proposals, ens, warp, DetectConfig(score_threshold=0.5)).detect(img)
    det = Detector(lambda im, name=None: proposals, ens, warp, DetectConfig(score_threshold=0.5, max_proposals=3))
    capped = det.detect(img)
    again = det.detect(img, proposals=proposals)
    assert seen == [4, 3, 3] and det.last_timings.num_proposals == 3
    assert 1 in full.labels.tolist() and 1 not in capped.labels.tolist()
    for d in (capped, again):
        np.testing.assert_array_equal(d.boxes, full.boxes[full.labels == 0])
        np.testing.assert_allclose(d.scores, full.scores[full.labels == 0])
    with pytest.raises(ValueError, match="max_proposals"):
        Detector(lambda im, name=None: proposals, ens, warp, DetectConfig(max_proposals=-1))


def test_whole_image_proposer():
    np.testing.assert_array_equal(whole_image_proposer(np.zeros((7, 9, 3), np.uint8)), [[0, 0, 9, 7]])


def test_real_photo_whole_image_is_a_cat(bvlc_weights, shared_data, monkeypatch):
    """The embedded default on skimage's chelsea (a cat), whole image as the one proposal."""
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("detector.embedded", reason="detector/embedded.py (googlenet engineer) not present")
    from detector.classifier import build_classifier
    from detector.config import ModelConfig

    monkeypatch.setenv("GOOGLENET_RCNN_DEVKIT", str(shared_data / "ilsvrc2014_devkit"))
    ens = build_classifier(ModelConfig(weights=str(bvlc_weights), batch_size=4))
    det = Detector(whole_image_proposer, ens, WarpConfig(), DetectConfig(score_threshold=0.0))
    d = det.detect(skimage_data.chelsea(), "chelsea")
    assert ens.class_names[int(d.labels[0])].startswith("domestic cat")


def test_unknown_proposal_method_is_a_config_error():
    from detector.config import ConfigError, ProposalConfig
    from detector.pipeline import make_proposer

    with pytest.raises(ConfigError, match="whole_image"):
        make_proposer(ProposalConfig(method="edgeboxes"))
    assert make_proposer(ProposalConfig(method="whole_image")) is whole_image_proposer


def test_multibox_without_its_checkpoint_is_refused_once_not_image_by_image(tmp_path, capsys):
    """Before, ``tools/detect.py --set proposals.method=ss+multibox`` loaded the models, then failed every image
    with the same error ("0 image(s) processed, N failed"); now the config is refused before anything starts."""
    from conftest import load_tool
    from PIL import Image

    from detector.cli import run
    from detector.config import ConfigError, ProposalConfig
    from detector.pipeline import make_proposer
    from proposals.cache import ProposalPrefetch, compute_proposals

    with pytest.raises(ConfigError, match="needs proposals.multibox.checkpoint"):
        make_proposer(ProposalConfig(method="ss+multibox"))
    cfg = ProposalConfig(method="multibox")
    cfg.multibox.checkpoint = str(tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="no such file .*none.pt"):
        ProposalPrefetch([tmp_path / "a.jpg", tmp_path / "b.jpg"], cfg, workers=1)
    with pytest.raises(ConfigError, match="no such file .*none.pt"):  # training and split evaluation's path
        compute_proposals([], cfg, tmp_path / "cache", workers=1)
    assert not (tmp_path / "cache").exists()
    images = [tmp_path / f"{i}.jpg" for i in range(3)]
    for p in images:
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(p)
    assert run(load_tool("detect").main, [*map(str, images), "--set", "proposals.method=ss+multibox"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: proposals.method='ss+multibox' needs proposals.multibox.checkpoint "
                       "(a model trained with tools/train_multibox.py)")
    assert not any("failed" in line or "region classifier" in line for line in err)  # no model loaded, no image
    assert run(load_tool("detect").main, [*map(str, images), "--set", "proposals.method=multibox",
                                          "--image-workers", "2"]) == 2  # the other way a folder is detected
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: proposals.method='multibox' needs") and not any("failed" in e for e in err)


def test_the_benchmark_reads_the_log_line_detect_writes(caplog):
    """detector.bench.parse_detect_log on the line Detector.detect really logs (a round trip through the
    format, both for proposals computed here and in a worker)."""
    from detector.bench import parse_detect_log

    img = np.zeros((64, 64, 3), np.uint8)
    proposals = np.array([[16, 16, 48, 48], [0, 0, 64, 64], [2, 50, 12, 60]], np.float32)
    det = _fixed_proposals_detector(proposals)
    with caplog.at_level(logging.INFO, logger="detector.pipeline"):
        det.detect(img, "img_1", proposals=proposals, proposals_s=0.731)
        first = det.last_timings
        det.detect(img, "img_2", proposals=proposals, proposals_s=2.5, in_worker=True)
    got = parse_detect_log("\n".join(f"12:00:00 INFO detector.pipeline: {r.getMessage()}" for r in caplog.records))
    assert [(g["image"], g["proposals"], g["in_worker"]) for g in got] == [("img_1", 3, False), ("img_2", 3, True)]
    assert got[0]["proposals_s"] == round(first.proposals_s, 2) and got[1]["proposals_s"] == 2.5
    assert got[0]["warp_s"] == round(first.warp_s, 2) and got[0]["classify_s"] == round(first.classify_s, 2)


def test_detector_reports_and_warns_once_when_its_threads_wait_for_a_cpu(monkeypatch, caplog):
    """Other processes on the cores (Linux schedstat, detector.cpu): the share of time the classifier's threads
    waited is in ``last_timings`` and the log line; above CPU_WAIT_WARN one warning per detector says so."""
    import detector.pipeline as pipeline
    from detector.bench import parse_detect_log

    snapshots = []  # (before, after) per image: thread -> (ran s, waited s)
    monkeypatch.setattr(pipeline, "thread_times", lambda: snapshots.pop(0))
    monkeypatch.setattr(Detector, "MIN_WAIT_CHECK_S", 0.0)
    img = np.zeros((64, 64, 3), np.uint8)
    det = _fixed_proposals_detector(np.array([[0, 0, 32, 32], [16, 16, 64, 64]], np.float32))
    busy = [{"1": (0.0, 0.0), "2": (0.0, 0.0)}, {"1": (1.0, 1.0), "2": (1.0, 0.5)}]  # waited 1.5 of 3.5 s
    quiet = [{"1": (0.0, 0.0)}, {"1": (1.0, 0.02)}]
    with caplog.at_level(logging.INFO, logger="detector.pipeline"):
        snapshots += busy + busy + quiet + [None, None]
        for name in ("a", "b", "c", "d"):
            det.detect(img, name)
            if name == "a":
                assert det.last_timings.cpu_wait_share == 1.5 / 3.5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "waited for a CPU" in r.message]
    assert len(warnings) == 1 and "a:" in warnings[0].message and "43%" in warnings[0].message
    lines = {r.message.split(":")[0]: r.message for r in caplog.records if "proposals (" in r.message}
    assert lines["a"].endswith("its threads waited for a CPU 43% of the time")
    assert lines["b"].endswith("of the time")
    assert "waited" not in lines["c"] and "waited" not in lines["d"]  # 2%: not reported; d: no schedstat
    assert det.last_timings.cpu_wait_share is None
    parsed = parse_detect_log(caplog.text)  # the benchmark reads the share back from the log line
    assert [(r["image"], r["cpu_wait_share"]) for r in parsed] == [("a", 0.43), ("b", 0.43), ("c", 0.0), ("d", 0.0)]
    # a new detector warns again; a share under the threshold never does
    det2 = _fixed_proposals_detector(np.array([[0, 0, 32, 32]], np.float32))
    caplog.clear()
    snapshots += [{"1": (0.0, 0.0)}, {"1": (1.0, 0.1)}]  # 9%: reported in the line, no warning
    with caplog.at_level(logging.INFO, logger="detector.pipeline"):
        det2.detect(img, "e")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "waited for a CPU 9%" in caplog.text


def test_detect_reports_its_progress_batch_by_batch():
    """``progress(done, total)`` after each batch of the classifier: 5 regions in batches of 2 -> 2, 2, 1 of 5."""
    proposals = np.array([[0, 0, 32, 32], [8, 8, 40, 40], [16, 16, 48, 48], [0, 32, 32, 64], [32, 0, 64, 32]],
                         np.float32)
    calls = []
    _fixed_proposals_detector(proposals).detect(np.zeros((64, 64, 3), np.uint8), "p",
                                                progress=lambda k, n: calls.append((k, n)))
    assert calls == [(2, 5), (2, 5), (1, 5)]
