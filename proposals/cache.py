"""Proposals per image on disk, keyed by the proposer config, computed in parallel worker processes.

One ``.npz`` per image in ``cache_dir`` holds the boxes (float32 ``[N, 4]`` xyxy, original image
coordinates) and the key they were built for: the sha256 of the proposer config (``ProposalConfig``) plus the
image's identity (path, byte size, modification time). A file whose key differs is stale and is rebuilt
(caches are honest). Files are written atomically (temporary file + ``os.replace``), so an interrupted run
leaves only complete files and re-running continues where it stopped.

:func:`propose` is the one dispatch on ``ProposalConfig.method``; :func:`make_proposer` adds the whole-image
proposer. The worker processes' entry points (:func:`init_worker`, :func:`read_and_propose`, used here and by
``detector.pipeline.prefetch_proposals``) live in this module because it imports no torch: a spawned worker
imports only what unpickling its function needs, so it is ready in well under a second.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detector.config import PROPOSAL_METHODS, ConfigError, ProposalConfig, config_to_dict
from detector.imageio import read_image
from detector.structures import ImageRecord

from .selective_search import selective_search

__all__ = ["METHODS", "WHOLE_IMAGE", "Proposer", "propose", "whole_image_proposer", "make_proposer",
           "check_multibox_checkpoint",
           "read_and_propose", "init_worker", "ProposalPrefetch", "cache_key", "cache_file", "load_proposals",
           "save_proposals", "compute_proposals", "cached_seconds"]

log = logging.getLogger(__name__)

WHOLE_IMAGE = "whole_image"
METHODS = tuple(m for m in PROPOSAL_METHODS if m != WHOLE_IMAGE)  # the proposers (propose)
Proposer = Callable[[np.ndarray, "str | None"], np.ndarray]


def propose(image: np.ndarray, cfg: ProposalConfig, name: str = "<image>") -> np.ndarray:
    """Proposals for ``image`` (RGB uint8 ``[H, W, 3]``) by ``cfg.method``: float32 ``[N, 4]`` xyxy."""
    if cfg.method == "ss":
        return selective_search(image, cfg.selective_search, name)
    if cfg.method in ("multibox", "ss+multibox"):
        try:
            from .merge import propose_with_multibox
        except ImportError:
            raise ValueError(f"proposals.method={cfg.method!r} needs the MultiBox proposer (proposals/merge.py), "
                             "which is not available in this installation") from None
        return propose_with_multibox(image, cfg, name)
    raise ValueError(f"proposals.method must be one of {METHODS}, got {cfg.method!r}")


def whole_image_proposer(image: np.ndarray, name: str | None = None) -> np.ndarray:
    """One proposal, the whole image ``[[0, 0, W, H]]``: the lower bound that shows proposals matter."""
    h, w = image.shape[:2]
    return np.array([[0, 0, w, h]], np.float32)


def make_proposer(cfg: ProposalConfig, whole_image: bool = False) -> Proposer:
    """The proposer for ``cfg`` (:func:`propose`: Selective Search / MultiBox / both), or
    :func:`whole_image_proposer` when ``whole_image`` is set or ``cfg.method == "whole_image"``. A config that
    cannot propose for any image (an unknown method, MultiBox without its checkpoint file) is refused here, once,
    rather than image by image."""
    if whole_image or cfg.method == WHOLE_IMAGE:
        return whole_image_proposer
    if cfg.method not in METHODS:
        raise ConfigError(f"proposals.method must be one of {(*METHODS, WHOLE_IMAGE)}, got {cfg.method!r}")
    if cfg.method != "ss":
        check_multibox_checkpoint(cfg)

    def proposer(image: np.ndarray, name: str | None = None) -> np.ndarray:
        return propose(image, cfg, name)

    return proposer


def check_multibox_checkpoint(cfg: ProposalConfig) -> None:
    """The MultiBox methods need ``proposals.multibox.checkpoint``, an existing file: else a :class:`ConfigError`."""
    if not cfg.multibox.checkpoint:
        raise ConfigError(f"proposals.method={cfg.method!r} needs proposals.multibox.checkpoint "
                          "(a model trained with tools/train_multibox.py)")
    if not Path(cfg.multibox.checkpoint).is_file():
        raise ConfigError(f"proposals.multibox.checkpoint: no such file {cfg.multibox.checkpoint}")


def _proposer_digest(cfg: ProposalConfig) -> str:
    """Hash of what determines the boxes: the method and the config of the sources it uses."""
    d = config_to_dict(cfg)
    if cfg.method == "ss":
        d.pop("multibox", None)
    if cfg.method in ("multibox", "ss+multibox") and cfg.multibox.checkpoint:
        from detector.weights import sha256_file
        p = Path(cfg.multibox.checkpoint)
        d["multibox_checkpoint_sha256"] = sha256_file(p) if p.is_file() else "missing"
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _image_identity(record: ImageRecord) -> dict:
    p = Path(record.image_path) if record.image_path else None
    if p is None:
        raise ValueError(f"{record.image_id}: the record has no image file to compute proposals on")
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(record: ImageRecord, cfg: ProposalConfig, digest: str | None = None) -> str:
    """The key a cached file must carry to be used for ``record`` under ``cfg``."""
    ident = _image_identity(record)
    ident["proposer"] = digest or _proposer_digest(cfg)
    return json.dumps(ident, sort_keys=True)


def cache_file(cache_dir: Path, record: ImageRecord) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", record.image_id)
    return Path(cache_dir) / f"{safe}.npz"


def save_proposals(path: Path, boxes: np.ndarray, key: str, seconds: float = float("nan")) -> None:
    """Write one cache entry atomically: boxes, the key they were built for, and the compute time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, boxes=np.asarray(boxes, np.float32).reshape(-1, 4), key=np.array(key),
             seconds=np.array(seconds, np.float64))
    os.replace(tmp, path)


