"""CAM methods' throughput at each named layer: citylens vs a forward pass vs pytorch-grad-cam.

    python bench/cam_methods.py [--size 224] [--batch 16] [--repeats 3] [--archs ...]
                                [--scorecam-batch 2]

For each architecture, named layer (``last``: the paper's; ``previous``: the block before)
and method of :data:`citylens.cam.METHODS`, one random-weight model and one batch of
random images with mixed targets:

- *forward*: ``model(x)`` under ``torch.inference_mode()`` — the limit;
- *citylens*: :func:`citylens.cam.explain_batch` (trunk up to the layer without autograd,
  the gradient back through the rest only; Grad-CAM at the last layer takes its faster
  path);
- *pytorch-grad-cam*: the library's class for the same method, hooked on the same layer,
  as its users call it (full backward; maps resized to the input).

Every map is checked equal to pytorch-grad-cam's at the layer's resolution (the max
difference is printed). Score-CAM (one forward per channel: 96–512 per image) runs on
``--scorecam-batch`` images (0 skips it). The target: gradient methods at the last layer
≥ 0.9× forward, as Grad-CAM is; the other rows report their ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, time_interleaved  # noqa: E402

from citylens.allocator import keep_freed_memory  # noqa: E402
from citylens.cam import GRADIENT_METHODS, explain_batch  # noqa: E402
from citylens.models import ARCHITECTURES, build_model  # noqa: E402


def pytorch_grad_cam_maps(model, x, targets, method: str, layer: str, native: bool = True):
    """pytorch-grad-cam's maps of ``method`` at ``model``'s named ``layer``.

    Args:
        native: Keep the layer's resolution (no resize to the input), to compare maps.

    Returns:
        ``(B, h, w)`` (native) or ``(B, S, S)`` float32 numpy maps, min-max normalised.
    """
    from pytorch_grad_cam import (
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {
        "gradcam": GradCAM,
        "gradcam++": GradCAMPlusPlus,
        "hirescam": HiResCAM,
        "layercam": LayerCAM,
        "xgradcam": XGradCAM,
        "scorecam": ScoreCAM,
    }[method]

    class Native(cls):
        def get_target_width_height(self, input_tensor):
            return None

    cut = model.layers[layer]
    module = model.features if cut == len(model.features) else model.features[cut - 1]
    with (Native if native else cls)(model=model, target_layers=[module]) as cam:
        cam.batch_size = 64  # Score-CAM's masked inputs per forward pass (ours too)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def bench_case(model, x, targets, method: str, layer: str, repeats: int) -> dict:
    """Rates (images/s) of forward, citylens and pytorch-grad-cam on one batch."""
    ours = explain_batch(model, x, targets, method, layer)
    theirs = pytorch_grad_cam_maps(model, x, targets, method, layer)
    max_diff = float(np.abs(ours.mask.cpu().numpy() - theirs).max())
    for p in model.parameters():
        p.grad = None

    def forward():
        with torch.inference_mode():
            model(x)

    t = time_interleaved(
        {
            "forward": forward,
            "ours": lambda: explain_batch(model, x, targets, method, layer),
            "theirs": lambda: pytorch_grad_cam_maps(model, x, targets, method, layer, False),
        },
        repeats,
    )
    n = len(x)
    return {
        "forward": n / t["forward"],
        "ours": n / t["ours"],
        "theirs": n / t["theirs"],
        "max_diff": max_diff,
        "size": tuple(ours.mask.shape[1:]),
    }


def main() -> None:
    """Print the table of every (architecture, layer, method)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    ap.add_argument("--scorecam-batch", type=int, default=2)
    args = ap.parse_args()
    keep_freed_memory()  # as the explain workers do (citylens.allocator)
    print(f"CAM methods, {args.size} px, batch {args.batch}, CPU; {machine()}\n")
    rows = []
    for arch in args.archs:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=2, input_size=args.size).eval()
        model = model.to(memory_format=torch.channels_last)
        for position, layer in zip(("previous", "last"), list(model.layers)[-2:]):
            cases = [(m, args.batch) for m in GRADIENT_METHODS]
            if args.scorecam_batch:
                cases.append(("scorecam", args.scorecam_batch))
            for method, batch in cases:
                x = torch.randn(batch, 3, args.size, args.size)
                x = x.contiguous(memory_format=torch.channels_last)
                targets = torch.arange(batch) % 2
                r = bench_case(model, x, targets, method, layer, args.repeats)
                rows.append(
                    [
                        arch,
                        f"{layer} ({position}, {r['size'][0]}×{r['size'][1]})",
                        method,
                        batch,
                        f"{r['forward']:.1f}",
                        f"{r['ours']:.2f}" if r["ours"] < 10 else f"{r['ours']:.1f}",
                        f"{r['theirs']:.2f}" if r["theirs"] < 10 else f"{r['theirs']:.1f}",
                        f"{r['ours'] / r['forward']:.2f}x",
                        f"{r['ours'] / r['theirs']:.2f}x",
                        f"{r['max_diff']:.1e}",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print_table(
        [
            "model",
            "layer",
            "method",
            "batch",
            "forward img/s",
            "citylens img/s",
            "pytorch-grad-cam img/s",
            "citylens / forward",
            "citylens / pytorch-grad-cam",
            "max |Δ mask|",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
