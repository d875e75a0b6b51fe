"""Grad-CAM for city classifiers, batched, with gradients only at the target layer.

For a batch of images and one target class ``c`` per image (Selvaraju et al. 2017,
thesis eqs. 1-4):

    α_k^c   = mean_ij ∂y^c / ∂A^k_ij
    L^c     = ReLU(Σ_k α_k^c A^k)                 (h, w)
    mask_norm = min-max of L^c per image           in [0, 1]
    D_cam   = L^c flattened                        (h·w,)
    D_short = Σ_k (L^c ∘ A^k) flattened             (h·w,)

The trunk (``model.features``) runs without autograd; no backward runs through the
trunk and no parameter ``.grad`` is ever written.

Only the spatial *sum* of ∂y^c/∂A^k enters the map. When the head begins with pooling
that keeps gradient sums (max pooling; average pooling dividing by what it covers), a
flatten and a linear layer ``W`` (``(n, K·p)``, ``p = h'·w'`` pooled positions) — as
VGG11, ResNet18, Simple and Simpler all do — that sum is linear in the gradient ``g``
``(B, n)`` at the linear layer's output:

    Σ_ij ∂y^c/∂A^k_ij = Σ_p (g W)[k, p] = (g W̄)[k],   W̄[:, k] = Σ_p W[:, k, p]

so α comes from ``g`` and the pooled ``W̄`` (``(n, K)``, cached per weight version)
without the ``(B, n) @ (n, K·p)`` product autograd would compute, as large as the head's
forward (Simpler: 42,336 → 4,096). Any other head takes ``torch.autograd.grad`` with
respect to the target-layer activations.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # importing the registry pulls in torchvision (~2 s per process)
    from citylens.models.base import CityNet

__all__ = ["PRECISIONS", "CamResult", "eval_mode", "grad_cam", "normalize_masks"]

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
            fp32 with :func:`citylens.cam.methods.mask_difference` before trusting a
            reduced precision.

    Returns:
        A :class:`CamResult` with tensors on the model's device (fp32 maps).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    with eval_mode(model):
        with torch.no_grad(), torch.autocast(images.device.type, dtype, enabled=dtype is not None):
            acts = model.features(images)
        acts = acts.detach().float()
        pooled = _pooled_head_gradient(model.head, acts, targets)
        if pooled is None:
            logits, target, alpha = _autograd_head_gradient(model.head, acts, targets)
        else:
            logits, target, alpha = pooled
    with torch.no_grad():
        pred = logits.argmax(dim=1)
        cam = torch.relu(torch.einsum("bk,bkhw->bhw", alpha, acts))
        mask, empty = normalize_masks(cam)
        d_short = cam * acts.sum(dim=1)
        probs = torch.softmax(logits.float(), dim=1)
    return CamResult(
        cam=cam,
        mask=mask,
        empty=empty,
        d_cam=cam.flatten(1),
        d_short=d_short.flatten(1),
        target=target,
        pred=pred,
        probs=probs,
    )


_HeadGradient = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # logits, target, alpha


def _scores(
    logits: torch.Tensor, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``(B,)`` and the summed target score for logits ``(B, C)``.

    Images are independent in eval mode, so the gradient of ``Σ_b y^{target_b}_b``
    gives every image's own gradient.
    """
    target = logits.argmax(dim=1) if targets is None else targets.to(logits.device, torch.long)
    return target, logits.gather(1, target[:, None]).sum()


def _autograd_head_gradient(
    head: nn.Module, acts: torch.Tensor, targets: torch.Tensor | None
) -> _HeadGradient:
    """Any head: α = spatial mean of ``torch.autograd.grad`` at ``acts`` ``(B, K, h, w)``."""
    acts = acts.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head(acts)
        target, score = _scores(logits, targets)
        (grads,) = torch.autograd.grad(score, acts)
    return logits.detach(), target, grads.mean(dim=(2, 3))


def _leaves(module: nn.Module) -> list[nn.Module]:
    """``module`` with nested ``nn.Sequential`` containers expanded, in call order."""
    if type(module) is nn.Sequential:
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def _keeps_gradient_sum(module: nn.Module, size: tuple[int, int]) -> bool:
    """True if ``module`` routes each output's gradient to inputs summing to it.

    Max pooling sends each output's gradient to its arg-max; average pooling spreads it
    in equal parts over the inputs its window covers, as long as the divisor counts only
    those (no counted padding, no divisor override). Windows may overlap.
    """
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices
    if isinstance(module, nn.AvgPool2d):
        unpadded = nn.modules.utils._pair(module.padding) == (0, 0)
        return module.divisor_override is None and (unpadded or not module.count_include_pad)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return all(n > 0 for n in size)
    return isinstance(module, nn.Identity)


# Pooled first-layer weights W̄ per linear layer, keyed by the weight's storage and version.
_POOLED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def pooled_weight(linear: nn.Linear, channels: int) -> torch.Tensor:
    """W̄ ``(n, K)``: ``linear.weight`` ``(n, K·p)`` summed over each channel's ``p`` inputs.

    Summed in float64 once per weight version (an optimiser step or ``load_state_dict``
    bumps it) and cached for the layer's lifetime.
    """
    w = linear.weight
    key = (w.data_ptr(), w._version, w.device, w.dtype, channels)
    hit = _POOLED.get(linear)
    if hit is not None and hit[0] == key:
        return hit[1]
    out = w.detach().double().view(w.shape[0], channels, -1).sum(dim=2).to(w.dtype)
    _POOLED[linear] = (key, out)
    return out


def _pooled_head_gradient(
    head: nn.Module, acts: torch.Tensor, targets: torch.Tensor | None
) -> _HeadGradient | None:
    """α from the gradient at the head's first linear layer (module docstring).

    Returns ``None`` when the head does not start with sum-keeping pooling, a flatten
    and a linear layer; the caller then takes the autograd path.
    """
    layers = _leaves(head)
    at = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten)), None)
    if at is None or at + 1 >= len(layers) or not isinstance(layers[at + 1], nn.Linear):
        return None
    flatten, linear, rest = layers[at], layers[at + 1], layers[at + 2 :]
    z = acts
    with torch.no_grad():
        for layer in layers[:at]:
            if not _keeps_gradient_sum(layer, tuple(z.shape[2:])):
                return None
            z = layer(z)
        if (
            (flatten.start_dim, flatten.end_dim) != (1, -1)
            or z.dim() != 4
            or linear.in_features != z[0].numel()
        ):
            return None
        hidden = linear(z.flatten(1)).requires_grad_(True)
    with torch.enable_grad():
        # a clone, because the rest may begin with an in-place ReLU, refused on a leaf
        logits = hidden.clone()
        for layer in rest:
            logits = layer(logits)
        target, score = _scores(logits, targets)
        (g,) = torch.autograd.grad(score, hidden)
    h, w = acts.shape[2:]
    alpha = (g @ pooled_weight(linear, acts.shape[1])) / (h * w)
    return logits.detach(), target, alpha
