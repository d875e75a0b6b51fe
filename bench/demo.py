"""The end-to-end demo study: wall time and peak memory, and each stage's own seconds.

    python bench/demo.py [--profile DIR] [overrides ...]

Runs ``citylens demo`` (synthesize the two-city corpus, then every stage on a fresh
local Ray) in a temporary folder and reads each stage's seconds from its committed
record. Peak memory is the resident memory of the whole process tree (driver, Ray's
own processes, workers), sampled every 0.1 s.

``--profile DIR`` runs the demo under py-spy (``--subprocesses``, so Ray workers are
sampled too), writes ``DIR/demo.speedscope.json`` (open it on speedscope.app) and
``DIR/demo.txt`` — the functions where the samples fall, per process kind.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt_rate, machine, print_table, row  # noqa: E402

STAGES = ["ingest", "train", "explain", "segment", "ablate", "overlap", "analyze", "report"]


def _work(stage: str, rec: dict) -> tuple[int, str]:
    """Images a stage handled (for images/s) and what they were."""
    counts = rec.get("counts", {})
    if stage == "train":
        return counts.get("train_images", counts.get("images", 0)), "training images"
    if stage == "overlap":
        return counts.get("explanations", 0), "explanations"
    for key in ("images", "inputs", "rows"):
        if key in counts:
            return int(counts[key]), "images"
    return 0, ""


def run_demo(workdir: Path, overrides: list[str], profile: Path | None) -> tuple[float, float]:
    """Runs the demo in ``workdir``; returns (wall seconds, peak MB)."""
    citylens = shutil.which("citylens", path=str(Path(sys.executable).parent)) or "citylens"
    cmd = [citylens, "demo", *overrides]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        raw = profile / "demo.raw.txt"
        cmd = [
            py_spy,
            "record",
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "20",
            "--format",
            "raw",
        ]
        cmd += ["-o", str(raw), "--", citylens, "demo", *overrides]
    with PeakMemory(tree=True) as mem:
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, mem.peak_mb


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Where py-spy's samples fall: self time per function, and inclusive time of
    citylens's own functions."""
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in {f for f in frames if "citylens/" in f}:
            incl[f] += n
    out = [f"{total} samples (20 Hz, all processes)", "", "self time:"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time, citylens functions:"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def measure(overrides: list[str], profile: Path | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak = run_demo(Path(tmp), overrides, profile)
        stages = Path(tmp) / "citylens-demo" / "stages"
        records = {
            s: json.loads((stages / f"{s}.json").read_text())
            for s in STAGES
            if (stages / f"{s}.json").exists()
        }
    rows = []
    for stage, rec in records.items():
        n, what = _work(stage, rec)
        secs = rec["seconds"]
        rows.append(
            row(
                "demo",
                f"stage {stage}",
                n / secs if n and secs else 0.0,
                "img/s",
                note=f"{secs:.1f} s" + (f", {n} {what}" if n else ""),
            )
        )
    staged = sum(r["seconds"] for r in records.values())
    rows.append(
        row(
            "demo",
            "whole demo (synthesize, Ray start, every stage)",
            0.0,
            "",
            peak_mb=peak,
            note=f"{wall:.0f} s wall, {staged:.0f} s in stages",
        )
    )
    if profile is not None:
        text = summarize_profile(profile / "demo.raw.txt")
        (profile / "demo.txt").write_text(text + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the demo study")
    ap.add_argument("--profile", type=Path, help="run under py-spy; write the profile here")
    ap.add_argument("--json", action="store_true", help="rows for bench/all.py")
    args = ap.parse_args()
    rows = measure(args.overrides, args.profile)
    if args.json:
        emit(rows)
        return
    print(f"demo; {machine()}\n")
    print_table(
        ["case", "img/s", "peak MB", "note"],
        [
            [
                r["case"],
                fmt_rate(r["rate"]) if r["rate"] else "",
                f"{r['peak_mb']:.0f}" if r["peak_mb"] else "",
                r["note"],
            ]
            for r in rows
        ],
    )
    if args.profile:
        print()
        print((args.profile / "demo.txt").read_text())


if __name__ == "__main__":
    main()
