"""Grad-CAM for city classifiers, batched, with gradients only at the target layer.

For a batch of images and one target class ``c`` per image (Selvaraju et al. 2017,
thesis eqs. 1-4):

    α_k^c   = mean_ij ∂y^c / ∂A^k_ij
    L^c     = ReLU(Σ_k α_k^c A^k)                 (h, w)
    mask_norm = min-max of L^c per image           in [0, 1]
    D_cam   = L^c flattened                        (h·w,)
    D_short = Σ_k (L^c ∘ A^k) flattened             (h·w,)

The trunk (``model.features``) runs without autograd; the gradient is taken with
``torch.autograd.grad`` with respect to the target-layer activations only, so no
backward runs through the trunk and no parameter ``.grad`` is ever written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # importing the registry pulls in torchvision (~2 s per process)
    from citylens.models.base import CityNet

__all__ = ["PRECISIONS", "CamResult", "eval_mode", "grad_cam", "mask_difference", "normalize_masks"]

# Autocast dtype of the trunk per precision name (None: plain fp32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CamResult:
    """Grad-CAM outputs for a batch of ``B`` images at a target layer of ``h × w``.

    Attributes:
        cam: ``(B, h, w)`` raw localisation map L^c (≥ 0).
        mask: ``(B, h, w)`` mask_norm, L^c min-max normalised to [0, 1]; zeros if empty.
        empty: ``(B,)`` bool, True where ReLU left nothing (L^c ≡ 0).
        d_cam: ``(B, h·w)`` descriptor D_cam.
        d_short: ``(B, h·w)`` descriptor D_short.
        target: ``(B,)`` class index explained.
        pred: ``(B,)`` predicted class index.
        probs: ``(B, C)`` softmax probabilities.
    """

    cam: torch.Tensor
    mask: torch.Tensor
    empty: torch.Tensor
    d_cam: torch.Tensor
    d_short: torch.Tensor
    target: torch.Tensor
    pred: torch.Tensor
    probs: torch.Tensor


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def normalize_masks(cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each map of a batch to [0, 1], never producing NaN.

    Args:
        cam: ``(B, ...)`` non-negative maps.

    Returns:
        ``(mask, empty)``: ``mask`` has ``cam``'s shape; ``empty`` is ``(B,)`` bool.
        A map that is all zero is *empty* and normalises to zeros. A map that is constant
        and positive (every location equally important) normalises to ones.
    """
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    span = hi - lo
    empty = hi <= 0
    flat_pos = (span <= torch.finfo(cam.dtype).eps * hi.abs()) & ~empty
    shape = (-1,) + (1,) * (cam.dim() - 1)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    mask = (cam - lo.view(shape)) / safe.view(shape)
    mask = torch.where(empty.view(shape), torch.zeros_like(mask), mask)
    mask = torch.where(flat_pos.view(shape), torch.ones_like(mask), mask)
    return mask.clamp_(0.0, 1.0), empty


def grad_cam(
    model: CityNet,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    precision: str = "fp32",
) -> CamResult:
    """Grad-CAM for one target class per image.

    Args:
        model: A CityNet; it is run in eval mode (and restored after).
        images: ``(B, 3, S, S)`` normalised images on the model's device.
        targets: ``(B,)`` class indices to explain; ``None`` explains the predicted class.
        precision: ``fp32``, or ``bf16`` / ``fp16``: the trunk (nearly all the work) runs
            under autocast in that dtype; its activations are cast back to fp32, so the
            head, the gradient and the map are computed in fp32. Check the maps against
            fp32 with :func:`mask_difference` before trusting a reduced precision.

    Returns:
        A :class:`CamResult` with tensors on the model's device (fp32 maps).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    with eval_mode(model):
        with torch.no_grad(), torch.autocast(images.device.type, dtype, enabled=dtype is not None):
            acts = model.features(images)
        acts = acts.detach().float().requires_grad_(True)
        with torch.enable_grad():
            logits = model.head(acts)
            pred = logits.argmax(dim=1)
            target = pred if targets is None else targets.to(logits.device, torch.long)
            # Images are independent in eval mode, so the gradient of the summed target
            # scores with respect to A gives every image's own ∂y^c/∂A.
            score = logits.gather(1, target[:, None]).sum()
            (grads,) = torch.autograd.grad(score, acts)
    with torch.no_grad():
        acts = acts.detach()
        alpha = grads.mean(dim=(2, 3))  # (B, K)
        cam = torch.relu(torch.einsum("bk,bkhw->bhw", alpha, acts))
        mask, empty = normalize_masks(cam)
        d_short = cam * acts.sum(dim=1)
        probs = torch.softmax(logits.detach().float(), dim=1)
    return CamResult(
        cam=cam,
        mask=mask,
        empty=empty,
        d_cam=cam.flatten(1),
        d_short=d_short.flatten(1),
        target=target.detach(),
        pred=pred.detach(),
        probs=probs,
    )


def mask_difference(
    model: CityNet, images: torch.Tensor, targets: torch.Tensor | None, precision: str
) -> float:
    """Mean absolute difference between ``precision``'s mask_norm and fp32's.

    Args:
        images: ``(B, 3, S, S)`` normalised images on the model's device.

    Returns:
        mean over images and locations of ``|mask_precision − mask_fp32|`` (0 for fp32).
    """
    if precision == "fp32":
        return 0.0
    ref = grad_cam(model, images, targets).mask
    low = grad_cam(model, images, targets, precision).mask
    return float((low - ref).abs().mean())
