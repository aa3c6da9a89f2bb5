"""Score detections against ground truth: ILSVRC (devkit-exact), PASCAL VOC, COCO.

    python tools/evaluate.py ilsvrc --devkit DEVKIT --annotations XML_DIR --detections SUBMISSION.txt \
        [--image-list NAMES.txt] [--json OUT.json] [--plot OUT.png]
    python tools/evaluate.py voc --root ROOT [--images-dir D --annotations-dir D] --split test --detections DETS.json
    python tools/evaluate.py coco --annotations instances.json --detections DETS.json

Prints the per-class table, then the mAP as the last line.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from detector.cli import UserError, run, setup_logging

log = logging.getLogger("evaluate")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--detections", type=Path, required=True,
                        help="ilsvrc: submission .txt (or our detections JSON); voc/coco: detections JSON "
                             "(coco also: a standard COCO results list)")
    common.add_argument("--json", type=Path, help="write every number (per-class AP, counts, PR curves) here")
    common.add_argument("--plot", type=Path, help="PNG of the PR curves of the worst and best classes")
    common.add_argument("--skip-bad", action="store_true", help="drop malformed ground-truth records with a warning")
    common.add_argument("-v", "--verbose", action="store_true")
    il = sub.add_parser("ilsvrc", parents=[common], help="ILSVRC DET (devkit eval_detection.m rules)")
    il.add_argument("--devkit", type=Path, required=True, help="devkit root (data/meta_det.mat, det_lists/val.txt)")
    il.add_argument("--annotations", type=Path, required=True, help="folder of ground-truth XML")
    il.add_argument("--image-list", type=Path, help="evaluate only these images (e.g. det_lists/ilsvrc13_val2.txt)")
    il.add_argument("--no-blacklist", action="store_true", help="do not apply the devkit's val blacklist")
    vo = sub.add_parser("voc", parents=[common], help="PASCAL VOC AP (difficult ignored)")
    vo.add_argument("--root", type=Path)
    vo.add_argument("--images-dir", type=Path)
    vo.add_argument("--annotations-dir", type=Path)
    vo.add_argument("--split", default="test")
    vo.add_argument("--split-file", type=Path)
    vo.add_argument("--classes", help="comma-separated class list (default: the detections file's order)")
    vo.add_argument("--metric", choices=("voc", "voc07"), default="voc", help="2010+ area AP or 2007 11-point")
    co = sub.add_parser("coco", parents=[common], help="COCO bbox metrics (pycocotools)")
    co.add_argument("--annotations", type=Path, required=True, help="COCO instances JSON")
    co.add_argument("--images-dir", type=Path)
    return ap


def _ilsvrc(args):
    from detector.datasets.ilsvrc import devkit_paths, load_ilsvrc, read_blacklist
    from detector.evaluation.detections_io import read_detections_json, relabel
    from detector.evaluation.ilsvrc import evaluate_submission, read_submission, submission_from_detections

    dataset = load_ilsvrc(args.devkit, args.annotations, image_list=args.image_list, skip_bad=args.skip_bad)
    blacklist = set()
    if not args.no_blacklist:
        blacklist = read_blacklist(devkit_paths(args.devkit)["blacklist"],
                                   {w: i + 1 for i, w in enumerate(dataset.classes)})
        log.info("blacklist: %d (image, class) pairs", len(blacklist))
    t0 = time.perf_counter()
    if args.detections.suffix.lower() == ".json":
        f = read_detections_json(args.detections)
        sub = submission_from_detections(dataset, relabel(f, dataset.classes, args.detections))
    else:
        sub = read_submission(args.detections, len(dataset.classes))
    log.info("%s: %d detections read in %.2f s", args.detections, len(sub), time.perf_counter() - t0)
    return evaluate_submission(dataset, sub, blacklist)


def _voc(args):
    from detector.datasets.voc import load_voc
    from detector.evaluation import evaluate
    from detector.evaluation.detections_io import read_detections_json, relabel

    f = read_detections_json(args.detections)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else f.classes
    dataset = load_voc(args.root, args.split, args.images_dir, args.annotations_dir, args.split_file, classes,
                       args.skip_bad)
    return evaluate(dataset, relabel(f, dataset.classes, args.detections), args.metric)


def _coco(args):
    from detector.datasets.coco import load_coco
    from detector.evaluation.coco import evaluate_coco
    from detector.evaluation.detections_io import read_detections_json, relabel

    dataset = load_coco(args.annotations, args.images_dir, args.skip_bad)
    try:
        doc = json.loads(args.detections.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{args.detections}: malformed JSON (line {e.lineno}: {e.msg})") from None
    if isinstance(doc, list):  # a standard COCO results list
        return evaluate_coco(dataset, results=doc)
    f = read_detections_json(args.detections)
    return evaluate_coco(dataset, relabel(f, dataset.classes, args.detections))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    log.info("options: %s", {k: str(v) for k, v in vars(args).items()})
    if not args.detections.is_file():
        raise UserError(f"{args.detections}: detections file not found")
    t0 = time.perf_counter()
    result = {"ilsvrc": _ilsvrc, "voc": _voc, "coco": _coco}[args.format](args)
    log.info("evaluated in %.2f s (including loading)", time.perf_counter() - t0)
    from detector.evaluation.report import format_table, plot_pr_curves, write_json

    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        log.info("wrote %s", args.json)
    if args.plot:
        plot_pr_curves(result, args.plot)
        log.info("wrote %s", args.plot)
    print(f"mAP: {result.mAP:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
