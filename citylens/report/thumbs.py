"""Pictures of explanations: thumbnails, heat overlays, and the t-SNE mosaic (thesis Fig 5).

Pure numpy in, uint8 RGB arrays out; the report stage decides which images to show.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image

from citylens.masks import upsample_masks

__all__ = ["explanation_thumbnail", "heat_overlay", "mosaic", "square"]


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Whole ``(H, W, 3)`` uint8 image resized to ``(size, size, 3)`` (as the models see it)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    return upsample_masks(np.asarray(mask, np.float32), (size, size)).numpy()


def explanation_thumbnail(
    image: np.ndarray, mask: np.ndarray, theta: float, size: int = 96
) -> np.ndarray:
    """The visual explanation at θ: image pixels where mask_norm ≥ θ, black elsewhere.

    Args:
        image: ``(H, W, 3)`` uint8 image.
        mask: ``(h, w)`` mask_norm at the target layer's resolution.
        theta: Threshold θ.
        size: Output side.

    Returns:
        ``(size, size, 3)`` uint8.
    """
    img = square(image, size)
    keep = _mask_at(mask, size) >= theta
    return (img * keep[..., None]).astype(np.uint8)


def heat_overlay(
    image: np.ndarray, mask: np.ndarray, size: int = 160, alpha: float = 0.5
) -> np.ndarray:
    """The weighted mask over its image (paper Fig 6): jet colours blended with the image.

    Returns:
        ``(size, size, 3)`` uint8.
    """
    img = square(image, size).astype(np.float32)
    heat = colormaps["jet"](_mask_at(mask, size))[..., :3] * 255
    return ((1 - alpha) * img + alpha * heat).clip(0, 255).astype(np.uint8)


def mosaic(
    points: np.ndarray,
    thumbs: list[np.ndarray],
    borders: list[tuple[int, int, int]] | None = None,
    cells: int = 30,
    border: int = 3,
) -> np.ndarray:
    """Thumbnails laid out at their 2-D embedding positions on a grid (thesis Fig 5).

    Points are scaled to a ``cells × cells`` grid; each thumbnail takes the free cell
    nearest its point (in the order given), so none overlap and neighbourhoods survive.

    Args:
        points: ``(N, 2)`` embedding coordinates.
        thumbs: N ``(s, s, 3)`` uint8 thumbnails of one size.
        borders: Optional RGB frame colour per thumbnail (e.g. its city's).
        cells: Grid side; ``cells²`` must be ≥ N.
        border: Frame width in pixels.

    Returns:
        ``(cells·s, cells·s, 3)`` uint8 canvas, white where no thumbnail landed.
    """
    n = len(thumbs)
    if n == 0:
        return np.full((8, 8, 3), 255, np.uint8)
    if cells * cells < n:
        raise ValueError(f"{n} thumbnails do not fit a {cells}×{cells} grid")
    s = thumbs[0].shape[0]
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    pos = (p - lo) / np.where(hi > lo, hi - lo, 1) * (cells - 1)
    free = np.ones((cells, cells), bool)
    yy, xx = np.mgrid[0:cells, 0:cells]
    canvas = np.full((cells * s, cells * s, 3), 255, np.uint8)
    for i, (thumb, (x, y)) in enumerate(zip(thumbs, pos)):
        d = np.where(free, (xx - x) ** 2 + ((cells - 1 - y) - yy) ** 2, np.inf)
        r, c = np.unravel_index(np.argmin(d), d.shape)
        free[r, c] = False
        tile = thumb.copy()
        if borders is not None and border > 0:
            tile[:border], tile[-border:] = borders[i], borders[i]
            tile[:, :border], tile[:, -border:] = borders[i], borders[i]
        canvas[r * s : (r + 1) * s, c * s : (c + 1) * s] = tile
    return canvas
