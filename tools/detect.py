"""Detect objects in images: Selective Search (+ MultiBox) proposals, GoogLeNet region classifier(s).

    python tools/detect.py photo.jpg [more.jpg | a_folder ...] [--out DIR] [--json dets.json]
        [--config configs/detect_bvlc_ilsvrc.yaml] [--checkpoint model.pt ...] [--weights bvlc_googlenet.npz]
        [--score-threshold 0.3] [--submission sub.txt --devkit ILSVRC_DEVKIT] [--whole-image]

Prints one line per detection (image, class name, score, x1 y1 x2 y2 in 0-based pixel coordinates),
draws labelled boxes into ``--out/<stem>.jpg|png``, writes every detection to ``--json`` and, for images
whose stems are in the devkit's ``det_lists/val.txt``, an ILSVRC submission file. An unreadable image is
reported in one line and skipped; the exit code is then 1 (2 for a usage/config error).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

# Only modules that do not import torch up here: main() starts the first image's proposals in a worker process
# before it imports the network code (detector.classifier, detector.pipeline; ~2 s) and builds the classifier.
from detector.cli import USER_ERRORS, UserError, exit_now, number, run, setup_logging
from detector.config import BACKENDS, config_to_dict, load_config
from detector.imageio import IMAGE_EXTENSIONS
from detector.structures import Detections
from detector.visualize import save_detections_image
from proposals.cache import ProposalPrefetch, make_proposer

log = logging.getLogger("detect")


def list_images(inputs: list[str]) -> list[Path]:
    """Files as given (in order) and, for folders, their image files sorted by name (not recursive)."""
    out: list[Path] = []
    exts = {e.lower() for e in IMAGE_EXTENSIONS}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
            if not found:
                log.warning("%s: folder has no image files (%s)", p, ", ".join(sorted(exts)))
            out.extend(found)
        else:
            out.append(p)  # a missing file is reported per image, like an unreadable one
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", help="image files and/or folders of images")
    ap.add_argument("--config", help="YAML overriding the defaults (configs/detect_*.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set detect.nms_threshold=0.4 (repeatable)")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="trained region classifier; repeat for an ensemble (default: embedded ImageNet->DET)")
    ap.add_argument("--weights", help="BVLC GoogLeNet .npz (default: $GOOGLENET_WEIGHTS, then the user cache)")
    ap.add_argument("--devkit", help="ILSVRC 2014 devkit folder (meta_det.mat for the embedded default; "
                    "det_lists/val.txt for --submission); default $GOOGLENET_RCNN_DEVKIT")
    ap.add_argument("--out", help="folder for pictures with labelled boxes")
    ap.add_argument("--overlap-workers", type=number(), default=0,
                    help="processes computing the next images' proposals during classification (0 = off, the "
                    "default: on 2 cores the worker competes with a classifier that already uses both, 0.90-1.18x in "
                    "tools/benchmark.py, README \"Speed\"; worth it when a core is free)")
    ap.add_argument("--image-workers", type=number(), default=0,
                    help="detect N images at a time, each in its own process with threads/N threads (0 = off, "
                    "the default; 1.02-1.23x on 2 cores with 2 workers, README \"Speed\")")
    ap.add_argument("--no-early-proposals", action="store_true",
                    help="compute the first image's Selective Search here, after loading the models, instead of in a "
                    "worker process started before (the default: it runs on the other core while the network code "
                    "is imported and the classifier built, ~0.8 s less per command on 2 cores, README \"Speed\")")
    ap.add_argument("--json", help="write every detection to this JSON file")
    ap.add_argument("--submission", help="write an ILSVRC submission (needs the devkit's val.txt)")
    ap.add_argument("--score-threshold", type=float, help="override detect.score_threshold")
    ap.add_argument("--batch-size", type=number(), help="override model.batch_size (regions per forward)")
    ap.add_argument("--threads", type=number(), help="override model.threads")
    ap.add_argument("--backend", choices=BACKENDS,
                    help="override model.backend: how regions are classified (default eager, fp32; torch_int8 is "
                    "the fastest with no extra install, mnn the fastest fp32 with pip install -e '.[mnn]'; "
                    "README \"Speed\")")
    ap.add_argument("--whole-image", action="store_true",
                    help="replace the proposals by the whole image (the lower bound)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and getattr(e, "filename", None):
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"model.checkpoints={json.dumps(args.checkpoint)}")
    if args.weights:
        overrides.append(f"model.weights={json.dumps(args.weights)}")
    for key, val in (("detect.score_threshold", args.score_threshold), ("model.batch_size", args.batch_size),
                     ("model.threads", args.threads), ("model.backend", args.backend)):
        if val is not None:
            overrides.append(f"{key}={val}")
    cfg = load_config(args.config, overrides)
    log.info("config: %s", json.dumps({k: config_to_dict(getattr(cfg, k))
                                        for k in ("proposals", "warp", "model", "detect")}))
    images = list_images(args.images)
    if not images:
        raise UserError("no images given (files or folders with .jpg/.png/... files)")
    val_index = None
    if args.submission:
        devkit, val_index = submission_plan(args, images)
        args.devkit_resolved = devkit
    if args.image_workers > 0 and args.overlap_workers > 0:
        raise UserError("--image-workers and --overlap-workers are two ways to overlap the work: choose one")
    if args.image_workers > 0 and len(images) > 1:
        make_proposer(cfg.proposals, args.whole_image)  # a config that cannot propose: refused before any work
        prefetch = None
    else:  # started now, so that Selective Search runs while the network code is imported and the models load
        prefetch = ProposalPrefetch(images, cfg.proposals, args.whole_image,
                                    workers=args.overlap_workers if len(images) > 1 else 0,
                                    first_early=not args.no_early_proposals)
    from detector.classifier import build_classifier
    from detector.pipeline import Detector, detect_in_workers

    try:
        classifier = build_classifier(cfg.model, cfg.warp, meta_det=args.devkit)
    except BaseException:
        if prefetch is not None:
            prefetch.close()
        raise
    classes, names = classifier.classes, classifier.class_names
    results: dict[str, Detections] = {}
    paths: dict[str, Path] = {}
    sizes: dict[str, tuple[int, int]] = {}
    failures = 0
    if prefetch is None:
        stream = ((p, img, d, e) for p, img, d, _, e in
                  detect_in_workers(images, classifier, cfg, args.image_workers, args.whole_image,
                                    cfg.model.threads))
    else:
        detector = Detector(make_proposer(cfg.proposals, whole_image=args.whole_image), classifier, cfg.warp,
                            cfg.detect)
        stream = _detect_here(detector, prefetch)
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        for path, image, dets, err in tqdm(stream, total=len(images), desc="images", unit="img", file=sys.stderr,
                                           disable=len(images) < 2):
            if err is not None:
                if not isinstance(err, USER_ERRORS):
                    raise err
                failures += 1
                tqdm.write(f"error: {_one_line(err)}", file=sys.stderr)
                continue
            if path.stem in results:
                log.warning("%s: a second image with stem %r; its detections replace the first's in --json/"
                            "--submission", path, path.stem)
            results[path.stem] = dets
            paths[path.stem] = path
            sizes[path.stem] = (image.shape[1], image.shape[0])
            for box, score, label in zip(dets.boxes, dets.scores, dets.labels):
                print(f"{path}\t{names[int(label)]}\t{float(score):.4f}\t"
                      f"{box[0]:.1f} {box[1]:.1f} {box[2]:.1f} {box[3]:.1f}", flush=True)
            if args.out:
                suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
                save_detections_image(image, dets, names, Path(args.out) / f"{path.stem}{suffix}")
    write_outputs(args, results, sizes, paths, classes, names, val_index)
    log.info("%d image(s) processed, %d failed, %d detections", len(results), failures,
             sum(len(d) for d in results.values()))
    return 1 if failures else 0


def region_progress(name: str, disable: bool | None = None):
    """A ``progress(done, total)`` callback for ``Detector.detect``: the image's regions as a progress bar on
    stderr (an image takes ~10-60 s on a 2-core CPU), under the images bar, removed when its last batch is done.
    ``disable`` None: drawn on a terminal only, so logs and pipes get the per-image line alone."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"{name} regions", unit="region", leave=False, file=sys.stderr,
                       disable=disable)
        bar.update(done)
        if bar.n >= total:
            bar.close()

    return update


