"""Re-analysis after a tenth more images: what explain, segment and overlap cost again.

    python bench/reanalysis.py [--places 150] [--views 2] [--size 128]
                               [--archs simple resnet18] [--grow 0.1]
                               [--ratios 0.6 0.2 0.2]

A two-city synthetic study (``train.retrain: new_city``) runs ingest → train → explain →
segment → overlap; then ``--grow`` × the images are added to each city as new places
(mirrored copies of known views, so new bytes, with their label maps), and the same
study runs again. The second run trains nothing, explains and segments only the new
test images and reuses every overlap shard of the old ones. Each stage's seconds are
read from its committed record, on a local Ray started first (its start-up is not
counted; every stage's own actor start-up and model loading are).

Target (issue 24): the second run's explain + segment + overlap cost ≤ 20 % of the
first run's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402

from citylens.config import load_config  # noqa: E402
from citylens.data.synth import PLACE_REGEX, synthesize  # noqa: E402
from citylens.pipeline.cluster import start_local  # noqa: E402
from citylens.pipeline.run import run_study  # noqa: E402
from citylens.storage import Store  # noqa: E402

CITIES = ("towerville", "signburg")
MAPPED = ("explain", "segment", "overlap")
STAGES = ["ingest", "train", *MAPPED]


def grow(root: Path, city: str, fraction: float) -> int:
    """Add ``fraction`` × the city's images as new places; returns images added."""
    from PIL import Image

    views = sorted((root / city).glob("*.jpg"))
    n = max(1, round(fraction * len(views)))
    for j in range(n):
        src = views[j % len(views)]
        stem = f"zz{j // 2:05d}_{j % 2:02d}"  # two views per new place
        Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(root / city / f"{stem}.jpg")
        label = Image.open(root / "labels" / city / f"{src.stem}.png")
        label.transpose(Image.FLIP_LEFT_RIGHT).save(root / "labels" / city / f"{stem}.png")
    return n


def overrides(store: Path, root: Path, args) -> list[str]:
    out = [
        f"store={store}",
        "name=reanalysis",
        f"models.archs=[{','.join(args.archs)}]",
        "models.seeds=[0]",
        "train.epochs=1",
        f"train.input_size={args.size}",
        "train.retrain=new_city",
        f"split.ratios=[{','.join(str(r) for r in args.ratios)}]",
    ]
    for city in CITIES:
        out += [
            f"cities.{city}.source={root}/{city}",
            f"cities.{city}.labels={root}/labels/{city}",
            f"cities.{city}.place_regex={PLACE_REGEX}",
        ]
    return out


def records(store: Store) -> dict[str, dict]:
    return {s: store.record(s) for s in STAGES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--places", type=int, default=150, help="places per city")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--archs", nargs="+", default=["simple", "resnet18"])
    ap.add_argument("--grow", type=float, default=0.1, help="images added, × the corpus")
    ap.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=[0.6, 0.2, 0.2],
        help="train/val/test split (more test images stand in for a larger corpus)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, store_dir = Path(tmp) / "corpus", Path(tmp) / "store"
        synthesize(root, cities=2, places=args.places, views=args.views, size=args.size)
        start_local(include_dashboard=False, log_to_driver=False)
        cfg = load_config(None, overrides(store_dir, root, args))
        store = Store(str(store_dir))
        t = time.perf_counter()
        run_study(cfg, stages=STAGES, progress=lambda s: None)
        first_wall = time.perf_counter() - t
        first = records(store)
        added = sum(grow(root, city, args.grow) for city in CITIES)
        t = time.perf_counter()
        run_study(cfg, stages=STAGES, progress=lambda s: None)
        second_wall = time.perf_counter() - t
        second = records(store)

    print(f"Machine: {machine()}")
    images = first["ingest"]["counts"]["images"]
    print(
        f"{images} images ({first['ingest']['counts']['splits']['test']} test), "
        f"{added} added ({second['ingest']['counts']['splits']['test']} test now), "
        f"models {', '.join(args.archs)} at {args.size} px; "
        f"wall {first_wall:.0f} s, then {second_wall:.0f} s\n"
    )
    rows = []
    for stage in STAGES:
        a, b = first[stage]["seconds"], second[stage]["seconds"]
        c = second[stage].get("counts", {})
        what = (
            f"{c.get('reused', 0)} reused, {c.get('fresh', 0)} new"
            if "fresh" in c
            else f"{c.get('reused_shards', '')} shards reused"
            if stage == "overlap"
            else f"trained {c.get('trained')}"
            if stage == "train"
            else ""
        )
        rows.append([stage, f"{a:.1f}", f"{b:.1f}", f"{b / a:.0%}" if a else "–", what])
    a = sum(first[s]["seconds"] for s in MAPPED)
    b = sum(second[s]["seconds"] for s in MAPPED)
    rows.append(["explain + segment + overlap", f"{a:.1f}", f"{b:.1f}", f"{b / a:.0%}", ""])
    print_table(
        ["stage", "first run, s", f"after +{args.grow:.0%}, s", "ratio", "second run"], rows
    )
    print(f"\ntarget ≤ 20 %: {'met' if b <= 0.2 * a else 'NOT met'} ({b / a:.0%})")


if __name__ == "__main__":
    main()
