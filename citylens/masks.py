"""Weighted masks on other grids, and visual explanations at a threshold θ.

A mask_norm lives at the target layer's resolution (e.g. 14×14). To compare it with
another model's mask (AR) or with a label map (overlaps), it is upsampled bilinearly
(half-pixel centres, as OpenCV's and Grad-CAM's resizing) and re-normalised to [0, 1],
since interpolation need not reach the original extremes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from citylens.cam import normalize_masks

__all__ = ["bilinear_matrix", "constant_positive", "explanation", "upsample_masks"]


def constant_positive(masks: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: masks whose every value is the same positive number.

    To float32 precision, as :func:`citylens.cam.normalize_masks` decides: every
    location is equally important, on any grid.
    """
    lo, hi = torch.aminmax(masks.flatten(1), dim=1)
    return (hi > 0) & (hi - lo <= torch.finfo(masks.dtype).eps * hi.abs())


@functools.lru_cache(maxsize=64)
def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D bilinear resizing with half-pixel centres.

    Row ``i`` holds the weights of output sample ``i``: its source coordinate is
    ``(i + 0.5) · n_in / n_out − 0.5`` (clamped at 0), split between the two nearest
    inputs — ``F.interpolate(mode="bilinear", align_corners=False)`` along one axis. A 2-D
    resize is ``R_h @ m @ R_w.T``: two small matrix products instead of a gather per
    output pixel.
    """
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1.0 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.float()


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
    h, w = m.shape[-2:]
    if (h, w) != tuple(size):
        flat = constant_positive(m)
        m = bilinear_matrix(h, size[0]) @ m @ bilinear_matrix(w, size[1]).T
        m, _ = normalize_masks(m)
        m[flat] = 1.0  # rounding in the resize must not turn a constant mask into noise
    else:
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