def _detect_here(detector, prefetch: ProposalPrefetch):
    """``(path, image, detections, error)`` per image in this process, the proposals from ``prefetch``: with
    several images and ``--overlap-workers N``, Selective Search for the next images runs in N worker
    processes while the current image's regions are classified here (off by default, see its help)."""
    with prefetch:
        for path, image, boxes, err, seconds in prefetch:
            if err is None:
                try:
                    dets = detector.detect(image, path.stem, proposals=boxes, proposals_s=seconds,
                                           in_worker=prefetch.last_from_worker, progress=region_progress(path.stem))
                except USER_ERRORS as e:
                    err = e
            yield (path, None, None, err) if err is not None else (path, image, dets, None)


def submission_plan(args, images: list[Path]) -> tuple[Path, dict[str, int]]:
    """Checked before the run: the devkit and the val.txt index of every image stem."""
    import os

    from detector.datasets.ilsvrc import devkit_paths, read_image_list

    devkit = args.devkit or os.environ.get("GOOGLENET_RCNN_DEVKIT")
    if not devkit:
        raise UserError("--submission needs --devkit DIR (the ILSVRC devkit: data/det_lists/val.txt)")
    val_index = dict(read_image_list(devkit_paths(Path(devkit))["val_list"]))
    unknown = [p.stem for p in images if p.stem not in val_index]
    if unknown:
        raise UserError(f"--submission: {len(unknown)} image(s) are not in {devkit}/data/det_lists/val.txt "
                        f"(the file stem must be the val image name), e.g. {unknown[:3]}")
    return Path(devkit), val_index


