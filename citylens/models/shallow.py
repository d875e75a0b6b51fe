"""Simple and Simpler: the paper's two shallow city classifiers (thesis Table 2).

Convolutions have no padding and stride 1, each is followed by a ReLU and a 2×2 max
pooling; then FC-4096, FC-100 and FC-classes (ReLU between). The target layer is the
last convolution's ReLU output, before the final pooling: 18×18 (Simple) and 42×42
(Simpler) at 224 px (``conv4`` / ``conv3``); the one before it is ``conv3`` / ``conv2``.
"""

from __future__ import annotations

from torch import nn

from citylens.models.base import CityNet, spatial_shape

__all__ = ["SIMPLE", "SIMPLER", "build_shallow"]

# (out_channels, kernel) per convolution.
SIMPLE: tuple[tuple[int, int], ...] = ((20, 5), (64, 7), (96, 5), (128, 7))
SIMPLER: tuple[tuple[int, int], ...] = ((20, 9), (64, 9), (96, 9))


def build_shallow(
    arch: str, convs: tuple[tuple[int, int], ...], num_classes: int, input_size: int
) -> CityNet:
    """Build a shallow net from its convolution list.

    Args:
        arch: Registry name (``"simple"`` or ``"simpler"``).
        convs: ``(out_channels, kernel)`` per convolution, in order.
        num_classes: Number of cities.
        input_size: Side of the square input; the first FC layer's width follows from it.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for i, (out_ch, k) in enumerate(convs):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(in_ch, out_ch, k), nn.ReLU(inplace=True)]
        in_ch = out_ch
    features = nn.Sequential(*layers)
    pool = nn.MaxPool2d(2)
    flat = spatial_shape(nn.Sequential(features, pool), 3, input_size, arch)
    head = nn.Sequential(
        pool,
        nn.Flatten(),
        nn.Linear(flat[0] * flat[1] * flat[2], 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, 100),
        nn.ReLU(inplace=True),
        nn.Linear(100, num_classes),
    )
    # the last two convolutions' ReLUs, named conv<i> (1-based)
    ends = [i + 1 for i, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    named = {f"conv{i + 1}": end for i, end in enumerate(ends)}
    return CityNet(arch, features, head, input_size, num_classes, dict(list(named.items())[-2:]))
