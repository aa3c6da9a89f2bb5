"""The one place every tool gets its dataset options: ``--dataset {ilsvrc,voc,coco}`` and friends."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..structures import Dataset, DatasetError

__all__ = ["add_dataset_arguments", "dataset_from_args", "DATASETS"]

DATASETS = ("ilsvrc", "voc", "coco")


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    g = parser.add_argument_group("dataset")
    g.add_argument("--dataset", choices=DATASETS, required=required, help="annotation format")
    g.add_argument("--devkit", type=Path, help="ilsvrc: devkit root (data/meta_det.mat, data/det_lists/val.txt)")
    g.add_argument("--annotations", type=Path,
                   help="ilsvrc: folder of XML; coco: instances JSON")
    g.add_argument("--image-list", type=Path, help="ilsvrc: restrict to the images named in this list")
    g.add_argument("--root", type=Path, help="voc: dataset root (JPEGImages, Annotations, ImageSets/Main)")
    g.add_argument("--split", default="test", help="voc: image set name (default: test)")
    g.add_argument("--split-file", type=Path, help="voc: explicit image-set file (e.g. splits/raccoon/test.txt)")
    g.add_argument("--images-dir", type=Path, help="folder of images (overrides the format's default)")
    g.add_argument("--annotations-dir", type=Path, help="voc: folder of XML (overrides root/Annotations)")
    g.add_argument("--classes", help="voc: comma-separated class list (default: names found, sorted)")
    g.add_argument("--skip-bad", action="store_true",
                   help="drop malformed records/boxes with a counted warning instead of stopping")
    g.add_argument("--limit", type=int, default=0, help="use only the first N images (quick runs)")


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    """Load the dataset the options describe; a missing option is a :class:`DatasetError` naming it."""
    def need(opt: str):
        v = getattr(args, opt.lstrip("-").replace("-", "_"))
        if v is None:
            raise DatasetError(f"--dataset {args.dataset} needs {opt}")
        return v

    if args.dataset == "ilsvrc":
        from .ilsvrc import load_ilsvrc
        ds = load_ilsvrc(need("--devkit"), need("--annotations"), args.images_dir, args.image_list,
                         args.skip_bad)
    elif args.dataset == "voc":
        from .voc import load_voc
        if args.root is None and (args.images_dir is None or args.annotations_dir is None):
            raise DatasetError("--dataset voc needs --root, or --images-dir and --annotations-dir")
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        ds = load_voc(args.root, args.split, args.images_dir, args.annotations_dir, args.split_file, classes,
                      args.skip_bad)
    elif args.dataset == "coco":
        from .coco import load_coco
        ds = load_coco(need("--annotations"), args.images_dir, args.skip_bad)
    else:  # pragma: no cover - argparse choices
        raise DatasetError(f"unknown dataset format {args.dataset}")
    if args.limit and args.limit > 0:
        ds = Dataset(ds.name, ds.classes, ds.class_names, ds.records[: args.limit])
    return ds
