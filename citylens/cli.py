"""The ``citylens`` command: synth, run, demo, agree, compare, annotate, annotate-page."""

from __future__ import annotations

import argparse
import os
import re
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
    meta = synthesize(
        args.out,
        args.cities,
        args.places,
        args.views,
        args.size,
        args.seed,
        null_city=args.null_city,
    )
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
    """Run a study from the command line's arguments; returns the exit code.

    Exit codes: 0 done; 2 an invalid study or input (nothing of it ran, or the stage
    that met it stopped); 3 the store refused a write; 4 the store is held by another
    run; 130 interrupted (Ctrl-C). Every failure is one line on stderr.
    """
    from citylens.config import ConfigError, load_config
    from citylens.config.validate import preflight
    from citylens.pipeline import logs
    from citylens.pipeline.run import check_stages

    logs.configure(args.verbose, own_process=args.own_process)
    overrides = list(args.overrides)
    try:
        stages = check_stages(args.stages.split(",") if args.stages is not None else None)
    except ValueError as err:
        print(f"citylens: --stages: {err}", file=sys.stderr)
        return 2
    if args.wait is not None and args.wait < 0:
        print("citylens: --wait: seconds must be ≥ 0", file=sys.stderr)
        return 2
    try:
        cfg = load_config(_study_source(args.study), overrides)
        preflight(cfg)
    except ConfigError as err:
        print(f"citylens: invalid study: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncitylens: interrupted before any stage ran", file=sys.stderr)
        return 130
    from citylens.errors import InputError, user_error_in
    from citylens.lease import LeaseLost, StoreBusy
    from citylens.pipeline.run import run_study
    from citylens.storage import StoreWriteError

    t = time.time()
    try:
        results = run_study(cfg, stages=stages, force=args.force, wait=args.wait or 0.0)
    except KeyboardInterrupt as err:
        stage = getattr(err, "stage", None)
        where = f"during stage {stage}" if stage else "between stages"
        print(
            f"\ncitylens: interrupted {where}. Nothing half-written was committed; run the "
            "same command again to resume (finished stages are skipped, explain and "
            "segment keep their finished batches, training its last checkpoint).",
            file=sys.stderr,
        )
        return 130
    except StoreBusy as err:
        print(f"citylens: {err.message}", file=sys.stderr)
        return 4
    except Exception as err:
        if (lost := user_error_in(err, LeaseLost)) is not None:
            print(f"citylens: stopped: {lost}", file=sys.stderr)
            return 4
        if (bad := user_error_in(err, InputError)) is not None:
            print(f"citylens: stopped: {bad.message}", file=sys.stderr)
            return 2
        if (cause := user_error_in(err, StoreWriteError)) is None:
            raise
        print(
            f"citylens: stopped: {cause.message}\n"
            "Stages finished earlier are intact; free space or fix permissions and run "
            "again: finished stages are skipped.",
            file=sys.stderr,
        )
        return 3
    ran = [r.stage for r in results if r.status == "ran"]
    print(
        f"\nstudy {cfg.name}: {len(ran)} stage(s) ran ({', '.join(ran) or 'none'}), "
        f"total {time.time() - t:.0f} s"
    )
    _summary(cfg, results)
    previous = getattr(args, "compare_with", None)  # `run` has it, `demo` does not
    return _write_comparison(previous, cfg) if previous else 0


def _write_comparison(previous: str, cfg) -> int:
    """``run --compare-with``: the comparison page of ``previous`` (A) and this study (B).

    Written to ``<store>/compare.html``; returns the exit code (2: it could not be made).
    """
    from citylens.pipeline.compare_studies import compare_studies
    from citylens.storage import Store

    try:
        page = compare_studies(previous, cfg.store, cfg.run.storage_options)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        print(f"citylens: the study ran, but no comparison with {previous}: {err}", file=sys.stderr)
        return 2
    store = Store(cfg.store, cfg.run.storage_options)
    store.write_text("compare.html", page)
    print(f"comparison with {previous}: {store.url('compare.html')}")
    return 0


def _open_study(args: argparse.Namespace):
    from citylens.config import load_config
    from citylens.storage import Store

    cfg = load_config(_study_source(args.study), list(args.overrides))
    return cfg, Store(cfg.store, cfg.run.storage_options)


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _files_and_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """Split ``agree``'s words: ``key=value`` overrides (unless a file of that name exists)."""
    files, overrides = [], []
    for w in words:
        is_override = _OVERRIDE.match(w) and not os.path.exists(w)
        (overrides if is_override else files).append(w)
    return files, overrides


