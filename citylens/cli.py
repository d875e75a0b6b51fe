"""The ``citylens`` command: synth, run, demo."""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources

__all__ = ["main"]

DEMO = "demo"


def _study_source(study: str):
    """A study config path, or the packaged demo study for ``demo``."""
    if study == DEMO:
        return resources.files("citylens.studies").joinpath("demo.yaml")
    return study


def _cmd_synth(args: argparse.Namespace) -> int:
    from citylens.data.synth import synthesize

    t = time.time()
    meta = synthesize(args.out, args.cities, args.places, args.views, args.size, args.seed)
    names = ", ".join(c["name"] for c in meta["cities"])
    print(f"wrote {meta['images']} images of {names} to {args.out} in {time.time() - t:.1f} s")
    return 0


def _summary(cfg, results) -> None:
    from citylens.storage import Store

    store = Store(cfg.store, cfg.run.storage_options)
    rec = store.record("analyze")
    if rec is None:
        return
    folder = rec["folder"]
    if store.exists(f"{folder}/accuracy.parquet"):
        acc = store.read_table(f"{folder}/accuracy.parquet").to_pandas()
        print("\nTest accuracy:")
        print(acc[["model", "val_acc", "test_acc"]].to_string(index=False, float_format="%.3f"))
    if store.exists(f"{folder}/ar_pairs.parquet"):
        pairs = store.read_table(f"{folder}/ar_pairs.parquet").to_pandas()
        print("\nMean AR per model pair (paper Table 2):")
        cols = ["model_a", "model_b", "kind", "mean_ar"]
        print(pairs[cols].to_string(index=False, float_format="%.4f"))
        print("mean by kind:", pairs.groupby("kind").mean_ar.mean().round(4).to_dict())
    if store.exists("report.html"):
        print(f"\nReport: {store.url('report.html')}")


def _cmd_run(args: argparse.Namespace) -> int:
    from citylens.config import ConfigError, load_config
    from citylens.validate import preflight

    overrides = list(args.overrides)
    try:
        cfg = load_config(_study_source(args.study), overrides)
        preflight(cfg)
    except ConfigError as err:
        print(f"citylens: invalid study: {err}", file=sys.stderr)
        return 2
    from citylens.pipeline.run import run_study

    t = time.time()
    stages = args.stages.split(",") if args.stages else None
    results = run_study(cfg, stages=stages, force=args.force)
    ran = [r.stage for r in results if r.status == "ran"]
    print(
        f"\nstudy {cfg.name}: {len(ran)} stage(s) ran ({', '.join(ran) or 'none'}), "
        f"total {time.time() - t:.0f} s"
    )
    _summary(cfg, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="citylens",
        description="What makes one city look different from another, through a CNN's eyes.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic city corpus")
    p.add_argument("out", help="output folder")
    p.add_argument("--cities", type=int, default=2)
    p.add_argument("--places", type=int, default=40, help="places per city")
    p.add_argument("--views", type=int, default=4, help="views per place")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_synth)

    for name, helptext in (
        ("run", "run a study (YAML) on Ray"),
        ("demo", "synthesize a small corpus and run the demo study"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "run":
            p.add_argument("study", help=f"study YAML, or '{DEMO}' for the packaged demo")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
        p.add_argument("--stages", help="comma-separated subset, e.g. analyze,report")
        p.add_argument("--force", action="store_true", help="re-run stages that are up to date")
        p.set_defaults(fn=_cmd_run, study=DEMO)

    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
