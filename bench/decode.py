"""Decode throughput per core: citylens's decoder vs bare decode loops, JPEG and PNG.

    python bench/decode.py [--size 224] [--images 48] [--photo-size 640] [--repeats 3]

Every contender turns encoded bytes into a ``(size, size, 3)`` uint8 array, on one core
(one torch thread), over the same images:

- *Pillow*: ``Image.open → convert("RGB") → resize(BILINEAR)`` — the bare loop;
- *torchvision.io*: ``decode_jpeg`` / ``decode_png`` then an antialiased bilinear
  ``resize`` on the tensor;
- *citylens*: :func:`citylens.data.images.decode_chw` + ``resize_chw``, what
  ``load_batch`` does per image (header check against bombs, the choice of decoder,
  EXIF orientation, alpha/16-bit/CMYK handling on top of the bare decode).

On a machine with CUDA, one more JPEG row times :func:`citylens.data.images.decode_jpegs`
(``explain.decode_on=gpu``: one batched nvJPEG call, resize on the GPU) and reports how
far its pixels are from libjpeg-turbo's.

The images are synthetic street scenes at ``--photo-size`` × 3/4 with photo-like sensor
noise (a flat rendering compresses far better than a photo and decodes unrealistically
fast). ``--dir`` times real photos instead.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, fmt_rate, machine, print_table, row, time_interleaved  # noqa: E402

from citylens.data.images import decode_chw, decode_jpegs, resize_chw  # noqa: E402
from citylens.data.scenes import render_scene, style_for  # noqa: E402


def photos(n: int, side: int, fmt: str, seed: int = 0) -> list[bytes]:
    """``n`` encoded street scenes of ``side × 3/4 side`` with sensor noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img, _ = render_scene(style_for(i % 2), side * 3 // 4, side, rng)
        noisy = img.astype(np.int16) + rng.normal(0, 6, img.shape).round().astype(np.int16)
        buf = io.BytesIO()
        im = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def pillow(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


def tv_io(data: bytes, size: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    t = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    return resize(t, [size, size], antialias=True)


def ours(data: bytes, size: int) -> torch.Tensor:
    """What every stage's batch loader does per image (:func:`load_batch`)."""
    return resize_chw(decode_chw(data), size)


def bench(images: list[bytes], size: int, repeats: int) -> dict[str, float]:
    """Images/s of each decoder over ``images`` (one core)."""
    fns = {
        name: (lambda f=f: [f(b, size) for b in images])
        for name, f in (("Pillow", pillow), ("torchvision.io", tv_io), ("citylens", ours))
    }
    secs = time_interleaved(fns, repeats)
    return {name: len(images) / s for name, s in secs.items()}


def gpu_row(images: list[bytes], size: int, repeats: int, cpu_rate: float) -> dict:
    """The batched nvJPEG path against citylens's decoder on one CPU core."""
    device = torch.device("cuda")

    def run() -> torch.Tensor:
        out = decode_jpegs(images, size, device)[0]
        torch.cuda.synchronize()
        return out

    gpu = run().cpu().int()  # warm-up, and the pixels to compare
    cpu = torch.stack([ours(b, size) for b in images]).int()
    diff = (gpu - cpu).abs()
    rate = len(images) / time_interleaved({"nvJPEG": run}, repeats)["nvJPEG"]
    return row(
        "decode",
        f"JPEG nvJPEG batch of {len(images)} ({torch.cuda.get_device_name()})",
        rate,
        "img/s",
        reference="citylens on one core",
        ratio=rate / cpu_rate,
        note=f"|Δ| vs libjpeg-turbo: max {int(diff.max())}, mean {float(diff.float().mean()):.2f}",
    )


def measure(size: int, n: int, side: int, repeats: int, folder: str | None = None) -> list[dict]:
    torch.set_num_threads(1)
    if folder:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        sets = {"JPEG (photos)": [p.read_bytes() for p in files[:n]]}
    else:
        sets = {fmt: photos(n, side, fmt) for fmt in ("JPEG", "PNG")}
    rows = []
    for fmt, images in sets.items():
        rates = bench(images, size, repeats)
        best = max(("Pillow", "torchvision.io"), key=rates.get)
        for name in ("Pillow", "torchvision.io"):
            rows.append(
                row("decode", f"{fmt} {name}", rates[name], "img/s/core", reference="", note="bare")
            )
        rows.append(
            row(
                "decode",
                f"{fmt} citylens",
                rates["citylens"],
                "img/s/core",
                reference=f"bare {best}",
                ratio=rates["citylens"] / rates[best],
                target=0.9,
            )
        )
        if fmt.startswith("JPEG") and torch.cuda.is_available():
            rows.append(gpu_row(images, size, repeats, rates["citylens"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--photo-size", type=int, default=640, help="long side of the photos")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", help="time the JPEGs in this folder instead")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    rows = measure(args.size, args.images, args.photo_size, args.repeats, args.dir)
    if args.json:
        emit(rows)
        return
    print(f"decode → {args.size} px, one core; {machine()}\n")
    print_table(
        ["decoder", "img/s per core", "vs best bare"],
        [
            [r["case"], fmt_rate(r["rate"]), f"{r['ratio']:.2f}x" if r["ratio"] else ""]
            for r in rows
        ],
    )


if __name__ == "__main__":
    main()
