"""A head's adaptive average pool folded into the linear layer after it (exact, faster).

VGG11's head average-pools its last map to 7 × 7 before the 25,088-wide first linear
layer, whatever the input size: at 96 px the map is 3 × 3, so the pool only copies each
value into several cells and the linear layer multiplies the copies. The pool and the
linear layer are both linear, so they fold into one linear layer over the small map
(``W' = W P``, ``P`` the pool's ``(h w) → (H W)`` matrix per channel): 5.4× fewer
multiply-adds at 96 px, in the forward and in the backward the gradient methods need.
The logits and gradients are the same up to float rounding (the sums run in another
order). A pool that shrinks the map (ResNet18's global average) is left as it is:
folding would widen the linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_average_pool"]


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules a nest of ``nn.Sequential`` runs, in order."""
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _leaves(child)]
    return [module]


def _pool_matrix(pool: nn.AdaptiveAvgPool2d, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``(h w, H W)``: row ``s`` is the pooled map of the one-hot map at position ``s``."""
    basis = torch.eye(h * w, dtype=like.dtype, device=like.device).reshape(h * w, 1, h, w)
    return pool(basis).flatten(1)


@torch.no_grad()
def fold_average_pool(rest: nn.Module, acts: torch.Tensor) -> nn.Module:
    """``rest`` with an upsampling ``AdaptiveAvgPool2d → Flatten → Linear`` folded.

    Args:
        rest: The network after a layer (``CityNet.split``), in eval mode.
        acts: ``(B, K, h, w)`` the layer's activations (only their shape is used, and one
            image of them to find the pool's input size).

    Returns:
        A module computing the same logits as ``rest`` (up to rounding), or ``rest``
        itself when it has no such pool, or the pool does not enlarge the map.
    """
    mods = _leaves(rest)
    at = next(
        (
            i
            for i in range(len(mods) - 2)
            if isinstance(mods[i], nn.AdaptiveAvgPool2d)
            and isinstance(mods[i + 1], nn.Flatten)
            and isinstance(mods[i + 2], nn.Linear)
        ),
        None,
    )
    if at is None:
        return rest
    before = nn.Sequential(*mods[:at])
    x = before(acts[:1].detach().float().clone())  # a module may work in place
    k, h, w = x.shape[1:]
    pool, linear = mods[at], mods[at + 2]
    p = _pool_matrix(pool, h, w, linear.weight)  # (h w, H W)
    if p.shape[0] >= p.shape[1] or linear.in_features != k * p.shape[1]:
        return rest
    weight = linear.weight.reshape(linear.out_features, k, p.shape[1])
    folded = nn.Linear(k * h * w, linear.out_features, bias=linear.bias is not None)
    folded = folded.to(device=linear.weight.device, dtype=linear.weight.dtype)
    folded.weight.copy_(torch.einsum("okq,sq->oks", weight, p).reshape(linear.out_features, -1))
    if linear.bias is not None:
        folded.bias.copy_(linear.bias)
    return nn.Sequential(*mods[:at], nn.Flatten(), folded, *mods[at + 3 :])
