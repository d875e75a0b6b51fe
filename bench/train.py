"""Training and decoding throughput: what a study's train stage costs per device.

    python bench/train.py [--size 224] [--batch 32] [--steps 20] [--device cuda]

- *train*: :func:`citylens.train.fit` itself (channels-last, fused Adam, the study's
  defaults) over ``--steps`` batches of random uint8 images, one epoch, after a warm-up
  fit; images/s of training steps (the one validation batch is included).
- *decode*: JPEG bytes of a 640x640 street-size photo decoded and resized to ``--size``
  by :func:`citylens.data.images.decode_rgb` / ``resize_rgb``, on one core: what each
  CPU of a cluster feeds the GPUs.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402

from citylens.config.schema import TrainSettings  # noqa: E402
from citylens.data.images import decode_rgb, resize_rgb  # noqa: E402
from citylens.models import ARCHITECTURES  # noqa: E402
from citylens.train import fit  # noqa: E402


def bench_train(arch: str, size: int, batch: int, steps: int, device: str) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)
    y = torch.arange(batch) % 2

    def run(n: int) -> float:
        t = time.perf_counter()
        fit(
            arch,
            0,
            2,
            size,
            train=lambda epoch: ((x, y) for _ in range(n)),
            val=lambda: [(x, y)],
            settings=TrainSettings(epochs=1),
            device=device,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(2)  # warm-up: kernels, allocator, cuDNN's algorithm choice
    return steps * batch / run(steps)


def bench_decode(size: int, n: int = 50) -> float:
    rng = np.random.default_rng(0)
    # smooth noise compresses like a photo (pure noise would be unrealistically slow)
    small = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((640, 640), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    t = time.perf_counter()
    for _ in range(n):
        resize_rgb(decode_rgb(data), size)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    args = p.parse_args()
    print(machine())
    print(f"decode+resize 640 px JPEG -> {args.size} px: {bench_decode(args.size):.0f} img/s/core")
    rows = []
    for arch in args.archs:
        rate = bench_train(arch, args.size, args.batch, args.steps, args.device)
        shown = f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"
        rows.append([arch, args.device, args.batch, shown])
    print_table(["model", "device", "batch", "train img/s"], rows)


if __name__ == "__main__":
    main()