def load_proposals(record: ImageRecord, cfg: ProposalConfig, cache_dir: Path,
                   digest: str | None = None) -> np.ndarray | None:
    """The cached boxes of ``record`` if present and built for exactly this config and image; else None."""
    p = cache_file(cache_dir, record)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            if str(z["key"]) != cache_key(record, cfg, digest):
                log.debug("%s: stale cache entry (config or image changed)", p)
                return None
            return np.asarray(z["boxes"], np.float32).reshape(-1, 4)
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable cache entry (%s); recomputing", p, e)
        return None


def cached_seconds(record: ImageRecord, cache_dir: Path) -> float:
    """Seconds the cached proposals of ``record`` took to compute (NaN when unknown)."""
    p = cache_file(cache_dir, record)
    try:
        with np.load(p, allow_pickle=False) as z:
            return float(z["seconds"]) if "seconds" in z.files else float("nan")
    except (OSError, ValueError, KeyError):
        return float("nan")


def init_worker() -> None:
    """One core per worker: OpenCV single-threaded, and torch too should MultiBox load it later."""
    import cv2
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # read when torch first starts its thread pool
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def read_and_propose(job: tuple) -> tuple:
    """Worker: ``(path, cfg, whole_image)`` -> ``(path, image, proposals, None, seconds)`` (``seconds``: the
    proposer's time, reading the image excluded), or ``(path, None, None, error, 0.0)`` when reading or
    proposing fails (handed back to the caller, which decides)."""
    path, cfg, whole_image = job
    try:
        image = read_image(path)
        t0 = time.perf_counter()
        boxes = make_proposer(cfg, whole_image)(image, Path(path).stem)
        return path, image, boxes, None, time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - handed back to the caller, which decides
        return path, None, None, e, 0.0


