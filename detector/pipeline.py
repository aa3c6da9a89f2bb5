"""The detector, stage by stage as in the paper's diagram::

    image -> proposals -> warp each box (R-CNN, context 16) -> ensemble softmax average
          -> per class: score threshold, NMS (IoU 0.3) -> at most 100 per image -> Detections

No bounding-box regression and no context model (the GoogLeNet entry used neither). The proposer is
any callable ``(image, name) -> float32 [N, 4]`` xyxy; :func:`make_proposer` builds the paper's one
or the whole-image lower bound (it lives in ``proposals.cache`` with the workers' entry points, which must
not import torch, and is re-exported here).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from proposals.cache import WHOLE_IMAGE, ProposalPrefetch, Proposer, make_proposer, whole_image_proposer

from .boxes import as_boxes, batched_nms, clip_boxes, load_nms, valid_mask
from .classifier import Ensemble
from .config import DetectConfig, ProposalConfig, WarpConfig
from .cpu import cpu_wait_share, thread_times
from .structures import Detections
from .warp import prepare_image

__all__ = ["Proposer", "whole_image_proposer", "make_proposer", "select_detections", "StageTimings",
           "Detector", "WHOLE_IMAGE", "prefetch_proposals", "detect_in_workers"]

log = logging.getLogger(__name__)

# the share of their time the classifier's threads may wait for a CPU before the detector says other processes
# are slowing it down (alone on the 2-core machine: 0-3%; beside one busy process: 44-48%; README "Speed")
CPU_WAIT_WARN = 0.15
CPU_WAIT_REPORT = 0.05  # from this share on, the per-image log line (and the benchmark's rows) give it


def select_detections(boxes: np.ndarray, probs: np.ndarray, nms_threshold: float, score_threshold: float,
                      max_per_image: int) -> Detections:
    """Per-class post-processing of scored regions.

    ``boxes`` float32 ``[N, 4]`` xyxy; ``probs`` float32 ``[N, K + 1]`` (column 0 background). Every
    (region, class) pair with probability ``>= score_threshold`` is a candidate; per class, greedy NMS
    at IoU ``nms_threshold``; then the ``max_per_image`` best over all classes. Thresholding before NMS
    gives the same result as after (a pruned box could only suppress boxes scoring lower still).
    Returns :class:`Detections` sorted by decreasing score, labels = class index ``0..K-1``.
    """
    boxes = as_boxes(boxes)
    if probs.ndim != 2 or len(probs) != len(boxes):
        raise ValueError(f"probs {probs.shape} do not match {len(boxes)} boxes")
    fg = probs[:, 1:]
    rows, cls = np.nonzero(fg >= score_threshold)
    if len(rows) == 0:
        return Detections.empty()
    scores = fg[rows, cls].astype(np.float32)
    cand = boxes[rows]
    keep = batched_nms(cand, scores, cls, nms_threshold)[:max_per_image]  # sorted by decreasing score
    return Detections(cand[keep], scores[keep], cls[keep].astype(np.int64))


@dataclass
class StageTimings:
    """Seconds per stage for one image (and the number of proposals)."""

    proposals_s: float = 0.0
    proposals_worker_s: float = 0.0  # the proposer's seconds in a worker process (the overlap): not in total_s
    warp_s: float = 0.0
    classify_s: float = 0.0
    postprocess_s: float = 0.0
    num_proposals: int = 0
    # while classifying: the share of their time this process's working threads waited for a CPU (other
    # processes on the cores; detector.cpu.cpu_wait_share); None where Linux's schedstat is not readable
    cpu_wait_share: float | None = None

    @property
    def total_s(self) -> float:
        return self.proposals_s + self.warp_s + self.classify_s + self.postprocess_s


class Detector:
    """``detect(image) -> Detections``: proposals -> warp -> ensemble -> per-class NMS -> top-k.

    ``proposer``: ``(image, name) -> [N, 4]`` xyxy boxes; ``classifier``: an :class:`Ensemble`
    (its ``classes`` / ``class_names`` name the Detections' labels); ``warp_cfg``/``detect_cfg``: the
    crop and post-processing settings. ``last_timings`` holds the stage times of the last call.
    """

    MIN_WAIT_CHECK_S = 1.0  # shorter classifications are too short to judge the CPU wait by

    def __init__(self, proposer: Proposer, classifier: Ensemble, warp_cfg: WarpConfig,
                 detect_cfg: DetectConfig) -> None:
        self.proposer = proposer
        self.classifier = classifier
        self.warp_cfg = warp_cfg
        self.detect_cfg = detect_cfg
        self.last_timings = StageTimings()
        self._warned_cpu_wait = False
        load_nms()  # torchvision's NMS operator (1 ms), loaded here and not in the first image's "nms" time

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    def propose(self, image: np.ndarray, name: str | None = None) -> np.ndarray:
        """Proposals clipped to the image; degenerate ones (no area after clipping) dropped and counted."""
        h, w = image.shape[:2]
        boxes = clip_boxes(as_boxes(self.proposer(image, name)), w, h)
        ok = valid_mask(boxes)
        if not ok.all():
            log.warning("%s: dropped %d of %d proposals with no area inside the image",
                        name or "image", int((~ok).sum()), len(boxes))
        return boxes[ok]

    def detect(self, image: np.ndarray, name: str | None = None, proposals: np.ndarray | None = None,
               proposals_s: float = 0.0, in_worker: bool = False,
               progress: Callable[[int, int], None] | None = None) -> Detections:
        """RGB uint8 ``[H, W, 3]`` -> :class:`Detections` (xyxy boxes, scores, labels into ``classes``).

        ``proposals``: boxes already computed for this image (e.g. by :func:`prefetch_proposals`); they are
        clipped and filtered like the proposer's own. ``proposals_s``: the seconds computing them took, so that
        the log and ``last_timings`` report the proposer's time; ``in_worker``: they were spent in a worker
        process while this one did other work (``proposals_worker_s``, outside ``total_s``). ``progress``: called
        after each batch with (regions classified in it, regions of the image), e.g. to draw a progress bar."""
        t = StageTimings()
        if proposals is not None:
            if in_worker:
                t.proposals_worker_s = proposals_s
            else:
                t.proposals_s = proposals_s
        t0 = time.perf_counter()
        if proposals is None:
            boxes = self.propose(image, name)                                # 1. proposals
        else:
            h, w = image.shape[:2]
            boxes = clip_boxes(as_boxes(proposals), w, h)
            boxes = boxes[valid_mask(boxes)]
        t.proposals_s += time.perf_counter() - t0
        cap = self.detect_cfg.max_proposals
        if 0 < cap < len(boxes):
            log.debug("%s: classifying the first %d of %d proposals (detect.max_proposals)", name or "image", cap,
                      len(boxes))
            boxes = boxes[:cap]
        t.num_proposals = len(boxes)
        if len(boxes) == 0:
            log.warning("%s: no proposals, no detections", name or "image")
            self.last_timings = t
            return Detections.empty()
        self.classifier.timings.reset()
        threads0, tc = thread_times(), time.perf_counter()
        probs = self.classifier.classify_regions(                            # 2. warp + 3. ensemble
            prepare_image(image, self.classifier.preprocess), boxes, self.warp_cfg,
            progress=None if progress is None else (lambda k: progress(k, len(boxes))))
        t.cpu_wait_share = cpu_wait_share(threads0, thread_times(), time.perf_counter() - tc)
        t.warp_s, t.classify_s = self.classifier.timings.warp_s, self.classifier.timings.classify_s
        self._check_cpu_wait(t, name)
        t1 = time.perf_counter()
        dets = select_detections(boxes, probs, self.detect_cfg.nms_threshold,  # 4. NMS, threshold, top-k
                                 self.detect_cfg.score_threshold, self.detect_cfg.max_per_image)
        t.postprocess_s = time.perf_counter() - t1
        self.last_timings = t
        where = f"{t.proposals_worker_s:.2f} s in a worker" if in_worker else f"{t.proposals_s:.2f} s"
        waited = ("" if t.cpu_wait_share is None or t.cpu_wait_share < CPU_WAIT_REPORT
                  else f"; its threads waited for a CPU {t.cpu_wait_share:.0%} of the time")
        log.info("%s: %d proposals (%s), warp %.2f s, classify %.2f s (%.0f regions/s), nms %.3f s "
                 "-> %d detections%s", name or "image", t.num_proposals, where, t.warp_s,
                 t.classify_s, t.num_proposals / max(t.classify_s, 1e-9), t.postprocess_s, len(dets), waited)
        return dets

    def _check_cpu_wait(self, t: StageTimings, name: str | None) -> None:
        """Warn, once per detector, when other processes kept the classifier's threads waiting for a CPU: with as
        many threads as cores that slows every layer down (each waits for its slowest thread), 3.5-5.2x beside a
        single busy process on the 2-core machine, where one thread was ~2x faster (README "Speed", session 24)."""
        share = t.cpu_wait_share
        if self._warned_cpu_wait or share is None or share < CPU_WAIT_WARN or t.classify_s < self.MIN_WAIT_CHECK_S:
            return
        self._warned_cpu_wait = True
        log.warning("%s: the classifier's threads waited for a CPU %.0f%% of the time (other processes are using "
                    "these cores). While that lasts, fewer threads than free cores (--threads N, model.threads) can "
                    "be several times faster: beside one busy process on 2 cores, 1 thread classified ~2x faster "
                    "than 2 (README \"Speed\")", name or "image", 100 * share)


def prefetch_proposals(paths: Sequence[Path], cfg: ProposalConfig, whole_image: bool = False, workers: int = 1,
                       ahead: int = 2) -> Iterator[tuple[Path, np.ndarray | None, np.ndarray | None,
                                                          BaseException | None, float]]:
    """Yield ``(path, image, proposals, error, seconds)`` in order (``seconds``: the proposer's time, in this
    process with ``workers=0``, else in a worker), computing the proposals of the next ``ahead`` images in
    ``workers`` worker processes while the caller classifies the current one (the pipeline overlap: Selective
    Search on one core, the network on the other). ``workers=0``: everything in this process. At most ``ahead``
    images are held beyond the current one, so memory stays bounded. See :class:`ProposalPrefetch`, which
    tools/detect.py creates itself to start the first image's proposals before it loads its models."""
    with ProposalPrefetch(paths, cfg, whole_image, workers, ahead) as stream:
        yield from stream


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (to cross from a worker process), else a RuntimeError with its text."""
    import pickle
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(e).__name__}: {e}")


def _detect_worker(tasks, results, classifier, cfg, whole_image: bool, threads: int, log_level: int) -> None:
    """Worker process of :func:`detect_in_workers`: a Detector around its copy of ``classifier``, detecting
    ``(i, path)`` jobs until it reads ``None``, answering ``(i, (path, image, detections, timings, error))``.
    A failure to build the detector is answered once as ``(-1, (..., error))``."""
    import cv2

    from .imageio import read_image

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
                        datefmt="%H:%M:%S")
    cv2.setNumThreads(1)
    torch.set_num_threads(threads)
    try:
        detector = Detector(make_proposer(cfg.proposals, whole_image), classifier, cfg.warp, cfg.detect)
    except Exception as e:  # noqa: BLE001 - handed to the caller, which raises it
        results.put((-1, (None, None, None, None, _portable(e))))
        return
    while (job := tasks.get()) is not None:
        i, path = job
        try:
            image = read_image(path)
            dets = detector.detect(image, Path(path).stem)
            results.put((i, (path, image, dets, detector.last_timings, None)))
        except Exception as e:  # noqa: BLE001 - per image: the caller counts it and goes on
            results.put((i, (path, None, None, None, _portable(e))))


def detect_in_workers(paths: Sequence[Path], classifier: Ensemble, cfg, workers: int, whole_image: bool = False,
                      threads: int = 0, ahead: int = 2) -> Iterator[tuple[Path, np.ndarray | None,
                                                                         Detections | None, StageTimings | None,
                                                                         BaseException | None]]:
    """Detect over many images in ``workers`` processes, each a whole :class:`Detector` (its own Selective
    Search, warps and a copy of ``classifier``) with ``threads // workers`` threads (``threads`` 0: all
    cores), each taking the next image from a shared queue when it is free. Yields ``(path, image, detections,
    timings, error)`` in the order of ``paths``; ``cfg`` is the whole :class:`~detector.config.Config`
    (proposals, warp, detect sections).

    The other overlap besides :func:`prefetch_proposals`: there one process classifies while a worker runs
    the next image's Selective Search, which is only 5-10% of an image's time here; with image workers every
    stage of one image overlaps every stage of another, and each network runs on fewer threads, where the
    runtimes scale better (README "Speed" has the measured throughput). The classifier is handed over
    pickled: torch members as they are, ONNX Runtime members as their graph's path (each worker opens its
    own session with its thread count), so workers start without re-exporting or re-calibrating. At most
    ``workers + ahead`` images are in flight, so memory stays bounded; a worker that dies is an error."""
    import copy
    import multiprocessing as mp
    import os
    import queue

    paths = list(paths)
    per = max(1, (threads if threads > 0 else (os.cpu_count() or 1)) // workers)
    classifier = copy.copy(classifier)
    classifier.members = [m if isinstance(m, torch.nn.Module) else copy.copy(m) for m in classifier.members]
    for m in classifier.members:
        if hasattr(m, "threads"):  # an ONNX Runtime member: its session in the worker gets `per` threads
            m.threads = per
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_detect_worker, daemon=True,
                         args=(tasks, results, classifier, cfg, whole_image, per, logging.getLogger().level))
             for _ in range(workers)]
    for p in procs:
        p.start()
    submitted = 0

    def top_up(yielded: int) -> None:  # keep at most workers + ahead images between submitted and yielded
        nonlocal submitted
        while submitted < len(paths) and submitted - yielded < workers + ahead:
            tasks.put((submitted, paths[submitted]))
            submitted += 1

    try:
        top_up(0)
        done: dict[int, tuple] = {}
        for want in range(len(paths)):
            while want not in done:
                try:
                    i, payload = results.get(timeout=5.0)
                except queue.Empty:
                    dead = [p.exitcode for p in procs if not p.is_alive()]
                    if dead:
                        raise RuntimeError(f"a detection worker died (exit codes {dead}); "
                                           "out of memory? try fewer image workers") from None
                    continue
                if i < 0:
                    raise payload[-1]
                done[i] = payload
            top_up(want + 1)  # before yielding: the workers go on while the caller handles this image
            yield done.pop(want)
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
