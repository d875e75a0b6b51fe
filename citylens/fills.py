"""Fills: an image with the pixels of a mask replaced, every other pixel kept bit for bit.

Each removes something different, and each can add a cue of its own (the causal check
of :mod:`citylens.ablation` reads a model's loss against a control for that reason):

- ``mean``: the image's mean colour outside the mask. Removes shape, texture and colour;
  leaves a flat patch with a sharp edge, a cue no street photo has.
- ``blur``: a strong Gaussian blur of the image (σ = :data:`BLUR_SIGMA` px at the
  model's resolution), inside the mask only. Removes texture and detail but keeps the
  object's blurred colour and silhouette: it *under*-states what colour and shape are
  worth.
- ``inpaint``: a smooth fill from the mask's boundary inward (push-pull: the known pixels
  averaged over a pyramid, then diffused). Removes the object and continues its
  surroundings; a large mask becomes a smooth gradient, a mild cue of its own.

:data:`DEFAULT_FILL` is the one that changes natural image statistics least (measured
on real photos' objects by ``tests/test_fills.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "BLUR_SIGMA",
    "DEFAULT_FILL",
    "FILLS",
    "fill",
    "fill_blur",
    "fill_inpaint",
    "fill_mean",
    "gaussian_blur",
]

BLUR_SIGMA = 8.0  # px: wider than any texture of a 224-px street photo's objects


def _check(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
    return masks.to(torch.bool)


def _paste(images: torch.Tensor, masks: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``images`` with ``values`` inside ``masks`` (cast back to the images' dtype)."""
    if not images.dtype.is_floating_point:
        values = values.round().clamp(0, 255)
    return torch.where(masks[:, None], values.to(images.dtype), images)


def fill_mean(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each mask filled with its image's mean colour outside the mask.

    Args:
        images: ``(B, C, H, W)`` uint8 or float.
        masks: ``(B, H, W)`` bool, True where pixels are removed.

    Returns:
        ``(B, C, H, W)``, the images' dtype; a mask covering the whole image is filled
        with the whole image's mean.
    """
    masks = _check(images, masks)
    x = images.to(torch.float64)
    keep = (~masks)[:, None].to(x.dtype)
    n = keep.sum((2, 3))
    whole = x.mean((2, 3))
    mean = torch.where(n > 0, (x * keep).sum((2, 3)) / n.clamp(min=1), whole)
    return _paste(images, masks, mean[:, :, None, None].expand_as(x))


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, edges mirrored (``scipy.ndimage``'s ``reflect`` mode).

    Args:
        images: ``(B, C, H, W)``.
        sigma: Standard deviation in pixels; the kernel reaches 4σ.

    Returns:
        float64 ``(B, C, H, W)``.
    """
    x = images.to(torch.float64)
    k = _gaussian_kernel(sigma).to(x.device)
    r = (len(k) - 1) // 2
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    x = F.conv2d(_mirrored(x, r, 3), k.view(1, 1, 1, -1))
    x = F.conv2d(_mirrored(x, r, 2), k.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w)


def _mirrored(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """``x`` extended by ``pad`` on both sides of ``dim``, mirrored edge-inclusive.

    ``d c b a | a b c d | d c b a``, repeatedly when ``pad`` exceeds the size.
    """
    n = x.shape[dim]
    i = torch.arange(-pad, n + pad, device=x.device) % (2 * n)
    return x.index_select(dim, torch.where(i >= n, 2 * n - 1 - i, i))


def fill_blur(images: torch.Tensor, masks: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each mask filled with a Gaussian blur of its image.

    Args:
        images: ``(B, C, H, W)`` uint8 or float.
        masks: ``(B, H, W)`` bool, True where pixels are removed.
        sigma: The blur's standard deviation in pixels.

    Returns:
        ``(B, C, H, W)``, the images' dtype.
    """
    masks = _check(images, masks)
    return _paste(images, masks, gaussian_blur(images, sigma))


def fill_inpaint(images: torch.Tensor, masks: torch.Tensor, smooth: int = 8) -> torch.Tensor:
    """Each mask filled smoothly from its boundary inward (push-pull, then diffusion).

    The known pixels are averaged over a pyramid of halvings until every cell holds
    some; the fill is read back from the finest level that has a value, then smoothed
    by ``smooth`` rounds of 3×3 averaging inside the mask (the known pixels held).

    Args:
        images: ``(B, C, H, W)`` uint8 or float.
        masks: ``(B, H, W)`` bool, True where pixels are removed.
        smooth: Diffusion rounds after the pyramid fill.

    Returns:
        ``(B, C, H, W)``, the images' dtype; a mask covering the whole image is filled
        with the image's mean (there is no boundary to fill from).
    """
    masks = _check(images, masks)
    x = images.to(torch.float32)  # float32: pixel values ≤ 255, sums of ≤ 4 per level
    known = (~masks)[:, None].to(x.dtype)
    levels = [(x * known, known)]
    while levels[-1][0].shape[-1] > 1 or levels[-1][0].shape[-2] > 1:
        v, w = levels[-1]
        if bool((w > 0).all()):
            break
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = levels[-1]
    out = torch.where(w > 0, v / w.clamp(min=1e-12), x.mean((2, 3), keepdim=True).expand_as(v))
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(out, size=v.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.where(w > 0, v / w.clamp(min=1e-12), up)
    out = torch.where(masks[:, None], out, x)
    inside = masks[:, None]
    for _ in range(smooth):
        avg = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        out = torch.where(inside, avg, x)
    return _paste(images, masks, out)


FILLS = {"mean": fill_mean, "blur": fill_blur, "inpaint": fill_inpaint}
# The fill that changes natural image statistics least: on ADE20K photos' objects, the
# gradient histogram inside an inpainted object is nearest the rest of the photo's
# (tests/test_fills.py measures it; the mean fill is farthest).
DEFAULT_FILL = "inpaint"


def fill(images: torch.Tensor, masks: torch.Tensor, how: str) -> torch.Tensor:
    """Fill ``masks`` with one of :data:`FILLS` (see the module docstring)."""
    if how not in FILLS:
        raise ValueError(f"unknown fill {how!r}; choose from {', '.join(FILLS)}")
    return FILLS[how](images, masks)