def write_outputs(args, results: dict[str, Detections], sizes: dict[str, tuple[int, int]],
                  paths: dict[str, Path], classes, names, val_index: dict[str, int] | None) -> None:
    """``--json``: every detection (detector/evaluation/detections_io format); ``--submission``: the ILSVRC
    format (image index = line of val.txt, DET_ID 1..200, 1-based inclusive boxes)."""
    if args.json:
        from detector.evaluation.detections_io import ImageDetections, write_detections_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_detections_json(Path(args.json), list(classes), list(names),
                              [ImageDetections(k, str(paths[k]), sizes[k][0], sizes[k][1], d)
                               for k, d in results.items()])
        log.info("wrote %s", args.json)
    if args.submission:
        from detector.datasets.ilsvrc import devkit_paths
        from detector.datasets.ilsvrc_meta import detection_classes, read_meta_det
        from detector.evaluation.ilsvrc import submission_from_detections, write_submission
        from detector.structures import Dataset, ImageRecord

        det = detection_classes(read_meta_det(devkit_paths(Path(args.devkit_resolved))["meta"]))
        det_label = {s.wnid: i for i, s in enumerate(det)}
        missing = [c for c in classes if c not in det_label]
        if missing:
            raise UserError(f"--submission: classifier classes {missing[:3]} are not ILSVRC DET classes")
        to_det = np.array([det_label[c] for c in classes], np.int64)
        records = tuple(ImageRecord(k, paths[k], sizes[k][0], sizes[k][1], index=val_index[k]) for k in results)
        ds = Dataset("detect.py", tuple(s.wnid for s in det), tuple(s.name for s in det), records)
        dets = {k: Detections(d.boxes, d.scores, to_det[d.labels]) for k, d in results.items()}
        Path(args.submission).parent.mkdir(parents=True, exist_ok=True)
        write_submission(Path(args.submission), submission_from_detections(ds, dets))
        log.info("wrote %s (%d detections)", args.submission, sum(len(d) for d in dets.values()))


if __name__ == "__main__":
    exit_now(run(main))  # without the interpreter's ~0.7-1 s teardown of torch (README "Speed")
