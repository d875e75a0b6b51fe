"""Model segmenters: CSAIL's ADE20K networks behind the segmenter protocol.

Inference follows CSAIL's test script: for each test scale the image is resized
(antialiased bilinear) so its short side is that scale, its long side at most ``max_size``, both
rounded up to a multiple of 8; ImageNet-normalised; the logits are upsampled to the
original size and softmaxed; the softmax maps of all scales are averaged and the argmax
taken. Output channel ``k - 1`` is ADE20K class ``k``, so class maps hold 1..150.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict

import numpy as np
import torch
from torch.nn import functional as F

from citylens.data.images import IMAGENET_MEAN, IMAGENET_STD
from citylens.segment.csail import build_csail, load_csail_state
from citylens.storage import filesystem, read_bytes
from citylens.vocabulary import Vocabulary, ade20k
from citylens.weights import load_tensors

__all__ = [
    "CSAIL_SCALES",
    "CsailSegmenter",
    "PPMSegmenter",
    "UPerNetSegmenter",
    "check_csail_weights",
    "find_csail_weights",
    "scale_sizes",
    "weights_fingerprint",
]

CSAIL_SCALES = (300, 375, 450, 525, 600)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_PROB_BYTES = 1 << 30  # per-chunk budget for the (B, C, H, W) probability maps
_RANDOM = re.compile(r"^random(?::(\d+))?$")


def scale_sizes(
    height: int, width: int, scales=CSAIL_SCALES, max_size: int = 1000, multiple: int = 8
) -> list[tuple[int, int]]:
    """Network input sizes for one image, one per test scale (CSAIL's rule).

    Args:
        height: Original image height.
        width: Original image width.
        scales: Target short sides.
        max_size: Cap on the long side.
        multiple: Sizes are rounded *up* to a multiple of this.

    Returns:
        ``[(h, w), ...]`` in the order of ``scales``.
    """
    out = []
    for short in scales:
        s = min(short / min(height, width), max_size / max(height, width))
        h, w = int(height * s), int(width * s)
        out.append((((h - 1) // multiple + 1) * multiple, ((w - 1) // multiple + 1) * multiple))
    return out


def find_csail_weights(uri: str, storage_options: dict | None = None) -> tuple[str, str]:
    """The encoder and decoder files of a CSAIL model folder (path or URI).

    The folder holds ``encoder_epoch_N.pth`` and ``decoder_epoch_N.pth`` as published;
    the highest epoch present for both is taken.

    Raises:
        FileNotFoundError: naming the folder and what it lacks.
    """
    fs, root = filesystem(uri, storage_options)
    if not fs.isdir(root):
        raise FileNotFoundError(f"segmenter weights {uri}: not a folder")
    epochs: dict[str, dict[int, str]] = {"encoder": {}, "decoder": {}}
    for path in fs.ls(root, detail=False):
        m = re.search(r"(encoder|decoder)_epoch_(\d+)\.pth$", path)
        if m:
            epochs[m[1]][int(m[2])] = path
    common = set(epochs["encoder"]) & set(epochs["decoder"])
    if not common:
        raise FileNotFoundError(
            f"segmenter weights {uri}: expected encoder_epoch_N.pth and decoder_epoch_N.pth "
            f"(CSAIL's published layout); found {sorted(fs.ls(root, detail=False))[:10]}"
        )
    n = max(common)
    base = uri.rstrip("/")
    return f"{base}/encoder_epoch_{n}.pth", f"{base}/decoder_epoch_{n}.pth"


def weights_fingerprint(uri: str, storage_options: dict | None = None) -> dict:
    """What identifies a weights folder's content cheaply: size and mtime/ETag per file.

    ``random[:SEED]`` fingerprints as itself. Used in the segment stage's key so that
    replacing the files at the same URI re-runs segmentation.
    """
    if _RANDOM.match(uri):
        return {"weights": uri}
    fs, _ = filesystem(uri, storage_options)
    out = {}
    for path in find_csail_weights(uri, storage_options):
        info = fs.info(filesystem(path, storage_options)[1])
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        out[path.rsplit("/", 1)[1]] = [int(info.get("size") or 0), str(stamp)]
    return out


def _load_state(uri: str, storage_options: dict | None) -> dict:
    return load_tensors(read_bytes(uri, storage_options), uri)


def check_csail_weights(name: str, uri: str, storage_options: dict | None = None) -> None:
    """Check a weights folder before any work.

    Both files must load as plain tensors (``weights_only``) and fit network ``name`` key
    for key, shape for shape. The network is built on the meta device, so this costs the
    files' reading only.

    Raises:
        FileNotFoundError: the folder lacks the files.
        UnsafeFileError: a file holds Python objects, not plain tensors.
        WeightsMismatch: keys or shapes differ (all listed).
    """
    with torch.device("meta"):
        net = build_csail(name)
    for part, file in zip((net.encoder, net.decoder), find_csail_weights(uri, storage_options)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # copying into meta: a no-op
            load_csail_state(part, _load_state(file, storage_options), file)


class CsailSegmenter:
    """A CSAIL ADE20K network as a segmenter.

    Args:
        weights: Folder (path or URI) with ``encoder_epoch_N.pth`` /
            ``decoder_epoch_N.pth``, or ``random`` / ``random:SEED`` for freshly
            initialised weights (shape checks and benchmarks only — its labels mean
            nothing).
        classes: Class-file text; must name 150 classes (the networks' outputs).
        scales: Test short sides; one entry = single-scale.
        max_size: Cap on the long side at any scale.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; GPU only — on CPU fp32).
        batch_size: Images per forward pass (further limited by a memory budget).
        device: ``cuda`` when available, else ``cpu``, unless given.
        storage_options: fsspec options for reading ``weights``.
    """

    name = "csail"
    input_kind = "image"

    def __init__(
        self,
        weights: str | None = None,
        classes: str | None = None,
        scales=CSAIL_SCALES,
        max_size: int = 1000,
        precision: str = "fp32",
        batch_size: int = 8,
        device: str | None = None,
        storage_options: dict | None = None,
        **_: object,
    ) -> None:
        self.vocabulary = self.default_vocabulary(classes)
        if weights is None:
            raise ValueError(
                f"segmenter {self.name!r} needs weights: a folder with CSAIL's "
                "encoder_epoch_N.pth and decoder_epoch_N.pth, or 'random' for a shape test"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.scales, self.max_size = tuple(int(s) for s in scales), int(max_size)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = PRECISIONS[precision] if self.device.type == "cuda" else torch.float32
        if (m := _RANDOM.match(weights)) is not None:
            torch.manual_seed(int(m[1] or 0))
            self.net = build_csail(self.name)
        else:
            self.net = build_csail(self.name)
            enc_uri, dec_uri = find_csail_weights(weights, storage_options)
            load_csail_state(self.net.encoder, _load_state(enc_uri, storage_options), enc_uri)
            load_csail_state(self.net.decoder, _load_state(dec_uri, storage_options), dec_uri)
        self.net.eval().to(self.device, memory_format=torch.channels_last)

    @classmethod
    def default_vocabulary(cls, classes: str | None = None) -> Vocabulary:
        """ADE20K's 150 classes, or a class file naming 150 classes in output order."""
        if classes is None:
            return ade20k()
        vocab = Vocabulary.from_csv(classes, "classes")
        if len(vocab) != 151:
            raise ValueError(
                f"segmenter {cls.name!r} outputs 150 classes; the class file names {len(vocab) - 1}"
            )
        return vocab

    def _inputs(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` on the device -> normalised float ``(B, 3, h, w)``.

        Antialiased bilinear resize (PIL's filter, as CSAIL's test used, up to PIL's
        rounding to uint8), on the device so a GPU does the work.
        """
        x = images.float()
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray]) -> torch.Tensor:
        """Scale-averaged class probabilities for images of one size.

        Args:
            images: uint8 ``(H, W, 3)`` arrays, all the same size.

        Returns:
            float32 ``(B, 150, H, W)`` on the segmenter's device.
        """
        h, w = images[0].shape[:2]
        sizes = scale_sizes(h, w, self.scales, self.max_size)
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2)
        probs = torch.zeros(len(images), 150, h, w, device=self.device)
        autocast = torch.autocast("cuda", self.dtype, enabled=self.dtype != torch.float32)
        for size in sizes:
            with autocast:
                probs += self.net(self._inputs(batch, size), (h, w)) / len(sizes)
        return probs

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Class maps (values 1..150) at each image's own resolution.

        Args:
            inputs: uint8 ``(H, W, 3)`` images of any sizes.

        Returns:
            int32 ``(H, W)`` class maps, in input order.
        """
        out: list[np.ndarray | None] = [None] * len(inputs)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(inputs):
            by_size[img.shape[:2]].append(i)
        for (h, w), idx in by_size.items():
            step = max(1, min(self.batch_size, _PROB_BYTES // (150 * h * w * 4)))
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                labels = self.probabilities([inputs[i] for i in chunk]).argmax(1) + 1
                for i, lab in zip(chunk, labels.to(torch.int32).cpu().numpy()):
                    out[i] = lab
        return out  # type: ignore[return-value]


class PPMSegmenter(CsailSegmenter):
    """``ade20k-ppm``: ResNet50-dilated + PPM_deepsup, the model the paper used."""

    name = "ade20k-ppm"


class UPerNetSegmenter(CsailSegmenter):
    """``ade20k-upernet``: ResNet-50 + UPerNet from the same CSAIL model zoo."""

    name = "ade20k-upernet"
