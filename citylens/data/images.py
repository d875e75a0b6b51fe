"""Decoding street images into model inputs.

Plain 8-bit RGB or grayscale JPEGs and PNGs — nearly every street photo — are decoded
by ``torchvision.io`` (libjpeg-turbo / libpng, the same pixels as Pillow, ~1.7× faster)
and resized on the tensor (~5× faster than Pillow's resize, within 1 grey level of it);
everything else (alpha, palette, CMYK, 16-bit, WebP, files Pillow must judge) goes
through Pillow. ``bench/decode.py`` measures both.

Every image becomes RGB (alpha over white, grayscale/CMYK/16-bit converted, EXIF
orientation applied) and is resized whole to the model's square input: the paper feeds
224×224 images, and a whole-image resize keeps a 1:1 map between the Grad-CAM mask and
the image (or its label map), which a centre crop would break.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from citylens.storage import read_bytes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DecodeError",
    "decode_chw",
    "decode_jpegs",
    "decode_rgb",
    "device_decodable",
    "failure_of",
    "load_batch",
    "encode_labels_png",
    "load_labels",
    "normalize",
    "open_image",
    "resize_chw",
    "resize_rgb",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they remain the
# fastest decoder installed with torch (bench/decode.py), so say it once, not per image.
warnings.filterwarnings(
    "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning
)

MAX_PIXELS = 100_000_000  # refuse decompression bombs well before they fill memory


class DecodeError(ValueError):
    """An image could not be decoded; ``kind`` says why (for the errors table)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


