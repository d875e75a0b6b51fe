"""The model contract every citylens architecture satisfies.

A :class:`CityNet` is ``head(features(x))``. ``features`` ends at the Grad-CAM
*target layer* — the output of the last convolutional block before its final
pooling — so the Grad-CAM engine can run the trunk without autograd and take
gradients only with respect to the target layer's activations.

Each architecture also names the layers an explanation may be taken at
(:attr:`CityNet.layers`: the paper's, last, and the block before it, whose map is
twice as fine); :meth:`CityNet.split` cuts the network there into a trunk and the rest.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["CityNet", "GeometryError", "spatial_shape"]


class GeometryError(ValueError):
    """The input size does not fit the architecture's geometry."""


def spatial_shape(module: nn.Module, channels: int, size: int, arch: str) -> tuple[int, ...]:
    """Output shape of ``module`` for one ``channels × size × size`` input, without compute.

    Runs a structural copy on the ``meta`` device, so it costs no FLOPs.

    Returns:
        The output shape without the batch dimension, e.g. ``(512, 14, 14)``.

    Raises:
        GeometryError: if the input is too small for the module.
    """
    meta = copy.deepcopy(module).to("meta")
    try:
        out = meta(torch.empty(1, channels, size, size, device="meta"))
    except RuntimeError as err:
        raise GeometryError(
            f"{arch}: input size {size} px is too small for this architecture ({err})"
        ) from None
    if min(out.shape[2:], default=1) < 1:
        raise GeometryError(f"{arch}: input size {size} px leaves an empty feature map")
    return tuple(out.shape[1:])


class CityNet(nn.Module):
    """A city classifier split at its Grad-CAM target layer.

    Args:
        arch: Registry name, e.g. ``"vgg11"``.
        features: Trunk, ``(B, 3, S, S) -> (B, K, h, w)``; its output is the target layer.
        head: Rest of the network, ``(B, K, h, w) -> (B, num_classes)`` logits.
        input_size: Side ``S`` of the square input the model was built for.
        num_classes: Number of cities.
        layers: Layer name -> how many of ``features``' children (an ``nn.Sequential``)
            end at it, in order; the last is the paper's target layer (all of
            ``features``). Default: ``{"features": len(features)}``.
    """

    def __init__(
        self,
        arch: str,
        features: nn.Module,
        head: nn.Module,
        input_size: int,
        num_classes: int,
        layers: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.features = features
        self.head = head
        self.input_size = input_size
        self.num_classes = num_classes
        n = len(features) if isinstance(features, nn.Sequential) else 1
        self.layers: dict[str, int] = dict(layers or {"features": n})
        if list(self.layers.values())[-1] != n or sorted(self.layers.values()) != list(
            self.layers.values()
        ):
            raise ValueError(f"{arch}: layers {self.layers} must end at all {n} of features")
        self.target_layer = list(self.layers)[-1]  # the paper's
        shape = spatial_shape(features, 3, input_size, arch)
        self.target_channels = shape[0]
        self.cam_size: tuple[int, int] = (shape[1], shape[2])
        try:  # one image through the head: cheap, and catches a too-small final pooling
            with torch.no_grad():
                head(torch.zeros(1, *shape))
        except RuntimeError as err:
            raise GeometryError(
                f"{arch}: input size {input_size} px leaves a {shape[1]}x{shape[2]} target "
                f"layer, too small for the head ({err})"
            ) from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, 3, S, S)``."""
        return self.head(self.features(x))

    def split(self, layer: str | None = None) -> tuple[nn.Module, nn.Module]:
        """The network cut at a named layer: ``(trunk, rest)``, ``rest(trunk(x))`` = logits.

        Args:
            layer: One of :attr:`layers`; None: the paper's (``(features, head)``).

        Raises:
            ValueError: naming the layers this architecture has.
        """
        # "features": what checkpoints written before layers were named call the paper's
        if layer is None or layer in (self.target_layer, "features"):
            return self.features, self.head
        if layer not in self.layers:
            raise ValueError(
                f"{self.arch} has no layer {layer!r}; its layers: {', '.join(self.layers)}"
            )
        cut = self.layers[layer]
        return self.features[:cut], nn.Sequential(self.features[cut:], self.head)

    def map_sizes(self, input_size: int | None = None) -> dict[str, tuple[int, int]]:
        """Each named layer's map size ``(h, w)`` at ``input_size`` (default: the model's)."""
        size = input_size or self.input_size
        out = {}
        for name in self.layers:
            shape = spatial_shape(self.split(name)[0], 3, size, self.arch)
            out[name] = (shape[1], shape[2])
        return out
