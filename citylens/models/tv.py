"""VGG11 and ResNet18 from torchvision, split at their Grad-CAM target layers.

VGG11's target layer is the ReLU after its last convolution (before the final max
pooling): 14×14 at 224 px (``block5``; ``block4``, the ReLU before the fourth pooling,
is 28×28). ResNet18's is the output of ``layer4``: 7×7 at 224 px (``layer3``: 14×14).
"""

from __future__ import annotations

import torch
from torch import nn

from citylens.models.base import CityNet

__all__ = ["build_resnet18", "build_vgg11", "load_torchvision_weights"]


def load_torchvision_weights(model: nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """Load a torchvision-format state_dict (e.g. ImageNet weights) into ``model``.

    The final classification layer is skipped when its shape differs (ImageNet's 1000
    classes vs the study's cities); every other key must match exactly.

    Raises:
        ValueError: listing missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head_keys = {"fc.weight", "fc.bias", "classifier.6.weight", "classifier.6.bias"}
    bad_shapes = [k for k in skipped if k not in head_keys]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"{arch}: initial weights do not match torchvision's {arch}: "
            f"missing={missing[:10]} unexpected={unexpected[:10]} wrong_shape={bad_shapes[:10]}"
        )
    model.load_state_dict(state, strict=False)


def build_vgg11(
    num_classes: int, input_size: int, init: dict[str, torch.Tensor] | None = None
) -> CityNet:
    """Torchvision VGG11 (no batch norm) with ``num_classes`` outputs."""
    import torchvision  # here, not at import: it costs ~2 s in every process that loads it

    net = torchvision.models.vgg11(weights=None, num_classes=num_classes)
    if init is not None:
        load_torchvision_weights(net, init, "vgg11")
    convs = list(net.features.children())
    features = nn.Sequential(*convs[:-1])  # keys features.N.* match torchvision's
    head = nn.Sequential(convs[-1], net.avgpool, nn.Flatten(), net.classifier)
    # the ReLUs after the last convolution of blocks 4 and 5 (before their max pooling)
    layers = {"block4": 15, "block5": 20}
    return CityNet("vgg11", features, head, input_size, num_classes, layers)


def build_resnet18(
    num_classes: int, input_size: int, init: dict[str, torch.Tensor] | None = None
) -> CityNet:
    """Torchvision ResNet18 with ``num_classes`` outputs."""
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if init is not None:
        load_torchvision_weights(net, init, "resnet18")
    features = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    layers = {"layer3": 7, "layer4": 8}
    return CityNet("resnet18", features, head, input_size, num_classes, layers)
