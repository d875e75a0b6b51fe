"""Segmenter throughput: CSAIL networks at 224 and 480 px, single- and multi-scale.

    python bench/segment.py [--models ade20k-ppm ade20k-upernet] [--sizes 224 480]
                            [--images 4] [--repeats 2]

Random weights (the timings do not depend on them). For each model and square image
size: *single* = one scale (short side = the image's own size, CSAIL's rule), *multi* =
CSAIL's test scales 300, 375, 450, 525, 600 (long side ≤ 1000) with the softmax
averaged. On a GPU it also checks bf16 / fp16 autocast against fp32 (argmax maps equal
on ≥ 99 % of pixels) and times them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, machine, print_table, row, time_it  # noqa: E402

from citylens.allocator import keep_freed_memory  # noqa: E402
from citylens.segment import build_segmenter  # noqa: E402
from citylens.segment.model import CSAIL_SCALES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["ade20k-ppm", "ade20k-upernet"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 480])
    ap.add_argument("--images", type=int, default=4, help="images per timed call")
    ap.add_argument("--multi-images", type=int, help="images per multi-scale call")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-multi", action="store_true", help="skip the multi-scale rows")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    keep_freed_memory()  # as the explain and segment workers do (citylens.allocator)
    if not args.json:
        print(f"machine: {machine()}\n")
    rng = np.random.default_rng(0)
    rows, json_rows = [], []
    for name in args.models:
        for size in args.sizes:
            imgs = [
                rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.images)
            ]
            modes = {"single": (size,)} | ({} if args.no_multi else {"multi": CSAIL_SCALES})
            for mode, scales in modes.items():
                n = args.multi_images if mode == "multi" and args.multi_images else args.images
                batch = imgs[:n]
                precisions = ["fp32"] + (["bf16", "fp16"] if torch.cuda.is_available() else [])
                ref = None
                for precision in precisions:
                    seg = build_segmenter(
                        name, "random:0", scales=scales, precision=precision, batch_size=n
                    )
                    with PeakMemory() as mem:
                        secs = time_it(lambda s=seg, x=batch: s(x), repeats=args.repeats)
                    maps = np.stack(seg(batch))
                    if ref is None:
                        ref, same = maps, ""
                    else:
                        same = f"{(maps == ref).mean():.4f}"
                    rate = n / secs
                    rows.append([name, size, mode, precision, f"{rate:.2f}", same])
                    json_rows.append(
                        row(
                            "segment",
                            f"{name} {size} px {mode}-scale {precision}",
                            rate,
                            peak_mb=mem.peak_mb,
                            note=f"argmax = fp32 on {same}" if same else "",
                        )
                    )
                    if not args.json:
                        print(rows[-1], flush=True)
    if args.json:
        emit(json_rows)
        return
    print()
    print_table(["segmenter", "px", "scales", "precision", "images/s", "argmax = fp32"], rows)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
