"""Measurements behind tools/benchmark.py (speed is measured there, never in tests).

Every function times real work of the library (the Detector, the Ensemble, the proposal cache) and returns
plain dicts of figures; the tool prints them side by side. Memory is the process's peak resident set size
(``resource.getrusage``), which only grows: measure small before large.
"""
from __future__ import annotations

import copy
import logging
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .classifier import Ensemble
from .config import ProposalConfig
from .imageio import read_image
from .pipeline import Detector, detect_in_workers, prefetch_proposals
from .structures import ImageRecord
from .warp import PreparedImage

__all__ = ["peak_rss_mb", "bench_selective_search", "bench_batch_sizes", "bench_end_to_end", "bench_folder",
           "bench_folder_workers", "bench_detect_command", "parse_detect_log", "profile_onnx",
           "bench_memory", "compiled_ensemble", "replicated_ensemble"]

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_selective_search(paths: Sequence[Path], cfg: ProposalConfig, workers: Sequence[int] = (1, 2)) -> list[dict]:
    """Wall seconds per image of the proposal cache's computation (``proposals.cache.compute_proposals``)
    over ``paths`` with each number of worker processes, into a fresh temporary cache every time. More workers
    than images are left out: that row would time the worker pool's start-up (3.3 s for one 451x300 photo and 2
    workers, against 0.76 s for its Selective Search, in session 25)."""
    from proposals.cache import compute_proposals

    workers = [n for n in workers if n <= max(1, len(paths))]
    records = []
    for p in paths:
        h, w = read_image(p).shape[:2]
        records.append(ImageRecord(Path(p).stem, Path(p), h, w, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    out = []
    for n in workers:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            boxes = compute_proposals(records, cfg, Path(tmp), workers=n, progress=False)
            wall = time.perf_counter() - t0
        out.append({"workers": n, "images": len(records), "seconds_per_image": wall / max(1, len(records)),
                    "boxes_per_image": float(np.mean([len(b) for b in boxes.values()])) if boxes else 0.0})
        log.info("Selective Search, %d worker(s): %.2f s/image", n, out[-1]["seconds_per_image"])
    return out


def bench_batch_sizes(ens: Ensemble, img: PreparedImage, boxes: np.ndarray, warp_cfg, sizes: Sequence[int],
                      regions: int = 128) -> dict[int, float]:
    """Warp + classify regions/s of ``ens`` at each batch size (``regions`` regions each, after a warm-up)."""
    out = {}
    keep = ens.batch_size
    for b in sizes:
        ens.batch_size = b
        sel = boxes[:max(b, regions)]
        ens.classify_regions(img, sel[:b], warp_cfg)  # warm-up: oneDNN primitives for this shape
        t0 = time.perf_counter()
        ens.classify_regions(img, sel, warp_cfg)
        out[b] = len(sel) / (time.perf_counter() - t0)
        log.info("batch %3d: %.1f regions/s", b, out[b])
    ens.batch_size = keep
    return out


def bench_end_to_end(detector: Detector, paths: Sequence[Path], label: str = "") -> dict:
    """Seconds per image of ``detector.detect`` (proposals + warp + classify + NMS), one image after another."""
    per_image = []
    for p in tqdm(paths, desc=f"end to end {label}".strip(), unit="img", file=sys.stderr):
        image = read_image(p)
        t0 = time.perf_counter()
        dets = detector.detect(image, Path(p).stem)
        t = detector.last_timings
        per_image.append({"image": str(p), "size": list(image.shape[:2]), "seconds": time.perf_counter() - t0,
                          "proposals": t.num_proposals, "proposals_s": t.proposals_s, "warp_s": t.warp_s,
                          "classify_s": t.classify_s, "postprocess_s": t.postprocess_s,
                          "cpu_wait_share": t.cpu_wait_share, "detections": len(dets)})
    secs = [r["seconds"] for r in per_image]
    out = {"images": per_image, "mean_seconds_per_image": float(np.mean(secs)) if secs else None,
           "mean_proposals": float(np.mean([r["proposals"] for r in per_image])) if per_image else None}
    if secs:
        log.info("end to end %s: %.1f s/image (mean over %d, %.0f proposals/image)", label,
                 out["mean_seconds_per_image"], len(secs), out["mean_proposals"])
    return out


def bench_folder(detector: Detector, paths: Sequence[Path], cfg: ProposalConfig, overlap_workers: int) -> dict:
    """Wall seconds for a folder the way tools/detect.py runs it: proposals of the next images computed in
    ``overlap_workers`` worker processes while the current one is classified (0: one image after another)."""
    t0 = time.perf_counter()
    n = 0
    in_worker = overlap_workers > 0 and len(paths) > 1  # prefetch_proposals' own rule
    for path, image, boxes, err, seconds in prefetch_proposals(list(paths), cfg, workers=overlap_workers):
        if err is not None:
            raise err
        detector.detect(image, path.stem, proposals=boxes, proposals_s=seconds, in_worker=in_worker)
        n += 1
    wall = time.perf_counter() - t0
    log.info("folder of %d images, overlap workers %d: %.1f s (%.2f s/image)", n, overlap_workers, wall, wall / n)
    return {"images": n, "overlap_workers": overlap_workers, "seconds": wall, "seconds_per_image": wall / n,
            "backend": detector.classifier.backend}


# the per-image line of Detector.detect's log (detector/pipeline.py), as tools/detect.py prints it on stderr
_DETECT_LINE = re.compile(r"(\S+): (\d+) proposals \(([\d.]+) s( in a worker)?\), warp ([\d.]+) s, "
                          r"classify ([\d.]+) s[^\n]*?(?:its threads waited for a CPU (\d+)% of the time)?$",
                          re.MULTILINE)


def parse_detect_log(text: str) -> list[dict]:
    """The per-image figures in a ``tools/detect.py`` log: image name, proposals, their seconds and whether a
    worker process computed them, the warps' and the classification's seconds (rounded to 10 ms, as logged), and
    the share of time the classifier's threads waited for a CPU (logged from 5%, else 0.0)."""
    return [{"image": m[1], "proposals": int(m[2]), "proposals_s": float(m[3]), "in_worker": bool(m[4]),
             "warp_s": float(m[5]), "classify_s": float(m[6]), "cpu_wait_share": int(m[7] or 0) / 100}
            for m in _DETECT_LINE.finditer(text)]


def bench_detect_command(detect_py: Path, image: Path, args: Sequence[str], runs: int) -> dict:
    """Wall seconds of the whole ``tools/detect.py IMAGE ARGS`` command, as a user runs it: a fresh process each
    time, Python start-up, imports and model loading included. ``runs`` pairs, alternating the default (the
    first image's Selective Search in a worker while the models load) and ``--no-early-proposals``, so that both
    see the same machine; each run's per-image log figures beside its wall time."""
    out: dict = {"command": [str(detect_py), str(image), *args], "early": [], "late": []}
    for _ in tqdm(range(runs), desc="detect.py commands", unit="pair", file=sys.stderr):
        for mode, extra in (("early", []), ("late", ["--no-early-proposals"])):
            cmd = [sys.executable, str(detect_py), str(image), *args, *extra]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            lines = parse_detect_log(done.stderr)
            if done.returncode != 0 or len(lines) != 1:
                raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode} with {len(lines)} image line(s): "
                                   f"{done.stderr[-800:]}")
            out[mode].append({"wall_s": wall, **lines[0]})
    for mode in ("early", "late"):
        rows = out[mode]
        if rows:
            out[f"{mode}_median_wall_s"] = float(np.median([r["wall_s"] for r in rows]))
            # the image's own time after start-up: the proposals count only when computed in this process
            out[f"{mode}_median_image_s"] = float(np.median([r["warp_s"] + r["classify_s"]
                                                             + (0.0 if r["in_worker"] else r["proposals_s"])
                                                             for r in rows]))
            # everything else: start-up, imports, model loading, Selective Search when not hidden, drawing
            out[f"{mode}_median_outside_s"] = float(np.median([r["wall_s"] - r["warp_s"] - r["classify_s"]
                                                               for r in rows]))
    return out


