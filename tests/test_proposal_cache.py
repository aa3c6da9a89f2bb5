"""The proposal cache: reuse, invalidation on config or image change, resume after partial work."""
import numpy as np
from PIL import Image

from detector.config import ProposalConfig, SelectiveSearchConfig
from detector.structures import ImageRecord
from proposals.cache import cache_file, compute_proposals, load_proposals


def _records(tmp_path, n=3):
    recs = []
    rng = np.random.default_rng(1)
    for i in range(n):
        arr = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        arr[10:40, 10:50] = (200, 30, 30)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(arr).save(p)
        recs.append(ImageRecord(f"im{i}", p, 80, 60))
    return recs


def _cfg(scale):
    return ProposalConfig(selective_search=SelectiveSearchConfig(superpixel_scale=scale, resize_width=200))


def test_reuse_invalidate_and_resume(tmp_path):
    recs = _records(tmp_path)
    cache = tmp_path / "cache"
    first = compute_proposals(recs, _cfg(1.0), cache, workers=1, progress=False)
    assert set(first) == {"im0", "im1", "im2"}
    # reuse: the stored files are read back unchanged
    mtimes = {r.image_id: cache_file(cache, r).stat().st_mtime_ns for r in recs}
    again = compute_proposals(recs, _cfg(1.0), cache, workers=1, progress=False)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert mtimes == {r.image_id: cache_file(cache, r).stat().st_mtime_ns for r in recs}
    # a different config does not match the stored key
    assert load_proposals(recs[0], _cfg(2.0), cache) is None
    assert load_proposals(recs[0], _cfg(1.0), cache) is not None
    # resume: delete one entry (an interrupted run) -> only that one is recomputed
    cache_file(cache, recs[1]).unlink()
    compute_proposals(recs, _cfg(1.0), cache, workers=1, progress=False)
    assert cache_file(cache, recs[0]).stat().st_mtime_ns == mtimes["im0"]
    assert cache_file(cache, recs[1]).is_file()


def test_changed_image_invalidates(tmp_path):
    recs = _records(tmp_path, 1)
    cache = tmp_path / "cache"
    compute_proposals(recs, _cfg(1.0), cache, workers=1, progress=False)
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(recs[0].image_path)
    assert load_proposals(recs[0], _cfg(1.0), cache) is None


def test_parallel_workers_match_serial(tmp_path):
    recs = _records(tmp_path, 2)
    a = compute_proposals(recs, _cfg(1.0), tmp_path / "a", workers=1, progress=False)
    b = compute_proposals(recs, _cfg(1.0), tmp_path / "b", workers=2, progress=False)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_proposal_workers_import_no_torch():
    """Spawned Selective Search workers import only what unpickling ``proposals.cache``'s functions needs; torch
    and torchvision cost ~3 s of start-up per worker, and torchvision pulls in torch._dynamo everywhere. A Detector,
    which runs NMS, loads torchvision's NMS operator when built, without importing the torchvision package."""
    import subprocess
    import sys

    code = ("import sys, proposals.cache, detector.structures\n"
            "assert 'torch' not in sys.modules, 'proposals.cache imports torch'\n"
            "import detector.pipeline\n"
            "assert 'torchvision' not in sys.modules, 'detector.pipeline imports torchvision'\n"
            # a Detector loads NMS up front: the import is not timed as the first image's NMS
            "detector.pipeline.Detector(None, None, None, None)\n"
            "import torch\n"
            "assert hasattr(torch.ops.torchvision, 'nms'), 'Detector() left NMS unloaded'\n"
            "assert 'torchvision' not in sys.modules, 'Detector() imported torchvision'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
