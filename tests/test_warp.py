"""R-CNN warp geometry against hand-computed crops.

With ``size = 8`` and ``context_pad = 2`` the dilation factor is ``8 / (8 - 4) = 2``, so the numbers
are easy to check by hand. An identity preprocessing (RGB, 0..255, mean 0) makes outputs equal pixels.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detector.boxes import hflip_boxes
from detector.config import WarpConfig
from detector.warp import (SAMPLERS, dilated_boxes, iter_warped, prepare_image, warp_prepared,
                           warp_region_reference, warp_regions)

IDENTITY = SimpleNamespace(channel_order="RGB", scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
BVLC = SimpleNamespace(channel_order="BGR", scale=255.0, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0))
SMALL = WarpConfig(mode="warp", size=8, context_pad=2)


def ramp(h: int = 8, w: int = 8) -> np.ndarray:
    """Pixel (y, x) = (10x + y, 10x + y + 1, 10x + y + 2): bilinear sampling is exact on it."""
    y, x = np.mgrid[0:h, 0:w]
    base = 10 * x + y
    return np.stack([base, base + 1, base + 2], axis=2).astype(np.uint8)


def ramp_value(xp, yp, c=0):
    return 10 * np.asarray(xp)[None, :] + np.asarray(yp)[:, None] + c


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_identity_crop(sampler):
    # box (2,2,6,6): dilated x2 about (4,4) -> (0,0,8,8) = the whole image, sampled 1:1
    img = ramp()
    out = warp_prepared(prepare_image(img, IDENTITY), np.array([[2, 2, 6, 6]], np.float32), SMALL,
                        sampler=sampler)
    assert out.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), img.astype(np.float32), atol=1e-4)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_box_at_border_is_mean_filled(sampler):
    # box (0,0,4,4): dilated to (-2,-2,6,6), one output pixel per image pixel; columns/rows 0,1 are
    # outside the image -> 0 (the mean); output (r, c) = pixel (r-2, c-2) elsewhere
    img = ramp()
    out = warp_prepared(prepare_image(img, IDENTITY), np.array([[0, 0, 4, 4]], np.float32), SMALL,
                        sampler=sampler)[0].permute(1, 2, 0).numpy()
    expected = np.zeros((8, 8, 3), np.float32)
    expected[2:, 2:] = img[:6, :6]
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_box_larger_than_image(sampler):
    # box (0,0,8,8): dilated to (-4,-4,12,12), 2 image pixels per output pixel: output column j samples
    # continuous x = 2j - 3, inside for j = 2..5 at pixel-index coordinates 0.5, 2.5, 4.5, 6.5
    img = ramp()
    out = warp_prepared(prepare_image(img, IDENTITY), np.array([[0, 0, 8, 8]], np.float32), SMALL,
                        sampler=sampler)[0].numpy()
    expected = np.zeros((3, 8, 8), np.float32)
    pos = np.array([0.5, 2.5, 4.5, 6.5])
    for c in range(3):
        expected[c, 2:6, 2:6] = ramp_value(pos, pos, c)
    np.testing.assert_allclose(out, expected, atol=1e-3)


def test_square_mode_grows_the_short_side():
    # box (3,2,5,6) is 2 wide, 4 tall; square mode makes it 4x4 about (4,4) -> dilated (0,0,8,8)
    cfg = WarpConfig(mode="square", size=8, context_pad=2)
    np.testing.assert_allclose(dilated_boxes(np.array([[3, 2, 5, 6]], np.float32), cfg).numpy(),
                               [[0, 0, 8, 8]])
    img = ramp()
    out = warp_regions(img, np.array([[3, 2, 5, 6]], np.float32), cfg, IDENTITY)[0].permute(1, 2, 0)
    np.testing.assert_allclose(out.numpy(), img.astype(np.float32), atol=1e-4)
    # warp mode stretches the same box anisotropically: dilated (2,0,6,8)
    np.testing.assert_allclose(dilated_boxes(np.array([[3, 2, 5, 6]], np.float32), SMALL).numpy(),
                               [[2, 0, 6, 8]])


def test_context_padding_at_network_size():
    # default S=224, p=16: a 192-px box becomes 224 px about its centre -> 16 px of context each side
    d = dilated_boxes(np.array([[100, 100, 292, 292]], np.float32), WarpConfig()).numpy()
    np.testing.assert_allclose(d, [[84, 84, 308, 308]], atol=1e-4)


def test_bvlc_preprocessing_and_mean_fill():
    # a constant RGB (50, 60, 70) image: inside -> BGR minus mean (70-104, 60-117, 50-123); outside -> 0
    img = np.empty((8, 8, 3), np.uint8)
    img[:] = (50, 60, 70)
    out = warp_regions(img, np.array([[0, 0, 4, 4]], np.float32), SMALL, BVLC)[0].numpy()
    for c, v in enumerate((70 - 104, 60 - 117, 50 - 123)):
        np.testing.assert_allclose(out[c, 2:, 2:], v, atol=1e-4)
        np.testing.assert_allclose(out[c, :2, :], 0)
        np.testing.assert_allclose(out[c, :, :2], 0)


def test_flip_equals_warping_the_mirrored_box_of_the_mirrored_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    boxes = np.array([[3, 4, 20, 25], [0, 0, 40, 30], [25.5, 2.25, 39, 17]], np.float32)
    cfg = WarpConfig(size=16, context_pad=2)
    flipped = warp_regions(img, boxes, cfg, IDENTITY, flip=np.array([True, False, True]))
    plain = warp_regions(img, boxes, cfg, IDENTITY)
    mirrored = warp_regions(img[:, ::-1].copy(), hflip_boxes(boxes, 40), cfg, IDENTITY)
    torch.testing.assert_close(flipped[0], mirrored[0], atol=0.05, rtol=0)
    torch.testing.assert_close(flipped[1], plain[1])
    torch.testing.assert_close(flipped[2], plain[2].flip(-1))


def test_samplers_agree_and_match_rcnn_literal_crop():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:60, 0:90]
    smooth = 2 * x + y + 20 * np.sin(x / 7.0) + 20  # 0..~240, smooth: sub-pixel shifts change little
    img = np.repeat(smooth[..., None], 3, axis=2).astype(np.uint8)
    img[..., 1] //= 2
    x1 = rng.uniform(-10, 70, 40)
    y1 = rng.uniform(-10, 45, 40)
    boxes = np.stack([x1, y1, x1 + rng.uniform(5, 90, 40), y1 + rng.uniform(5, 60, 40)], 1).astype(np.float32)
    cfg = WarpConfig(size=32, context_pad=4)
    prep = prepare_image(img, BVLC)
    outs = {s: warp_prepared(prep, boxes, cfg, sampler=s) for s in SAMPLERS}
    for s in ("roi_align", "grid_sample"):
        torch.testing.assert_close(outs["cv2"], outs[s].contiguous(), atol=0.02, rtol=0)
    # R-CNN's literal crop rounds the dilated box to whole pixels (and counts widths as x2 - x1 + 1):
    # per region the two differ by sub-pixel shifts only, a few grey levels on this smooth image
    ref = torch.stack([warp_region_reference(img, b, cfg, BVLC) for b in boxes])
    per_region = (ref - outs["cv2"]).abs().mean(dim=(1, 2, 3))
    assert float(per_region.median()) < 2.0, per_region
    # inside the image they agree within the image slope (<= ~5 levels per pixel) x R-CNN's rounding (<= 1 px)
    inner = warp_region_reference(img, np.array([20, 15, 60, 45], np.float32), cfg, BVLC)
    ours = warp_prepared(prep, np.array([[20, 15, 60, 45]], np.float32), cfg)[0]
    assert float((inner - ours).abs().max()) < 6.0


def test_empty_invalid_and_streaming():
    prep = prepare_image(ramp(), IDENTITY)
    assert warp_prepared(prep, np.zeros((0, 4), np.float32), SMALL).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="non-positive size"):
        warp_prepared(prep, np.array([[1, 1, 1, 5]], np.float32), SMALL)
    with pytest.raises(ValueError, match="non-finite"):
        warp_prepared(prep, np.array([[0, 0, np.nan, 5]], np.float32), SMALL)
    with pytest.raises(ValueError, match="warp.mode"):
        warp_prepared(prep, np.array([[0, 0, 4, 4]], np.float32), WarpConfig(mode="stretch", size=8, context_pad=2))
    with pytest.raises(ValueError, match="RGB uint8"):
        prepare_image(ramp().astype(np.float32), IDENTITY)
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 7, 7], [0, 0, 8, 8], [3, 3, 5, 5]], np.float32)
    parts = list(iter_warped(prep, boxes, SMALL, batch_size=2))
    assert [p[0] for p in parts] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), warp_prepared(prep, boxes, SMALL))
