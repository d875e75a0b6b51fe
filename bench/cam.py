"""Grad-CAM throughput: citylens vs a plain forward pass vs pytorch-grad-cam.

    python bench/cam.py [--size 224] [--batch 16] [--repeats 3] [--archs vgg11 resnet18 ...]

For each architecture, one model and one batch of random images with mixed targets:
- *forward*: ``model(x)`` under ``torch.inference_mode()`` — the limit;
- *citylens*: :func:`citylens.cam.grad_cam` (trunk without autograd, gradient only at
  the target layer);
- *pytorch-grad-cam*: ``GradCAM(model, target_layers=[model.features])`` as a user of
  that library calls it (full backward, maps resized to the input).
The maps are checked equal (pytorch-grad-cam's at the target layer's resolution). All
three run with :func:`citylens.allocator.keep_freed_memory`, as the explain stage does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, machine, print_table, row, time_interleaved  # noqa: E402
from cam_methods import pytorch_grad_cam_maps  # noqa: E402

from citylens.allocator import keep_freed_memory  # noqa: E402
from citylens.cam import grad_cam  # noqa: E402
from citylens.models import ARCHITECTURES, build_model  # noqa: E402


def _pytorch_grad_cam(model, x, targets, native: bool = False) -> np.ndarray:
    """pytorch-grad-cam's Grad-CAM at the paper's layer (bench/cam_methods.py's helper)."""
    return pytorch_grad_cam_maps(model, x, targets, "gradcam", model.target_layer, native)


def bench_arch(arch: str, size: int, batch: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=2, input_size=size).eval()
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).to(device, memory_format=torch.channels_last)
    targets = (torch.arange(batch) % 2).to(device)

    ours = grad_cam(model, x, targets)
    theirs = _pytorch_grad_cam(model, x, targets, native=True)
    max_diff = float(np.abs(ours.mask.cpu().numpy() - theirs).max())
    for p in model.parameters():
        p.grad = None

    def forward():
        with torch.inference_mode():
            model(x)

    with PeakMemory() as mem:
        t = time_interleaved(
            {
                "forward": forward,
                "ours": lambda: grad_cam(model, x, targets),
                "theirs": lambda: _pytorch_grad_cam(model, x, targets),
            },
            repeats,
        )
    return {
        "arch": arch,
        "forward": batch / t["forward"],
        "ours": batch / t["ours"],
        "theirs": batch / t["theirs"],
        "max_diff": max_diff,
        "peak_mb": mem.peak_mb,
    }


def as_rows(r: dict, size: int) -> list[dict]:
    """bench/all.py's rows: citylens against the forward pass, and against pytorch-grad-cam."""
    case = f"{r['arch']} {size} px"
    return [
        row(
            "Grad-CAM",
            f"{case} vs forward",
            r["ours"],
            peak_mb=r["peak_mb"],
            reference=f"forward {r['forward']:.1f} img/s",
            ratio=r["ours"] / r["forward"],
            target=0.9,
            note=f"max |Δ mask| vs pytorch-grad-cam {r['max_diff']:.1e}",
        ),
        row(
            "Grad-CAM",
            f"{case} vs pytorch-grad-cam",
            r["ours"],
            reference=f"pytorch-grad-cam {r['theirs']:.1f} img/s",
            ratio=r["ours"] / r["theirs"],
            target=3.0,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    keep_freed_memory()  # as the explain and segment workers do (citylens.allocator)
    results = [bench_arch(a, args.size, args.batch, args.repeats, args.device) for a in args.archs]
    if args.json:
        emit([x for r in results for x in as_rows(r, args.size)])
        return
    print(f"Grad-CAM, {args.size} px, batch {args.batch}, on {args.device}; {machine()}\n")
    ips = lambda v: f"{v:.1f}"  # noqa: E731
    rows = [
        [
            r["arch"],
            ips(r["forward"]),
            ips(r["ours"]),
            ips(r["theirs"]),
            f"{r['ours'] / r['forward']:.2f}x",
            f"{r['ours'] / r['theirs']:.2f}x",
            f"{r['max_diff']:.1e}",
        ]
        for r in results
    ]
    print_table(
        [
            "model",
            "forward img/s",
            "citylens img/s",
            "pytorch-grad-cam img/s",
            "citylens / forward",
            "citylens vs pytorch-grad-cam",
            "max |Δ mask|",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