def _cmd_agree(args: argparse.Namespace) -> int:
    from citylens.config import ConfigError
    from citylens.pipeline.agree import study_agreement, study_vocabulary
    from citylens.storage import read_bytes

    files, args.overrides = _files_and_overrides(args.words)
    if not files:
        print("citylens agree: name at least one annotation CSV", file=sys.stderr)
        return 2
    try:
        cfg, store = _open_study(args)
        texts = [(f, read_bytes(f, cfg.run.storage_options).decode()) for f in files]
        thresholds = (
            [float(t) for t in args.thresholds.split(",")]
            if args.thresholds
            else cfg.analysis.agreement_thresholds
        )
        a = cfg.analysis
        got = study_agreement(
            store, texts, study_vocabulary(store, cfg), thresholds, a.bootstrap, a.seed, a.ci
        )
    except (ConfigError, ValueError, RuntimeError, OSError) as err:
        print(f"citylens agree: {err}", file=sys.stderr)
        return 2
    if got.unmatched:
        shown = ", ".join(a.image for a in got.unmatched[:5])
        print(f"{len(got.unmatched)} annotated image(s) match no image of the study: {shown}")
    if got.unexplained and store.record("overlap") is not None:
        shown = "; ".join(a.where for a in got.unexplained[:5])
        print(
            f"{len(got.unexplained)} annotation(s) match no explanation the segmenter labelled "
            f"(a train image, another model, or a θ without overlaps): {shown}"
        )
    who = sorted({a.annotator for a in got.annotations})
    print(
        f"{len(got.annotations)} annotation(s) by {len(who)} annotator(s) ({', '.join(who)}); "
        f"{got.annotated.num_rows} matched to an explanation with segmenter labels"
    )
    df = got.curves.to_pandas()
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {len(df)} rows to {args.out}")
    if len(df):
        ends = df[df.threshold.isin([df.threshold.min(), df.threshold.max()])]
        view = ends.pivot_table(
            index=["annotator", "model", "city", "theta", "n"],
            columns="threshold",
            values=["strict", "lenient"],
        )
        print("Agreement with annotations (strict / lenient at the lowest and highest threshold):")
        print(view.to_string(float_format="%.3f"))
    elif store.record("overlap") is None:
        print("No agreement curves: the study has no segmenter labels (overlap stage) yet.")
    kappa = got.annotators.to_pandas()
    if len(kappa):
        print(f"\nAgreement between annotators (Cohen's κ of the main label, {a.ci:.0%} interval):")
        print(kappa.to_string(index=False, float_format="%.3f"))
        if args.kappa_out:
            kappa.to_csv(args.kappa_out, index=False)
            print(f"wrote {len(kappa)} rows to {args.kappa_out}")
    return 0


def _csv_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(w.strip() for w in text.split(",") if w.strip()) if text else None


