"""Model registry: ``build_model("vgg11", num_classes=2)``.

Every model is a :class:`~citylens.models.base.CityNet` exposing ``features`` (trunk up
to the Grad-CAM target layer), ``head`` and ``cam_size``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from citylens.errors import InputError
from citylens.models.base import CityNet, GeometryError
from citylens.models.shallow import SIMPLE, SIMPLER, build_shallow
from citylens.models.tv import build_resnet18, build_vgg11
from citylens.storage import read_bytes
from citylens.weights import load_tensors

__all__ = [
    "ARCHITECTURES",
    "CityNet",
    "GeometryError",
    "build_model",
    "load_state_dict",
]

_Builder = Callable[[int, int, "dict[str, torch.Tensor] | None"], CityNet]


def _shallow(arch: str, convs: tuple[tuple[int, int], ...]) -> _Builder:
    def build(num_classes: int, input_size: int, init: dict | None) -> CityNet:
        if init is not None:
            raise ValueError(f"{arch}: initial weights are only supported for torchvision models")
        return build_shallow(arch, convs, num_classes, input_size)

    return build


_REGISTRY: dict[str, _Builder] = {
    "vgg11": build_vgg11,
    "resnet18": build_resnet18,
    "simple": _shallow("simple", SIMPLE),
    "simpler": _shallow("simpler", SIMPLER),
}
ARCHITECTURES: tuple[str, ...] = tuple(_REGISTRY)


def load_state_dict(uri: str, storage_options: dict | None = None) -> dict[str, torch.Tensor]:
    """Load a state_dict from a path or URI, refusing pickled code (``weights_only=True``).

    Raises:
        UnsafeFileError: the file holds Python objects, not plain tensors.
        InputError: it is not a PyTorch file, or not a mapping of names to tensors.
    """
    state = load_tensors(read_bytes(uri, storage_options), uri)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"{uri}: expected a state_dict (names -> tensors), got {type(state).__name__}"
        )
    return state


def build_model(
    arch: str,
    num_classes: int,
    input_size: int = 224,
    init_weights: str | None = None,
    storage_options: dict | None = None,
) -> CityNet:
    """Build an untrained city classifier.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        num_classes: Number of cities (≥ 2).
        input_size: Side of the square input in pixels.
        init_weights: Optional path/URI of a torchvision-format state_dict to start from
            (VGG11, ResNet18 only). Nothing is ever downloaded.
        storage_options: fsspec options for an ``s3://`` ``init_weights``.

    Raises:
        ValueError: unknown architecture or bad weights; GeometryError: input too small.
    """
    if arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    init = load_state_dict(init_weights, storage_options) if init_weights else None
    return _REGISTRY[arch](num_classes, input_size, init)
