"""Explanation thumbnails, heat overlays and the t-SNE mosaic."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.masks import explanation
from citylens.report.thumbs import explanation_thumbnail, heat_overlay, mosaic


def test_thumbnail_keeps_exactly_the_explanation():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (64, 64, 3), dtype=np.uint8)  # no black pixel
    mask = np.zeros((4, 4), np.float32)
    mask[:2, :2] = 1.0  # top-left quadrant
    thumb = explanation_thumbnail(image, mask, 0.6, size=64)
    keep = explanation(mask, (64, 64), 0.6).numpy()
    assert keep[:20, :20].all() and not keep[40:, :].any()
    np.testing.assert_array_equal(thumb[keep], image[keep])
    assert (thumb[~keep] == 0).all()


def test_heat_overlay_blends_jet_over_the_image():
    image = np.full((32, 32, 3), 100, np.uint8)
    hot = heat_overlay(image, np.ones((2, 2), np.float32), size=32, alpha=0.5)
    cold = heat_overlay(image, np.zeros((2, 2), np.float32), size=32, alpha=0.5)
    assert hot.shape == (32, 32, 3)
    assert hot[..., 0].mean() > hot[..., 2].mean()  # jet(1) is red
    assert cold[..., 2].mean() > cold[..., 0].mean()  # jet(0) is blue


def test_mosaic_places_every_thumbnail_once_near_its_point():
    thumbs = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.05, 0.0]])  # two near (0, 0)
    canvas = mosaic(pts, thumbs, cells=3, border=0)
    assert canvas.shape == (12, 12, 3)
    tiles = {int(canvas[r * 4, c * 4, 0]): (r, c) for r in range(3) for c in range(3)}
    assert tiles[10] == (2, 0)  # lowest-left point -> bottom-left cell
    assert tiles[20] == (0, 2)  # top-right
    assert tiles[30] == (0, 0)  # top-left
    assert tiles[40] in {(2, 1), (1, 0)}  # its cell was taken: the nearest free one
    assert sum(v != 255 for v in tiles) == 4


def test_mosaic_frames_in_city_colours_and_refuses_overflow():
    thumbs = [np.zeros((6, 6, 3), np.uint8)]
    canvas = mosaic(np.zeros((1, 2)), thumbs, borders=[(255, 0, 0)], cells=1, border=1)
    assert tuple(canvas[0, 0]) == (255, 0, 0) and tuple(canvas[3, 3]) == (0, 0, 0)
    with pytest.raises(ValueError, match="do not fit"):
        mosaic(np.zeros((5, 2)), thumbs * 5, cells=2)
