"""Average residual (AR) between the weighted masks of two models (paper eq. 2).

AR(m1, m2) for one image = mean over a common H×W grid of |mask_m1 − mask_m2|, both
masks upsampled (and re-normalised) to that grid. 0: identical masks; 1: opposite.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from citylens.masks import upsample_masks

__all__ = ["average_residual", "pairwise_ar"]


def average_residual(
    masks_a: torch.Tensor | np.ndarray,
    masks_b: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
) -> np.ndarray:
    """Per-image AR between two models' masks of the same images.

    Args:
        masks_a: ``(B, h1, w1)`` mask_norm of model 1.
        masks_b: ``(B, h2, w2)`` mask_norm of model 2 (same images, same order).
        grid: ``(H, W)`` common grid, e.g. the model input size.

    Returns:
        float64 ``(B,)`` AR in [0, 1].
    """
    a = upsample_masks(masks_a, grid)
    b = upsample_masks(masks_b, grid)
    if a.shape != b.shape:
        raise ValueError(f"mask batches differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().mean(dim=(-2, -1)).double().numpy()


def pairwise_ar(
    masks: dict[str, torch.Tensor | np.ndarray], grid: tuple[int, int]
) -> dict[tuple[str, str], np.ndarray]:
    """AR for every unordered pair of models over the same batch of images.

    Each model's masks are upsampled once.

    Args:
        masks: model name -> ``(B, h, w)`` mask_norm; all for the same B images.
        grid: common ``(H, W)`` grid.

    Returns:
        ``{(m1, m2): (B,) AR}`` for ``m1 < m2`` in sorted order.
    """
    up = {name: upsample_masks(m, grid) for name, m in sorted(masks.items())}
    return {
        (m1, m2): (up[m1] - up[m2]).abs().mean(dim=(-2, -1)).double().numpy()
        for m1, m2 in itertools.combinations(up, 2)
    }
