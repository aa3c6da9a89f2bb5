"""The ILSVRC DET synsets of the devkit's ``meta_det.mat``: the 200 detection classes (submission order)
and the WordNet hierarchy (815 synsets) that links them to the 1000 classification synsets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..structures import DatasetError

__all__ = ["Synset", "read_meta_det", "detection_classes", "descendants"]

NUM_DET_CLASSES = 200


@dataclass(frozen=True)
class Synset:
    """One entry of ``meta_det.mat``: ``det_id`` 1..815 (1..200 are the detection classes),
    ``children``: det_ids of the direct children."""

    det_id: int
    wnid: str
    name: str
    children: tuple[int, ...]


def _scalar_str(x) -> str:
    arr = np.asarray(x).reshape(-1)
    return str(arr[0]) if arr.size else ""


def read_meta_det(path: str | Path) -> dict[int, Synset]:
    """Read ``meta_det.mat`` -> ``{det_id: Synset}``; raise :class:`DatasetError` on a malformed file."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: meta_det.mat not found (expected <devkit>/data/meta_det.mat)")
    try:
        syn = scipy.io.loadmat(str(p))["synsets"].reshape(-1)
        out: dict[int, Synset] = {}
        for s in syn:
            det_id = int(np.asarray(s["ILSVRC2013_DET_ID"]).reshape(-1)[0])
            children = tuple(int(c) for c in np.asarray(s["children"]).reshape(-1))
            out[det_id] = Synset(det_id, _scalar_str(s["WNID"]), _scalar_str(s["name"]), children)
    except (KeyError, ValueError, IndexError, TypeError, OSError) as e:
        raise DatasetError(f"{p}: not a valid ILSVRC meta_det.mat ({type(e).__name__}: {e})") from None
    missing = [i for i in range(1, NUM_DET_CLASSES + 1) if i not in out]
    if missing:
        raise DatasetError(f"{p}: detection class ids missing from synsets: {missing[:5]}...")
    return out


def detection_classes(meta: dict[int, Synset]) -> list[Synset]:
    """The 200 detection classes in submission order (DET_ID 1..200)."""
    return [meta[i] for i in range(1, NUM_DET_CLASSES + 1)]


def descendants(meta: dict[int, Synset], det_id: int) -> set[str]:
    """WNIDs of ``det_id`` and all its descendants in the hierarchy."""
    seen: set[int] = set()
    stack = [det_id]
    while stack:
        i = stack.pop()
        if i in seen or i not in meta:
            continue
        seen.add(i)
        stack.extend(meta[i].children)
    return {meta[i].wnid for i in seen}
