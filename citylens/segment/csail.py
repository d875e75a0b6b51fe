"""CSAIL's ADE20K scene-parsing networks, built in citylens.

The paper labels explanations with the MIT CSAIL model "ResNet50-dilated + PPM_deepsup"
(Zhou et al., *Scene Parsing through ADE20K*, CVPR 2017). This module rebuilds that
network — and the UPerNet-50 variant of the same model zoo — so that the published
``encoder_epoch_20.pth`` / ``decoder_epoch_20.pth`` state_dicts load with **strict** key
and shape matching (:func:`load_csail_state`), never the silent ``strict=False`` of the
original code.

Encoder: ResNet-50 with the "deep stem" (three 3×3 convolutions 3→64→64→128 instead of
one 7×7), optionally dilated to output stride 8 (layer3 dilation 2, layer4 dilation 4,
no stride in either). Decoders take the four stage outputs and return class logits at
the encoder's resolution; channel ``k - 1`` is ADE20K class ``k``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ARCHITECTURES",
    "CsailSegmentationNet",
    "DeepStemResNet50",
    "PPMDeepSup",
    "UPerNet",
    "WeightsMismatch",
    "build_csail",
    "load_csail_state",
]


# Buffers a checkpoint may lack: BatchNorm's step counter (added in PyTorch 0.4.1) and
# the training-time accumulators of CSAIL's synchronised BatchNorm. Inference reads none.
_OPTIONAL_BUFFERS = (
    "num_batches_tracked",
    "_tmp_running_mean",
    "_tmp_running_var",
    "_running_iter",
)


class CsailBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with the extra buffers of CSAIL's ``SynchronizedBatchNorm2d``.

    CSAIL trained with a synchronised BatchNorm whose state_dict also holds
    ``_tmp_running_mean``, ``_tmp_running_var`` and ``_running_iter`` (multi-GPU
    statistic accumulators). They are kept so checkpoint keys match exactly; in
    evaluation the layer is a plain BatchNorm over ``running_mean`` / ``running_var``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.register_buffer("_tmp_running_mean", torch.zeros(num_features))
        self.register_buffer("_tmp_running_var", torch.ones(num_features))
        self.register_buffer("_running_iter", torch.ones(1))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU; state_dict keys ``0.weight``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        CsailBatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DeepStemResNet50(nn.Module):
    """CSAIL's ResNet-50 trunk (deep stem, no classifier), plain or dilated.

    Args:
        dilated: Output stride 8 (layer3/layer4 dilated 2/4) instead of 32.

    Forward:
        ``(B, 3, H, W)`` normalised images -> four stage outputs with 256, 512, 1024,
        2048 channels at strides 4, 8, 16 (8 if dilated), 32 (8 if dilated).
    """

    def __init__(self, dilated: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = CsailBatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = CsailBatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = CsailBatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes, self._dilation = 128, 1
        self.layer1 = self._make_layer(64, 3, stride=1, dilate=False)
        self.layer2 = self._make_layer(128, 4, stride=2, dilate=False)
        self.layer3 = self._make_layer(256, 6, stride=2, dilate=dilated)
        self.layer4 = self._make_layer(512, 3, stride=2, dilate=dilated)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        from torchvision.models.resnet import Bottleneck  # torchvision costs ~2 s to import

        # Dilating a stage trades its stride for dilation: the first block keeps the
        # previous dilation, the others use the new one (CSAIL's _nostride_dilate).
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * 4, 1, stride=stride, bias=False),
                CsailBatchNorm2d(planes * 4),
            )
        bn = CsailBatchNorm2d
        layers = [
            Bottleneck(self._inplanes, planes, stride, downsample, dilation=previous, norm_layer=bn)
        ]
        self._inplanes = planes * Bottleneck.expansion
        layers += [
            Bottleneck(self._inplanes, planes, dilation=self._dilation, norm_layer=bn)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, 3, H, W)`` -> the four stages' feature maps, strides 4 to 8 (dilated) or 32."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PPMDeepSup(nn.Module):
    """Pyramid pooling decoder (scales 1, 2, 3, 6) with CSAIL's deep-supervision head.

    The deep-supervision branch (``cbr_deepsup``, ``conv_last_deepsup``) only trains;
    it is kept so the published state_dict matches, and never runs here.

    Forward:
        stage outputs -> ``(B, num_classes, h, w)`` logits at the last stage's grid.
    """

    def __init__(
        self, num_classes: int = 150, fc_dim: int = 2048, pool_scales=(1, 2, 3, 6)
    ) -> None:
        super().__init__()
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), *_conv_bn_relu(fc_dim, 512, 1))
            for s in pool_scales
        )
        self.cbr_deepsup = _conv_bn_relu(fc_dim // 2, fc_dim // 4)
        self.conv_last = nn.Sequential(
            *_conv_bn_relu(fc_dim + len(pool_scales) * 512, 512),
            nn.Dropout2d(0.1),
            nn.Conv2d(512, num_classes, 1),
        )
        self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_classes, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """The encoder's features -> ``(B, C, h, w)`` class logits at the last stage's grid."""
        top = feats[-1]
        pooled = [top] + [_resize(branch(top), top.shape[2:]) for branch in self.ppm]
        return self.conv_last(torch.cat(pooled, 1))


class UPerNet(nn.Module):
    """UPerNet decoder (PPM on the last stage + FPN over all four), as in CSAIL's zoo.

    Unlike :class:`PPMDeepSup`, each pyramid branch convolves *after* upsampling
    (CSAIL's ordering, kept so the published weights mean the same thing).

    Forward:
        stage outputs -> ``(B, num_classes, h, w)`` logits at the first stage's grid.
    """

    def __init__(
        self,
        num_classes: int = 150,
        fc_dim: int = 2048,
        pool_scales=(1, 2, 3, 6),
        fpn_inplanes=(256, 512, 1024, 2048),
        fpn_dim: int = 512,
    ) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.ppm_conv = nn.ModuleList(_conv_bn_relu(fc_dim, 512, 1) for _ in pool_scales)
        self.ppm_last_conv = _conv_bn_relu(fc_dim + len(pool_scales) * 512, fpn_dim)
        self.fpn_in = nn.ModuleList(_conv_bn_relu(c, fpn_dim, 1) for c in fpn_inplanes[:-1])
        self.fpn_out = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(fpn_dim, fpn_dim)) for _ in fpn_inplanes[:-1]
        )
        self.conv_last = nn.Sequential(
            _conv_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim),
            nn.Conv2d(fpn_dim, num_classes, 1),
        )

    def forward(self, feats: list[Tensor]) -> Tensor:
        """The encoder's features -> ``(B, C, h, w)`` class logits at the first stage's grid."""
        top = feats[-1]
        size = top.shape[2:]
        pyramid = [top] + [
            conv(_resize(F.adaptive_avg_pool2d(top, s), size))
            for s, conv in zip(self.pool_scales, self.ppm_conv)
        ]
        f = self.ppm_last_conv(torch.cat(pyramid, 1))
        levels = [f]
        for i in reversed(range(len(feats) - 1)):
            lateral = self.fpn_in[i](feats[i])
            f = lateral + _resize(f, lateral.shape[2:])
            levels.append(self.fpn_out[i](f))
        levels.reverse()
        size = levels[0].shape[2:]
        fused = torch.cat([levels[0]] + [_resize(x, size) for x in levels[1:]], 1)
        return self.conv_last(fused)


class CsailSegmentationNet(nn.Module):
    """Encoder + decoder; class probabilities at a requested output size.

    Forward:
        ``(B, 3, H, W)`` ImageNet-normalised images, output ``size`` -> ``(B, C, *size)``
        softmax probabilities (bilinear upsampling of the logits, then softmax —
        CSAIL's inference path).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def logits(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, h, w)`` logits at the decoder's grid."""
        return self.decoder(self.encoder(images))

    def forward(self, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, *size)`` class probabilities (default: the input's size)."""
        logits = self.logits(images)
        return F.softmax(_resize(logits, size or images.shape[2:]).float(), dim=1)


ARCHITECTURES = {
    # name: (dilated encoder, decoder class, CSAIL model-zoo folder)
    "ade20k-ppm": (True, PPMDeepSup, "ade20k-resnet50dilated-ppm_deepsup"),
    "ade20k-upernet": (False, UPerNet, "ade20k-resnet50-upernet"),
}


def build_csail(name: str, num_classes: int = 150) -> CsailSegmentationNet:
    """Build an architecture of :data:`ARCHITECTURES` with freshly initialised weights."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown CSAIL architecture {name!r}; choose from {list(ARCHITECTURES)}")
    dilated, decoder_cls, _ = ARCHITECTURES[name]
    return CsailSegmentationNet(DeepStemResNet50(dilated), decoder_cls(num_classes=num_classes))


class WeightsMismatch(ValueError):
    """A state_dict whose keys or shapes do not match the module (lists all of them)."""


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_csail_state(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """Load a CSAIL state_dict with strict key and shape matching.

    Only BatchNorm bookkeeping buffers that inference never reads may be absent
    (``num_batches_tracked``, added in PyTorch 0.4.1, and the synchronised-BN
    accumulators); they keep their defaults. A ``module.`` prefix (DataParallel) is
    removed.

    Args:
        module: The encoder or decoder.
        state: The checkpoint's state_dict.
        what: The file it came from, for the error message.

    Raises:
        WeightsMismatch: listing every missing key, unexpected key and shape mismatch.
    """
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsMismatch(f"{what}: not a state_dict of tensors")
    state = _strip_prefix(dict(state), "module.")
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_BUFFERS)]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                shown = ", ".join(items[:20]) + (
                    f", … ({len(items)} in all)" if len(items) > 20 else ""
                )
                parts.append(f"{label} keys: {shown}")
        raise WeightsMismatch(f"{what} does not match {type(module).__name__}: " + "; ".join(parts))
    for k in own:
        if k not in state:  # an optional buffer: keep the module's default
            state[k] = own[k]
    module.load_state_dict(state, strict=True)
