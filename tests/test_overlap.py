"""Pipeline overlap: proposals computed in a worker process arrive in order, errors are handed back."""
import numpy as np
from PIL import Image

from detector.config import ProposalConfig, SelectiveSearchConfig
from detector.imageio import ImageReadError
from detector.pipeline import prefetch_proposals
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
    path, image, boxes, err = got[2]
    assert image is None and isinstance(err, ImageReadError) and "broken.jpg" in str(err)
    for path, image, boxes, err in got[:2] + got[3:]:
        assert err is None
        np.testing.assert_array_equal(boxes, selective_search(image, cfg.selective_search))
    serial = list(prefetch_proposals(paths, cfg, workers=0))
    assert all((a[3] is None) == (b[3] is None) for a, b in zip(got, serial))