class ProposalPrefetch:
    """``(path, image, proposals, error, seconds)`` per path, in order (:func:`read_and_propose`), with the
    proposals of some images computed in worker processes, which start at construction:

    - ``workers`` > 0 (and at least 2 paths): the pipeline overlap. The next ``ahead`` images are proposed in
      ``workers`` processes while the caller classifies the current one; at most ``ahead`` images are held
      beyond it, so memory stays bounded.
    - else, ``first_early``: only the first image, in one worker process, and the rest here. A command line
      creates this before importing torch and building its classifier (~3 s on the 2-core machine), so the first
      image's Selective Search (~0.9 s of a 500x375 photo, one core) runs on the other core meanwhile instead of
      after. Only for ``method: ss``: a MultiBox proposer would load its network in the worker.
    - else everything here, when iterated.

    Use it as a context manager (or call :meth:`close`): leaving early stops the workers. A worker process that
    dies (the pool breaks) or fails to hand a result back costs no image: its images are proposed again here, with
    a warning."""

    def __init__(self, paths: Sequence[Path], cfg: ProposalConfig, whole_image: bool = False, workers: int = 1,
                 ahead: int = 2, first_early: bool = False) -> None:
        make_proposer(cfg, whole_image)  # a config that cannot propose is refused now, not once per image
        self.paths, self.cfg, self.whole_image = list(paths), cfg, whole_image
        self.ahead = max(1, ahead)
        self._pool = None
        self._futures: dict[int, object] = {}
        self.last_from_worker = False  # whether the last result iterated was computed in a worker process
        if workers > 0 and len(self.paths) > 1:
            self._in_pool = len(self.paths)
            self._start(workers)
        elif first_early and self.paths and not whole_image and cfg.method == "ss":
            self._in_pool = 1
            self._start(1)
        else:
            self._in_pool = 0

    def _start(self, workers: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
        for i in range(min(self._in_pool, self.ahead + 1)):
            self._submit(i)

    def _submit(self, i: int) -> None:
        if self._pool is not None and i < self._in_pool and i not in self._futures:
            self._futures[i] = self._pool.submit(read_and_propose, (self.paths[i], self.cfg, self.whole_image))

    def _result(self, i: int) -> tuple:
        from concurrent.futures.process import BrokenProcessPool

        future = self._futures.pop(i, None)
        if future is not None:
            try:
                result = future.result()
                self.last_from_worker = True
                return result
            except BrokenProcessPool as e:
                log.warning("%s: the proposal worker process died (%s); proposing here instead", self.paths[i], e)
                self.close()
            except Exception as e:  # noqa: BLE001 - e.g. a result that could not be pickled: this image here
                log.warning("%s: the proposal worker failed (%s: %s); proposing here instead", self.paths[i],
                            type(e).__name__, e)
        self.last_from_worker = False
        return read_and_propose((self.paths[i], self.cfg, self.whole_image))

    def __iter__(self):
        try:
            for i in range(len(self.paths)):
                result = self._result(i)
                if i + 1 >= self._in_pool:
                    self.close()  # no more work for the workers: free their core before classifying
                else:
                    self._submit(i + self.ahead + 1)
                yield result
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            for f in self._futures.values():
                f.cancel()
            self._futures.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._in_pool = None, 0

    def __enter__(self) -> "ProposalPrefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _compute_one(args) -> tuple[str, int, str | None]:
    record, cfg, cache_dir, digest = args
    try:
        img = read_image(record.image_path)
        t0 = time.perf_counter()
        boxes = propose(img, cfg, record.image_id)
        seconds = time.perf_counter() - t0
        save_proposals(cache_file(cache_dir, record), boxes, cache_key(record, cfg, digest), seconds)
        return record.image_id, len(boxes), None
    except Exception as e:  # noqa: BLE001 - reported per image by the parent
        return record.image_id, 0, f"{type(e).__name__}: {e}"


def compute_proposals(records: Sequence[ImageRecord], cfg: ProposalConfig, cache_dir: Path, workers: int = 2,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """Boxes for every record, computing only missing or stale entries (in ``workers`` processes).

    Returns ``{image_id: boxes}``. Images that fail are logged with the reason and counted; if any failed,
    a ``RuntimeError`` lists them after all others were computed and saved.
    """
    make_proposer(cfg)  # a config that cannot propose is refused now, not once per image
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = _proposer_digest(cfg)
    (cache_dir / "proposer_config.json").write_text(json.dumps(
        {"digest": digest, "config": config_to_dict(cfg)}, indent=2, sort_keys=True))
    out: dict[str, np.ndarray] = {}
    todo = []
    for r in records:
        boxes = load_proposals(r, cfg, cache_dir, digest)
        if boxes is None:
            todo.append(r)
        else:
            out[r.image_id] = boxes
    log.info("proposals: %d of %d images cached in %s, %d to compute with %d worker(s)",
             len(out), len(records), cache_dir, len(todo), workers)
    failures = []
    if todo:
        from tqdm import tqdm
        jobs = [(r, cfg, cache_dir, digest) for r in todo]
        bar = tqdm(total=len(jobs), desc="proposals", unit="img", disable=not progress)
        if workers > 1:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=init_worker) as pool:
                results = list(_progress(pool.imap_unordered(_compute_one, jobs), bar))
        else:
            results = list(_progress(map(_compute_one, jobs), bar))
        bar.close()
        for image_id, n, err in results:
            if err:
                log.error("%s: proposals failed: %s", image_id, err)
                failures.append(image_id)
        by_id = {r.image_id: r for r in todo}
        for image_id, _, err in results:
            if not err:
                boxes = load_proposals(by_id[image_id], cfg, cache_dir, digest)
                out[image_id] = boxes if boxes is not None else np.zeros((0, 4), np.float32)
    if failures:
        raise RuntimeError(f"proposals failed on {len(failures)} image(s): {failures[:5]}")
    return out


def _progress(it, bar):
    for x in it:
        bar.update(1)
        yield x


def add_proposer_arguments(parser) -> None:
    """``--config``, ``--set`` and ``--method``: the options every proposal tool shares."""
    parser.add_argument("--config", help="YAML config (its proposals section is used)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. proposals.selective_search.superpixel_scale=1")
    parser.add_argument("--method", choices=METHODS, help="overrides proposals.method")


def proposer_config_from_args(args) -> ProposalConfig:
    """The proposals section of ``--config`` with ``--set`` and ``--method`` applied (logged)."""
    from detector.config import load_config

    overrides = list(args.overrides) + ([f"proposals.method={args.method}"] if args.method else [])
    cfg = load_config(args.config, overrides).proposals
    log.info("proposer config: %s", json.dumps(config_to_dict(cfg), sort_keys=True))
    return cfg
