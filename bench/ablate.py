"""The causal check's forward passes against a bare batched forward loop, and explain's rate.

    python bench/ablate.py [--images 64] [--size 96] [--batch 16] [--fill inpaint]
                           [--archs vgg11 resnet18 simple simpler] [--json]

On the same images (the synthetic corpus, its ground-truth class maps) and models
(untrained: speed does not depend on the weights), per architecture:

- **bare**: the batched forward loop alone (normalise, forward, softmax), forwards/s;
- **ablate**: what the ablate stage's actor does per batch — the whole image, every
  chosen object removed and its control, the deletion and insertion curves in the
  explanation's and in random order, the rows — counted in forwards/s (fills,
  controls, curve orders and rows included; decoding and storage not);
- **explain**: Grad-CAM (a forward and a backward) per image, explanations/s.

The target: ablate's forward passes run at ≥ 0.8× the bare loop's (the seconds inside
the model's forward, so batching and layout are what is measured); the whole work's
rate says what the fills and controls cost on top. The stage rates on Ray
(decode tasks and storage included) are in ``bench/demo.py``'s per-stage table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, fmt_rate, machine, print_table, row  # noqa: E402

from citylens.ablation import (  # noqa: E402
    STEPS,
    ablate_objects,
    ablation_rows,
    deletion_curves,
    objects_to_remove,
    target_scores,
)
from citylens.data.images import load_batch, load_labels, normalize  # noqa: E402
from citylens.data.synth import synthesize  # noqa: E402
from citylens.models import build_model  # noqa: E402
from citylens.pipeline.explain import explain_rows  # noqa: E402


def corpus(root: Path, images: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` synthetic views and their class maps at ``size``: (B,3,S,S) u8, (B,S,S)."""
    synthesize(root, cities=2, places=max(3, images // 8), views=4, size=size, seed=0)
    uris = sorted(str(p) for p in root.glob("*/*.jpg"))[:images]
    x, ok, errors = load_batch(uris, size)
    assert not errors, errors
    labels = []
    for u in uris:
        city, name = Path(u).parent.name, Path(u).with_suffix(".png").name
        lab = load_labels((root / "labels" / city / name).read_bytes()).astype(np.float32)
        lab = torch.from_numpy(lab)[None, None]
        labels.append(F.interpolate(lab, size=(size, size), mode="nearest-exact")[0, 0].long())
    return x, torch.stack(labels)


def _prepare(x: torch.Tensor) -> torch.Tensor:
    return normalize(x).contiguous(memory_format=torch.channels_last)


def bare(model, x: torch.Tensor, bs: int) -> float:
    """Forwards/s of the batched loop alone."""
    targets = torch.zeros(len(x), dtype=torch.long)
    t = time.perf_counter()
    for i in range(0, len(x), bs):
        target_scores(model, _prepare(x[i : i + bs]), targets[i : i + bs])
    return len(x) / (time.perf_counter() - t)


class _Timed(torch.nn.Module):
    """The model, counting the seconds spent in its forward passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seconds = model, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - t
        return out


def ablate(model, x: torch.Tensor, labels: torch.Tensor, bs: int, fill: str) -> tuple[float, float]:
    """The ablate actor's per-batch work (see the module docstring).

    Returns:
        ``(forwards/s of the whole work, forwards/s while in the model's forward)``.
    """
    model = _Timed(model)
    targets = torch.zeros(len(x), dtype=torch.long)
    saliency = torch.rand(
        len(x), x.shape[-2], x.shape[-1], generator=torch.Generator().manual_seed(0)
    )
    forwards = 0
    t = time.perf_counter()
    for i in range(0, len(x), bs):
        xb, lb, tb, sb = (
            x[i : i + bs],
            labels[i : i + bs],
            targets[i : i + bs],
            saliency[i : i + bs],
        )
        objects = objects_to_remove(lb, 16, 8)
        seeds = list(range(i, i + len(xb)))
        got = ablate_objects(model, xb, lb, tb, _prepare, objects, seeds, fill)
        args = (model, xb, tb, sb, _prepare, fill, STEPS)
        curves = {"mask": deletion_curves(*args), "random": deletion_curves(*args, True, 0)}
        ids = [str(j) for j in range(len(xb))]
        ablation_rows(ids, ["a"] * len(xb), "m", tb.numpy(), got, curves, STEPS, fill, x.shape[-1])
        forwards += len(xb) * (1 + 4 * len(STEPS)) + 2 * sum(len(o) for o in objects)
    return forwards / (time.perf_counter() - t), forwards / model.seconds


def explain(model, x: torch.Tensor, bs: int) -> float:
    """Explanations/s of Grad-CAM (forward and backward) on the same batches."""
    t = time.perf_counter()
    for i in range(0, len(x), bs):
        xb = x[i : i + bs]
        n = len(xb)
        explain_rows(
            "m", model, xb, np.zeros(n, np.int64), [str(j) for j in range(n)], ["a"] * n, "true"
        )
    return len(x) / (time.perf_counter() - t)


def main() -> None:
    """Measure each architecture and print the table (or JSON rows for bench/all.py)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fill", default="inpaint")
    ap.add_argument("--archs", nargs="+", default=["vgg11", "resnet18", "simple", "simpler"])
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        x, labels = corpus(Path(tmp), args.images, args.size)
    rows, table = [], []
    for arch in args.archs:
        model = build_model(arch, 2, args.size).eval().to(memory_format=torch.channels_last)
        bare(model, x[: args.batch], args.batch)  # warm-up
        b = bare(model, x, args.batch)
        a, in_model = ablate(model, x, labels, args.batch, args.fill)
        e = explain(model, x, args.batch)
        case = f"{arch}, {args.size} px, batch {args.batch}, fill {args.fill}"
        rows.append(
            row(
                "ablate",
                f"forward passes, {case}",
                in_model,
                "fwd/s",
                reference="bare forward loop",
                ratio=in_model / b,
                target=0.8,
            )
        )
        note = f"fills, controls and rows included: {a / b:.2f}x the bare loop"
        rows.append(row("ablate", f"whole work, {case}", a, "fwd/s", note=note))
        rows.append(row("explain", case, e, "expl/s", note=f"bare forwards {fmt_rate(b)}/s"))
        table.append(
            [
                arch,
                fmt_rate(b),
                fmt_rate(in_model),
                f"{in_model / b:.2f}",
                fmt_rate(a),
                f"{a / b:.2f}",
                fmt_rate(e),
            ]
        )
    if args.json:
        emit(rows)
        return
    print(f"# {machine()}")
    header = ["arch", "bare fwd/s", "ablate: in forward", "÷ bare", "ablate: whole work"]
    print_table([*header, "÷ bare", "explain expl/s"], table)


if __name__ == "__main__":
    main()