MIN_SIDE = 8  # pixels; smaller images carry nothing to explain
_BUFFER = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def check_size(
    width: int, height: int, max_pixels: int = MAX_PIXELS, name: str | None = None
) -> None:
    """Refuse sizes no stage should decode (from the header, before any pixel is read).

    Raises:
        DecodeError: ``too_large`` (a decompression bomb, or simply too big) or
            ``too_small``; the message starts with ``name`` when given.
    """
    where = f"{name}: " if name else ""
    if width * height > max_pixels:
        raise DecodeError(
            "too_large", f"{where}{width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    if min(width, height) < MIN_SIDE:
        raise DecodeError("too_small", f"{where}{width}x{height} is too small to analyse")


def open_image(data: bytes, name: str = "image") -> Image.Image:
    """Open encoded bytes with Pillow, reading the header only.

    Args:
        data: The encoded image.
        name: The file's URI, for messages.

    Raises:
        DecodeError: ``empty``; ``too_large`` for a decompression bomb Pillow itself
            refuses (more than twice ``PIL.Image.MAX_IMAGE_PIXELS``, before
            :func:`check_size` could see its size); ``not_an_image`` for anything
            Pillow cannot identify. Messages name the file, never a buffer.
    """
    if not data:
        raise DecodeError("empty", f"{name}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns of sizes between its limit and twice it; check_size decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise DecodeError("too_large", f"{name}: {err}") from None
    except Image.UnidentifiedImageError:
        raise DecodeError("not_an_image", f"{name}: not an image format Pillow knows") from None
    except Exception as err:  # PIL raises several types for broken headers
        why = _BUFFER.sub("the file", str(err))
        raise DecodeError("not_an_image", f"{name}: not a readable image ({why})") from None


def _plain(im: Image.Image, data: bytes) -> bool:
    """Whether ``torchvision.io`` decodes these bytes to exactly what Pillow would.

    True for a whole 8-bit RGB or grayscale JPEG / PNG without transparency (a truncated
    file goes to Pillow, which refuses it; libjpeg would pad it with grey).
    """
    if im.mode not in ("RGB", "L"):
        return False
    if im.format == "JPEG":
        return data.rstrip(b"\0").endswith(b"\xff\xd9")
    if im.format == "PNG":
        return "transparency" not in im.info and b"IEND" in data[-16:]
    return False


def _decode_plain(data: bytes, exif: bool = True) -> torch.Tensor | None:
    """``(3, H, W)`` uint8 through torchvision.io, or None if it cannot decode them.

    EXIF orientation is applied when the file has EXIF (``exif``). On None, Pillow
    decodes instead, and says what is wrong.
    """
    from torchvision.io import ImageReadMode, decode_image

    try:
        t = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            ImageReadMode.RGB,
            apply_exif_orientation=exif,
        )
    except Exception:
        return None
    return t if t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3 else None


def decode_chw(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> torch.Tensor:
    """Decode image bytes to an upright RGB tensor.

    Args:
        data: Encoded image (JPEG, PNG, WebP, ...).
        max_pixels: Refuse images with more pixels than this.
        name: The file's URI, for messages.

    Returns:
        uint8 ``(3, H, W)``.

    Raises:
        DecodeError: with kind ``empty``, ``not_an_image``, ``too_large``, ``too_small``
            or ``corrupt``.
    """
    with open_image(data, name) as im:
        check_size(*im.size, max_pixels, name)
        if _plain(im, data) and (t := _decode_plain(data, "exif" in im.info)) is not None:
            return t
        return torch.from_numpy(_decode_pillow(im, name)).permute(2, 0, 1)


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode image bytes to an upright RGB array.

    Args:
        data: Encoded image (JPEG, PNG, WebP, ...).
        max_pixels: Refuse images with more pixels than this.
        name: The file, for messages.

    Returns:
        uint8 ``(H, W, 3)``, C-contiguous.

    Raises:
        DecodeError: with kind ``empty``, ``not_an_image``, ``too_large``, ``too_small``
            or ``corrupt``.
    """
    return np.ascontiguousarray(decode_chw(data, max_pixels, name).permute(1, 2, 0).numpy())


def _decode_pillow(im: Image.Image, name: str = "image") -> np.ndarray:
    """Pillow's decode of an opened image: ``(H, W, 3)`` uint8.

    Alpha is composed over white, 16-bit scaled, CMYK and palettes converted, EXIF
    orientation applied.
    """
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray((arr / top * 255.0).round().astype(np.uint8), "L")
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        rgb = im.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).copy()
    except Exception as err:
        why = _BUFFER.sub("the file", str(err))
        raise DecodeError(
            "corrupt", f"{name}: cannot decode ({type(err).__name__}: {why})"
        ) from None


def resize_chw(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a whole ``(3, H, W)`` uint8 image to ``(3, size, size)``.

    Antialiased bilinear on the uint8 tensor (Pillow's BILINEAR resize to within one
    grey level, several times faster).
    """
    if img.shape[-2] == size and img.shape[-1] == size:
        return img
    from torchvision.transforms.v2.functional import resize

    return resize(img, [size, size], antialias=True)


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a whole ``(H, W, 3)`` uint8 image to ``(size, size, 3)`` (as :func:`resize_chw`)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    chw = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    return np.ascontiguousarray(resize_chw(chw, size).permute(1, 2, 0).numpy())


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise a uint8 batch.

    Args:
        batch: uint8 ``(B, S, S, 3)`` or ``(B, 3, S, S)``.

    Returns:
        float32 ``(B, 3, S, S)``.
    """
    if batch.dim() != 4:
        raise ValueError(f"expected a 4-D image batch, got shape {tuple(batch.shape)}")
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    x = batch.to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def encode_labels_png(labels: np.ndarray) -> bytes:
    """Lossless PNG of a class map (8-bit up to 255 classes, else 16-bit).

    The inverse of :func:`load_labels`.

    Args:
        labels: ``(H, W)`` integer class map.
    """
    arr = np.asarray(labels)
    img = (
        Image.fromarray(arr.astype(np.uint8), "L")
        if arr.max(initial=0) < 256
        else Image.fromarray(arr.astype(np.uint16), "I;16")
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def load_labels(data: bytes) -> np.ndarray:
    """Decode a label-map PNG (one class index per pixel) to ``(H, W)`` int32.

    Raises:
        DecodeError: the bytes are not a single-channel label map.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise DecodeError(
                    "bad_labels", f"label map must be single-channel, got mode {im.mode}"
                )
            return np.asarray(im, dtype=np.int32)
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError("bad_labels", f"cannot decode label map: {err}") from None


def failure_of(err: Exception) -> tuple[str, str]:
    """``(kind, message)`` of a per-image failure for the errors table.

    Raises:
        The error itself if it is not a per-image failure (DecodeError or OSError).
    """
    if isinstance(err, DecodeError):
        return err.kind, str(err)
    if isinstance(err, OSError):
        return "unreadable", f"{type(err).__name__}: {err}"
    raise err


def load_batch(
    uris: list[str], size: int, storage_options: dict | None = None
) -> tuple[torch.Tensor, list[int], list[tuple[int, str, str]]]:
    """Read, decode and resize images into one uint8 batch.

    Args:
        uris: Image paths/URIs.
        size: Square side to resize to.
        storage_options: fsspec options for remote URIs.

    Returns:
        ``(images uint8 (N_ok, 3, S, S), ok indices into uris, errors)`` where each
        error is ``(index, kind, message)``; a bad image never stops the batch.
    """
    arrays, ok, errors = [], [], []
    for i, uri in enumerate(uris):
        try:
            data = read_bytes(uri, storage_options)
            arrays.append(resize_chw(decode_chw(data, name=uri), size))
            ok.append(i)
        except (DecodeError, OSError) as err:
            errors.append((i, *failure_of(err)))
    empty = torch.empty(0, 3, size, size, dtype=torch.uint8)
    return (torch.stack(arrays) if arrays else empty), ok, errors


_EXIF_ORIENTATION = 0x0112


def device_decodable(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> bool:
    """Whether a GPU's JPEG decoder gives these bytes the pixels :func:`decode_chw` would.

    True for a whole, baseline (not progressive), 3-channel JPEG that needs no EXIF
    rotation — nearly every camera-made street photo. Everything else (PNG, grayscale,
    CMYK, progressive, rotated) is for :func:`decode_chw`. Reads the header only.

    Raises:
        DecodeError: as :func:`decode_chw` for files no stage should decode (empty,
            not an image, too large or too small), so they reach the errors table early.
    """
    with open_image(data, name) as im:
        check_size(*im.size, max_pixels, name)
        if im.format != "JPEG" or im.mode != "RGB" or not _plain(im, data):
            return False
        if im.info.get("progressive") or im.info.get("progression"):
            return False
        return "exif" not in im.info or im.getexif().get(_EXIF_ORIENTATION, 1) == 1


@contextlib.contextmanager
def _device_decode_fenced(device: torch.device) -> Iterator[None]:
    """Let nothing queued on the GPU overlap torchvision's CUDA JPEG decoder.

    The decoder allocates its outputs on the caller's stream but writes them from a
    stream of its own that waits for nothing, so it can be handed (and overwrite) a
    freed block that kernels still queued on the caller's stream are about to read
    (pytorch/vision#9606, seen on H100s). Waiting for the device before the call closes
    that window, and waiting after it orders the outputs before the kernels that read
    them. In the explain actor nothing is queued at that point, so this costs nothing.
    """
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    try:
        yield
    finally:
        torch.cuda.synchronize(device)


def decode_jpegs(
    datas: list[bytes], size: int, device: torch.device | str
) -> tuple[torch.Tensor, list[int], list[tuple[int, str, str]]]:
    """Decode and resize JPEGs on ``device`` in one batched call (nvJPEG on CUDA).

    Meant for bytes :func:`device_decodable` accepted. If the batched call fails, each
    image is decoded on the device alone, and one the device still refuses is decoded by
    :func:`decode_chw` on the CPU; only an image neither can decode becomes an error.

    Args:
        datas: Encoded JPEGs.
        size: Square side to resize to (on the device, as :func:`resize_chw`).
        device: Where to decode (a CUDA device uses nvJPEG).

    Returns:
        ``(images uint8 (N_ok, 3, S, S) on device, ok indices into datas, errors)`` as
        :func:`load_batch`.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with _device_decode_fenced(device):
        try:
            decoded = decode_jpeg(encoded, ImageReadMode.RGB, device=device) if encoded else []
        except RuntimeError:
            decoded = []
            for e in encoded:
                try:
                    decoded.append(decode_jpeg(e, ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
    arrays, ok, errors = [], [], []
    for i, (data, img) in enumerate(zip(datas, decoded, strict=True)):
        try:
            if img is None:
                img = decode_chw(data).to(device)
            arrays.append(resize_chw(img, size))
            ok.append(i)
        except DecodeError as err:
            errors.append((i, *failure_of(err)))
    empty = torch.empty(0, 3, size, size, dtype=torch.uint8, device=device)
    return (torch.stack(arrays) if arrays else empty), ok, errors