def bench_folder_workers(classifier: Ensemble, cfg, paths: Sequence[Path], workers: int, threads: int = 0) -> dict:
    """Wall seconds for a folder detected by ``workers`` image-worker processes (tools/detect.py
    ``--image-workers``; :func:`~detector.pipeline.detect_in_workers`), the workers' start-up (spawn, imports,
    unpickling the classifier, opening ONNX sessions) included: it is part of what a user waits for."""
    t0 = time.perf_counter()
    n = 0
    for path, image, dets, timings, err in detect_in_workers(list(paths), classifier, cfg, workers,
                                                             threads=threads):
        if err is not None:
            raise err
        n += 1
    wall = time.perf_counter() - t0
    log.info("folder of %d images, %d image workers: %.1f s (%.2f s/image)", n, workers, wall, wall / n)
    return {"images": n, "image_workers": workers, "seconds": wall, "seconds_per_image": wall / n,
            "backend": classifier.backend}


def profile_onnx(onnx_path: Path, regions: np.ndarray, batch: int = 8, threads: int = 2, rounds: int = 8,
                 denormals_zero: bool = False, lrn: Sequence[dict] | None = None) -> dict:
    """ONNX Runtime's own per-operator profile of a graph (``SessionOptions.enable_profiling``) over
    ``rounds`` batches of ``regions`` (float32 ``[N, 3, S, S]``), after 2 warm-up batches (left out of the
    shares too: they include numba's first compile): regions/s and the
    share of kernel time per operator type and per node (as ORT optimised the graph: fused, NHWC, NCHWc).
    With ``lrn`` specs (:func:`detector.backends.lrn_specs`) the graph runs as OrtMember runs it with
    ``model.onnx_lrn=fused``: segments, and the fused LRN kernels between them, timed here as operator
    ``FusedLRN`` (node ``<prefix>fused``)."""
    import json

    from .backends import open_segments, run_lrn, session_options

    so = session_options(threads)  # as OrtMember runs it
    if denormals_zero:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    by_op: dict[str, float] = {}
    by_node: dict[str, float] = {}
    buffers: dict = {}  # as OrtMember keeps them
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sessions, lrns = open_segments(onnx_path, so, lrn)
        name = sessions[0].get_inputs()[0].name
        batches = [np.ascontiguousarray(regions[i:i + batch], np.float32) for i in range(0, len(regions), batch)]

        def forward(b, timed: bool) -> None:
            (a,) = sessions[0].run(None, {name: b})
            for spec, sess in zip(lrns, sessions[1:]):
                t = time.perf_counter()
                a = run_lrn(spec, a, threads, buffers)
                if timed:
                    us = (time.perf_counter() - t) * 1e6
                    by_op["FusedLRN"] = by_op.get("FusedLRN", 0.0) + us
                    by_node[spec["prefix"] + "fused"] = by_node.get(spec["prefix"] + "fused", 0.0) + us
                (a,) = sess.run(None, {spec["input"]: a})

        for b in batches[:2]:
            forward(b, False)
        n, t0 = 0, time.perf_counter()
        for r in range(rounds):
            b = batches[r % len(batches)]
            forward(b, True)
            n += len(b)
        secs = time.perf_counter() - t0
        traces = [json.loads(Path(s.end_profiling()).read_text()) for s in sessions]
    warm = {}  # the warm-up runs are in ORT's trace too: count only the timed rounds of each node
    for trace in traces:
        events = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
        for e in events:
            node = e["name"][:-len("_kernel_time")]
            warm[node] = warm.get(node, 0) + 1
            if warm[node] <= 2:  # each node runs once per batch
                continue
            by_op[e["args"]["op_name"]] = by_op.get(e["args"]["op_name"], 0.0) + e["dur"]
            by_node[node] = by_node.get(node, 0.0) + e["dur"]
    total = sum(by_op.values()) or 1.0
    share = lambda d: dict(sorted(((k, v / total) for k, v in d.items()), key=lambda kv: -kv[1]))  # noqa: E731
    return {"graph": str(onnx_path), "threads": threads, "batch": batch, "regions": n,
            "regions_per_s": n / secs, "denormals_zero": denormals_zero, "lrn_fused": bool(lrns),
            "op_share": share(by_op), "node_share": share(by_node)}