def _cmd_annotate_page(args: argparse.Namespace) -> int:
    from citylens.config import ConfigError
    from citylens.pipeline.annotate_page import annotation_page

    try:
        cfg, _ = _open_study(args)
        thetas = tuple(float(t) for t in _csv_list(args.thetas) or ()) or None
        page = annotation_page(
            cfg,
            args.n,
            models=_csv_list(args.models),
            cities=_csv_list(args.cities),
            thetas=thetas,
            seed=args.seed,
        )
    except (ConfigError, ValueError, RuntimeError, OSError) as err:
        print(f"citylens annotate-page: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page.html)
    for iid, why in sorted(page.unreadable.items()):
        print(f"left out (image unreadable): {iid}: {why}")
    print(f"wrote {len(page.items)} explanations to annotate to {args.out}:")
    for (model, city, theta), k in sorted(page.strata.items()):
        print(f"  {model:>14}  {city:<16} θ={theta:g}: {k}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from citylens.pipeline.compare_studies import compare_studies

    try:
        page = compare_studies(args.study_a, args.study_b)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        print(f"citylens compare: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.out}")
    return 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    from citylens.config import ConfigError
    from citylens.pipeline.agree import derived_annotations_csv

    try:
        cfg, store = _open_study(args)
        theta = args.theta if args.theta is not None else min(cfg.explain.thetas)
        text = derived_annotations_csv(
            store, args.model, theta, args.limit, args.similar, cfg.run.storage_options
        )
    except (ConfigError, ValueError, RuntimeError, OSError) as err:
        print(f"citylens annotate: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {text.count(chr(10)) - 1} derived annotations to {args.out}")
    return 0


def _add_reading_commands(sub) -> None:
    """The commands that read a finished study: agree, compare, annotate, annotate-page."""
    p = sub.add_parser(
        "agree", help="agreement of the segmenter with human annotations (thesis Figs 11-12)"
    )
    p.add_argument("study", help=f"study YAML, or '{DEMO}'")
    p.add_argument(
        "words",
        nargs="+",
        metavar="CSV | key=value",
        help="annotation CSVs (columns image, label1[, label2, model, theta, annotator, "
        "seconds_spent]; one per annotator, or one with an annotator column), then "
        "key=value overrides of the study",
    )
    p.add_argument("--thresholds", help="comma-separated second-label thresholds")
    p.add_argument("--out", help="write the full curves to this CSV")
    p.add_argument("--kappa-out", help="write the annotators' agreement (κ) to this CSV")
    p.set_defaults(fn=_cmd_agree)

    p = sub.add_parser(
        "annotate-page",
        help="write a self-contained page on which people label what explanations show",
    )
    p.add_argument("study", help=f"study YAML, or '{DEMO}'")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the study")
    p.add_argument("--n", type=int, default=300, help="explanations on the page (default 300)")
    p.add_argument("--out", default="annotate.html", help="the page to write")
    p.add_argument("--models", help="comma-separated models, e.g. vgg11-s0,resnet18-s0")
    p.add_argument("--cities", help="comma-separated cities")
    p.add_argument("--thetas", help="comma-separated θs (default: the study's explain.thetas)")
    p.add_argument("--seed", type=int, help="the sample's seed (default: analysis.seed)")
    p.set_defaults(fn=_cmd_annotate_page)

    p = sub.add_parser("compare", help="two studies' accuracy, AR and R_p^c side by side")
    p.add_argument("study_a", help="store of study A (a path or s3:// URI), e.g. last period's")
    p.add_argument("study_b", help="store of study B; changes are B − A")
    p.add_argument("--out", default="compare.html", help="the page to write")
    p.set_defaults(fn=_cmd_compare)

    p = sub.add_parser("annotate", help="derive 'human' annotations from ground-truth label maps")
    p.add_argument("study", help=f"study YAML, or '{DEMO}'")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the study")
    p.add_argument("--model", required=True, help="whose explanations, e.g. vgg11-s0")
    p.add_argument("--theta", type=float, help="θ of the explanation (default: the smallest)")
    p.add_argument("--limit", type=int, default=1000, help="images to annotate (thesis: 1000)")
    p.add_argument(
        "--similar", type=float, default=0.5, help="runner-up/top area ratio for a second label"
    )
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(fn=_cmd_annotate)


def main(argv: list[str] | None = None, own_process: bool | None = None) -> int:
    """The ``citylens`` command; returns its exit code (see :func:`_cmd_run`).

    Args:
        argv: The arguments (default: the command line's).
        own_process: The process is this command's alone, so a quiet run may filter its
            file descriptor 2 (:mod:`citylens.pipeline.logs`); default: ``argv is None``
            (the console script), False for callers inside other programs.
    """
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
    p.add_argument(
        "--null-city",
        action="store_true",
        help="add 'nullham', a city of shared classes only (the causal check's known answer)",
    )
    p.set_defaults(fn=_cmd_synth)

    for name, helptext in (
        ("run", "run a study (YAML) on Ray"),
        ("demo", "synthesize a small corpus and run the demo study"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "run":
            p.add_argument("study", help=f"study YAML, or '{DEMO}' for the packaged demo")
            p.add_argument(
                "--compare-with",
                metavar="STORE",
                help="afterwards, write <store>/compare.html: STORE's study (A) against this (B)",
            )
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
        p.add_argument("--stages", help="comma-separated subset, e.g. analyze,report")
        p.add_argument("--force", action="store_true", help="re-run stages that are up to date")
        p.add_argument(
            "--verbose",
            action="store_true",
            help="print Ray's own log lines too (by default, when stdout is not a terminal, "
            "only citylens's lines; Ray's stay in its session folder)",
        )
        p.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="if another run holds the store, wait up to this long for it (default: stop)",
        )
        p.set_defaults(fn=_cmd_run, study=DEMO)

    _add_reading_commands(sub)

    args = ap.parse_args(argv)
    args.own_process = argv is None if own_process is None else own_process
    if args.own_process and hasattr(sys.stdout, "reconfigure"):
        # a job's log, a cron mail or a pipe gets each progress line as it happens, not
        # in 8-KiB blocks when the buffer fills (or only at the end)
        sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
