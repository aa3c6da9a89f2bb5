"""Pipeline overlap: proposals computed in a worker process arrive in order, errors are handed back."""
import numpy as np
from PIL import Image

from detector.config import ProposalConfig, SelectiveSearchConfig
from detector.imageio import ImageReadError
from detector.pipeline import prefetch_proposals
from proposals.cache import ProposalPrefetch
from proposals.selective_search import selective_search


def test_prefetch_in_order_with_errors_and_same_boxes(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        arr = (rng.random((50, 70, 3)) * 255).astype(np.uint8)
        arr[10:30, 10:40] = (200, 40, 40)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    paths.insert(2, bad)
    cfg = ProposalConfig(selective_search=SelectiveSearchConfig(resize_width=150, superpixel_scale=1.0))
    got = list(prefetch_proposals(paths, cfg, workers=1, ahead=2))
    assert [g[0] for g in got] == paths
    path, image, boxes, err, seconds = got[2]
    assert image is None and isinstance(err, ImageReadError) and "broken.jpg" in str(err) and seconds == 0.0
    for path, image, boxes, err, seconds in got[:2] + got[3:]:
        assert err is None and seconds > 0  # the proposer's time, for the per-image log
        np.testing.assert_array_equal(boxes, selective_search(image, cfg.selective_search))
    serial = list(prefetch_proposals(paths, cfg, workers=0))
    assert all((a[3] is None) == (b[3] is None) for a, b in zip(got, serial))
    assert all((a[4] > 0) == (a[3] is None) for a in serial)


def _images(tmp_path, n: int) -> list:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        arr = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        arr[5 + i:35, 10:50] = (30, 200, 60)
        paths.append(tmp_path / f"early{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_first_early_proposes_the_first_image_in_a_worker_only(tmp_path):
    """ProposalPrefetch(first_early=True), as tools/detect.py creates it before loading its models: the first
    image's proposals come from a worker process started at construction, the others are computed here, and all
    are the boxes Selective Search gives in this process; whole-image proposals never start a worker."""
    paths = _images(tmp_path, 3)
    cfg = ProposalConfig(selective_search=SelectiveSearchConfig(resize_width=150, superpixel_scale=1.0))
    stream = ProposalPrefetch(paths, cfg, first_early=True, workers=0)
    assert stream._pool is not None  # started before anything is iterated
    origin = []
    with stream:
        got = []
        for item in stream:
            got.append(item)
            origin.append(stream.last_from_worker)
    assert origin == [True, False, False] and stream._pool is None
    for path, image, boxes, err, seconds in got:
        assert err is None and seconds > 0
        np.testing.assert_array_equal(boxes, selective_search(image, cfg.selective_search))
    assert ProposalPrefetch(paths, cfg, whole_image=True, first_early=True, workers=0)._pool is None


def test_a_dead_proposal_worker_costs_no_image(tmp_path, caplog):
    """A worker process killed before it answers (as the out-of-memory killer would): its images are proposed
    in this process instead, with a warning, and the results are complete and in order."""
    import os
    import signal

    paths = _images(tmp_path, 3)
    cfg = ProposalConfig(selective_search=SelectiveSearchConfig(resize_width=150, superpixel_scale=1.0))
    with ProposalPrefetch(paths, cfg, workers=1, ahead=2) as stream:
        for pid in list(stream._pool._processes):  # the spawned worker is still importing: no job done yet
            os.kill(pid, signal.SIGKILL)
        with caplog.at_level("WARNING", logger="proposals.cache"):
            got = list(stream)
    assert "proposal worker process died" in caplog.text
    assert [g[0] for g in got] == paths and all(g[3] is None for g in got)
    for path, image, boxes, err, seconds in got:
        np.testing.assert_array_equal(boxes, selective_search(image, cfg.selective_search))


def test_image_workers_give_the_one_process_detections_in_order(tmp_path):
    """detect_in_workers: two processes with 1 thread each return, in the input order, exactly what one
    Detector (1 thread) finds image by image; an unreadable image is handed back as its error."""
    import json

    import torch

    from detector.classifier import build_classifier
    from detector.config import load_config
    from conftest import patch_images
    from detector.pipeline import Detector, detect_in_workers, make_proposer
    from test_classifier import _write_checkpoint

    _write_checkpoint(tmp_path / "m.pt")
    paths = patch_images(tmp_path, 3)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    paths.insert(1, bad)
    cfg = load_config(None, [f"model.checkpoints={json.dumps([str(tmp_path / 'm.pt')])}", "warp.size=64",
                             "warp.mode=square", "proposals.selective_search.resize_width=120",
                             "proposals.selective_search.superpixel_scale=1.0", "detect.score_threshold=0.0"])
    classifier = build_classifier(cfg.model, cfg.warp)
    got = list(detect_in_workers(paths, classifier, cfg, workers=2, threads=2))
    assert [g[0] for g in got] == paths
    assert got[1][2] is None and isinstance(got[1][4], ImageReadError) and "broken.jpg" in str(got[1][4])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in each worker: threads=2 over 2 workers
        one = Detector(make_proposer(cfg.proposals), classifier, cfg.warp, cfg.detect)
        for path, image, dets, timings, err in got[:1] + got[2:]:
            assert err is None and timings.num_proposals > 1
            ref = one.detect(image, path.stem)
            assert len(dets) == len(ref) > 0
            np.testing.assert_array_equal(dets.labels, ref.labels)
            np.testing.assert_allclose(dets.boxes, ref.boxes)
            np.testing.assert_allclose(dets.scores, ref.scores, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(threads)


class _Crash:
    """A stand-in ONNX member whose first forward kills its process (as the out-of-memory killer would)."""

    classes, class_names, source, num_classes = ("n01",), ("N01",), "crash", 1

    def __init__(self):
        from detector.weights import BVLC_PREPROCESS
        self.preprocess = BVLC_PREPROCESS

    def __call__(self, x):
        import os
        os._exit(3)


def test_image_workers_report_a_dead_worker(tmp_path):
    import pytest

    from detector.classifier import Ensemble
    from detector.config import load_config
    from detector.pipeline import detect_in_workers
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(np.full((20, 30, 3), 90 * i, np.uint8)).save(paths[-1])
    cfg = load_config(None, ["warp.size=64"])
    with pytest.raises(RuntimeError, match="worker died"):
        list(detect_in_workers(paths, Ensemble([_Crash()], batch_size=2), cfg, workers=2, whole_image=True))


def test_a_worker_result_that_fails_is_proposed_here(tmp_path, caplog):
    """A worker's answer that cannot be handed back (here: its future raises, as for a result that does not
    unpickle): that image is proposed in this process, with a warning, and the workers go on with the rest."""
    paths = _images(tmp_path, 2)
    cfg = ProposalConfig(selective_search=SelectiveSearchConfig(resize_width=150, superpixel_scale=1.0))

    class Failed:
        def result(self):
            raise ValueError("cannot unpickle")

        def cancel(self):
            return True

    with ProposalPrefetch(paths, cfg, workers=1) as stream:
        stream._futures[0].cancel()
        stream._futures[0] = Failed()
        with caplog.at_level("WARNING", logger="proposals.cache"):
            got = []
            for item in stream:
                got.append((item, stream.last_from_worker))
    assert "proposal worker failed (ValueError: cannot unpickle)" in caplog.text
    assert [origin for _, origin in got] == [False, True]
    for (path, image, boxes, err, seconds), _ in got:
        assert err is None
        np.testing.assert_array_equal(boxes, selective_search(image, cfg.selective_search))
