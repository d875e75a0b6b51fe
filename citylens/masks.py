"""Weighted masks on other grids, and visual explanations at a threshold θ.

A mask_norm lives at the target layer's resolution (e.g. 14×14). To compare it with
another model's mask (AR) or with a label map (overlaps), it is upsampled bilinearly
(half-pixel centres, as OpenCV's and Grad-CAM's resizing) and re-normalised to [0, 1],
since interpolation need not reach the original extremes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from citylens.cam import normalize_masks

__all__ = ["explanation", "upsample_masks"]


def upsample_masks(masks: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample masks to ``size`` and re-normalise each to [0, 1].

    Args:
        masks: ``(B, h, w)`` or ``(h, w)`` masks in [0, 1].
        size: ``(H, W)`` target grid.

    Returns:
        float32 ``(B, H, W)`` (or ``(H, W)``) masks; an all-zero (empty) mask stays zero.
    """
    m = torch.as_tensor(masks, dtype=torch.float32)
    single = m.dim() == 2
    if single:
        m = m[None]
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    m, _ = normalize_masks(m)
    return m[0] if single else m


def explanation(
    masks: torch.Tensor | np.ndarray, size: tuple[int, int], theta: float
) -> torch.Tensor:
    """The visual explanation at θ: where the upsampled, re-normalised mask is ≥ θ.

    Args:
        masks: ``(B, h, w)`` or ``(h, w)`` mask_norm.
        size: ``(H, W)`` of the image or label map.
        theta: Threshold in (0, 1).

    Returns:
        bool ``(B, H, W)`` (or ``(H, W)``); an empty mask explains no pixel.
    """
    if not 0.0 < theta < 1.0:
        raise ValueError(f"theta must be in (0, 1), got {theta}")
    return upsample_masks(masks, size) >= theta
