"""CAM methods beyond Grad-CAM, at any of a model's named layers.

Every method maps the activations ``A`` ``(B, K, h, w)`` of the layer and, for the
gradient methods, the gradient ``g = ∂y^c/∂A`` of the target city's logit to a map
``L^c = ReLU(...)`` ``(B, h, w)``, normalised as Grad-CAM's is (mask_norm):

================  ==========================================================  ==========
method            L^c                                                          reference
================  ==========================================================  ==========
``gradcam``       ``Σ_k α_k A^k``, ``α_k = mean_ij g_kij``                     [1]
``gradcam++``     ``Σ_k w_k A^k``, ``w_k = Σ_ij a_kij ReLU(g_kij)``,           [2] eq. 19
                  ``a = g² / (2g² + (Σ_ij A^k) g³)`` (0 where ``g = 0``)
``hirescam``      ``Σ_k g^k ∘ A^k`` (element-wise: no spatial averaging)       [3]
``layercam``      ``Σ_k ReLU(g^k) ∘ A^k``                                      [4]
``xgradcam``      ``Σ_k w_k A^k``, ``w_k = Σ_ij g_kij A_kij / Σ_ij A_kij``      [5]
``scorecam``      ``Σ_k w_k A^k``, ``w = softmax_k(y^c(x ∘ up(A^k)))``         [6]
================  ==========================================================  ==========

Score-CAM needs no gradient but one forward pass per channel (``K`` per image: 512 for
VGG11 and ResNet18's last layer), so it is by far the slowest; its scores are the target
logit of the input masked by each channel's upsampled, min-max normalised map, with a
softmax over channels, as pytorch-grad-cam computes them. The small constants
(``1e-6``, ``1e-7``, ``1e-8``) are pytorch-grad-cam's, so the maps equal its maps.

[1] Selvaraju et al. 2017; [2] Chattopadhay et al. 2018; [3] Draelos & Carin 2020;
[4] Jiang et al. 2021; [5] Fu et al. 2020; [6] Wang et al. 2020.

The trunk — the network up to the layer (:meth:`CityNet.split`) — runs without
autograd; the gradient runs back through the rest only, with an average pool that
enlarges the map (VGG11's) folded into the linear layer after it
(:mod:`citylens.cam.fold`). Grad-CAM at the paper's layer
takes :func:`citylens.cam.gradcam.grad_cam`'s faster path (no spatial gradient at all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from citylens.cam.fold import fold_average_pool
from citylens.cam.gradcam import PRECISIONS, CamResult, eval_mode, grad_cam, normalize_masks

if TYPE_CHECKING:
    from citylens.models.base import CityNet

__all__ = ["GRADIENT_METHODS", "METHODS", "cam_map", "explain_batch", "mask_difference"]

GRADIENT_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam")
METHODS = (*GRADIENT_METHODS, "scorecam")


def cam_map(method: str, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    """``L^c`` of a gradient method from a layer's activations and gradients.

    Args:
        method: One of :data:`GRADIENT_METHODS`.
        acts: ``(B, K, h, w)`` activations ``A``.
        grads: ``(B, K, h, w)`` ``∂y^c/∂A`` of each image's target logit.

    Returns:
        ``(B, h, w)`` map, ≥ 0.
    """
    if method == "gradcam":
        weighted = grads.mean(dim=(2, 3))[:, :, None, None] * acts
    elif method == "gradcam++":
        g2 = grads * grads
        a = g2 / (2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads + 1e-6)
        a = torch.where(grads != 0, a, torch.zeros_like(a))
        weighted = (torch.relu(grads) * a).sum(dim=(2, 3))[:, :, None, None] * acts
    elif method == "hirescam":
        weighted = grads * acts
    elif method == "layercam":
        weighted = torch.relu(grads) * acts
    elif method == "xgradcam":
        w = (grads * acts).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + 1e-7)
        weighted = w[:, :, None, None] * acts
    else:
        raise ValueError(f"no gradient method {method!r}; methods: {', '.join(METHODS)}")
    return torch.relu(weighted.sum(dim=1))


def _targets(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    return logits.argmax(dim=1) if targets is None else targets.to(logits.device)


def _score_weights(
    rest, images: torch.Tensor, trunk, acts: torch.Tensor, target: torch.Tensor, batch: int
) -> torch.Tensor:
    """Score-CAM's channel weights ``(B, K)``.

    The softmax over channels of the target logit of each channel-masked input.
    """
    b, k = acts.shape[:2]
    up = F.interpolate(acts, size=images.shape[-2:], mode="bilinear", align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.min(dim=2).values, flat.max(dim=2).values
    up = (up - lo[:, :, None, None]) / (hi - lo + 1e-8)[:, :, None, None]
    scores = torch.empty(b, k, device=acts.device)
    for i in range(b):
        for j in range(0, k, batch):
            masked = images[i : i + 1] * up[i, j : j + batch, None]
            logits = rest(trunk(masked))
            scores[i, j : j + batch] = logits[:, target[i]].float()
    return torch.softmax(scores, dim=1)


def _folded_rest(model: CityNet, layer: str | None, rest, acts: torch.Tensor):
    """``rest`` with its average pool folded (:mod:`citylens.cam.fold`), cached per model.

    The cache is keyed by the layer, the activations' shape and the head's parameters
    (their storage and version), so a model whose weights change is folded again.
    """
    params = tuple((p.data_ptr(), p._version) for p in rest.parameters())
    key = (layer, tuple(acts.shape[1:]), str(acts.device), params)
    cache = model.__dict__.setdefault("_citylens_folded", {})
    if key not in cache:
        cache.clear()
        cache[key] = fold_average_pool(rest, acts)
    return cache[key]


def explain_batch(
    model: CityNet,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    precision: str = "fp32",
    score_batch: int = 64,
) -> CamResult:
    """A CAM method's explanations of one target class per image, at a named layer.

    Args:
        model: A CityNet; run in eval mode (and restored after).
        images: ``(B, 3, S, S)`` normalised images on the model's device.
        targets: ``(B,)`` class indices to explain; None explains the predicted class.
        method: One of :data:`METHODS`.
        layer: One of ``model.layers``; None: the paper's.
        precision: ``fp32``, ``bf16`` or ``fp16`` for the trunk (as :func:`grad_cam`).
        score_batch: Score-CAM's masked inputs per forward pass.

    Returns:
        A :class:`CamResult` (maps of the layer's ``h × w``; descriptors as Grad-CAM's).

    Raises:
        ValueError: an unknown method or layer (naming what there is).
    """
    if method not in METHODS:
        raise ValueError(f"no CAM method {method!r}; methods: {', '.join(METHODS)}")
    trunk, rest = model.split(layer)  # raises on an unknown layer
    if method == "gradcam" and trunk is model.features:
        return grad_cam(model, images, targets, precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    with eval_mode(model):
        with torch.no_grad(), torch.autocast(images.device.type, dtype, enabled=dtype is not None):
            acts = trunk(images)
        acts = acts.detach().float()
        rest = _folded_rest(model, layer, rest, acts)
        if method == "scorecam":
            with torch.no_grad():
                logits = rest(acts)
                target = _targets(logits, targets)
                weights = _score_weights(rest, images, trunk, acts, target, score_batch)
                cam = torch.relu(torch.einsum("bk,bkhw->bhw", weights, acts))
        else:
            acts.requires_grad_(True)
            with torch.enable_grad():
                logits = rest(acts)
                target = _targets(logits, targets)
                score = logits.gather(1, target[:, None]).sum()
                (grads,) = torch.autograd.grad(score, acts)
            acts = acts.detach()
            logits = logits.detach()
            cam = cam_map(method, acts, grads)
    with torch.no_grad():
        mask, empty = normalize_masks(cam)
        return CamResult(
            cam=cam,
            mask=mask,
            empty=empty,
            d_cam=cam.flatten(1),
            d_short=(cam * acts.sum(dim=1)).flatten(1),
            target=target,
            pred=logits.argmax(dim=1),
            probs=torch.softmax(logits.float(), dim=1),
        )


def mask_difference(
    model: CityNet,
    images: torch.Tensor,
    targets: torch.Tensor | None,
    precision: str,
    method: str = "gradcam",
    layer: str | None = None,
) -> float:
    """Mean absolute difference between ``precision``'s mask_norm and fp32's.

    The check is of the explanations a study makes: the same method at the same layer.

    Args:
        model: The model.
        images: ``(B, 3, S, S)`` normalised images on the model's device.
        targets: ``(B,)`` target classes, or None for the predictions.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        method: One of :data:`METHODS`.
        layer: One of ``model.layers``; None: the paper's.

    Returns:
        mean over images and locations of ``|mask_precision − mask_fp32|`` (0 for fp32).
    """
    if precision == "fp32":
        return 0.0
    ref = explain_batch(model, images, targets, method, layer).mask
    low = explain_batch(model, images, targets, method, layer, precision).mask
    return float((low - ref).abs().mean())