def bench_memory(ens: Ensemble, img: PreparedImage, warp_cfg, counts: Sequence[int] = (256, 4096),
                 seed: int = 0) -> list[dict]:
    """Peak RSS after classifying ``n`` random boxes of ``img`` for each ``n`` (ascending): with regions
    streamed in batches the peak must not grow with ``n`` beyond the ``[n, K + 1]`` output."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sorted(counts):
        wh = rng.uniform(16, [img.width, img.height], (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([img.width, img.height]) - wh)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        t0 = time.perf_counter()
        with tqdm(total=n, desc=f"memory, {n} regions", unit="region", file=sys.stderr) as bar:
            ens.classify_regions(img, boxes, warp_cfg, progress=bar.update)
        out.append({"regions": n, "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0})
        log.info("%d regions classified: peak RSS %.0f MiB", n, out[-1]["peak_rss_mb"])
    return out


def replicated_ensemble(ens: Ensemble, n: int) -> Ensemble:
    """An ``n``-member ensemble costing what ``n`` distinct members cost (copies of ``ens``'s first member:
    identical weights, so only for timing)."""
    members = [ens.members[0]] + [copy.deepcopy(ens.members[0]) if isinstance(ens.members[0], torch.nn.Module)
                                  else ens.members[0] for _ in range(n - 1)]
    return Ensemble(members, batch_size=ens.batch_size, channels_last=ens.channels_last, backend=ens.backend,
                    lrn_kernel=ens.lrn_kernel, eager_kernels=ens.eager_kernels, winograd=ens.winograd)


def compiled_ensemble(ens: Ensemble) -> Ensemble:
    """The ensemble with every member's network wrapped in ``torch.compile`` (inductor, static shapes)."""
    members = []
    for m in ens.members:
        c = copy.deepcopy(m)
        c.net = torch.compile(c.net, dynamic=False)
        members.append(c)
    return Ensemble(members, batch_size=ens.batch_size, channels_last=ens.channels_last, backend="eager",
                    lrn_kernel=ens.lrn_kernel)
