"""bench/: the table bench/all.py publishes, and the pieces it is built from (tiny sizes;
the timings themselves are run by hand, never as tests)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    """A bench script as module ``bench_<name>`` (the scripts import ``_common`` from
    their own folder)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_all = _load("all")
_common = sys.modules["_common"]


def test_rows_say_whether_the_target_is_met():
    met = _common.row("s", "c", 10.0, reference="r", ratio=1.2, target=1.0)
    missed = _common.row("s", "c", 10.0, reference="r", ratio=0.7, target=0.8)
    untargeted = _common.row("s", "c", 10.0)
    assert (met["met"], missed["met"], untargeted["met"]) == (True, False, None)


def test_all_writes_its_table_between_the_markers_and_nothing_else(tmp_path):
    rows = [
        _common.row("decode", "JPEG citylens", 399.0, "img/s/core", ratio=0.94, target=0.9),
        _common.row("t-SNE", "openTSNE, 20,000 points", 367.0, "points/s", ratio=2.9, target=5),
    ]
    text = bench_all.render(rows, {"decode": 34.0, "tsne": 379.0}, 413.0)
    assert "| decode | JPEG citylens | 399 img/s/core" in text.replace("  ", "")
    assert "**no**" in text and "yes" in text and "6.9 min" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench_all.START}\nold table\n{bench_all.END}\nafter\n")
    bench_all.write_readme(text, readme)
    body = readme.read_text()
    assert body.startswith("intro\n") and body.endswith("after\n")
    assert "old table" not in body and "JPEG citylens" in body
    bench_all.write_readme(text, readme)  # idempotent: regenerating replaces, never appends
    assert readme.read_text() == body
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="bench:all"):
        bench_all.write_readme(text, readme)


PEAK_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import _common
with _common.PeakMemory() as big:
    np.ones(200_000_000, np.uint8).sum()  # 200 MB
with _common.PeakMemory() as small:  # after: the high-water mark must have been reset
    np.ones(1_000_000, np.uint8).sum()
print(small.peak_mb, big.peak_mb)
"""


def test_peak_memory_sees_an_allocation():
    # A fresh process: in a long-lived one (this pytest run, after Ray and torch tests)
    # glibc may serve 200 MB from a free chunk already resident in its heap, so resident
    # memory rightly does not grow (seen in CI: both blocks read 2330 MB)
    out = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(BENCH)], capture_output=True, text=True, check=True
    )
    small, big = map(float, out.stdout.split())
    assert 150 < big - small < 300


def test_decode_bench_measures_every_decoder_on_the_same_images():
    rows = _load("decode").measure(size=64, n=3, side=160, repeats=1)
    cases = [r["case"] for r in rows]
    assert cases == [
        "JPEG Pillow",
        "JPEG torchvision.io",
        "JPEG citylens",
        "PNG Pillow",
        "PNG torchvision.io",
        "PNG citylens",
    ]
    assert all(r["rate"] > 0 for r in rows)
    ours = [r for r in rows if r["case"].endswith("citylens")]
    assert all(r["target"] == 0.9 and r["ratio"] > 0 for r in ours)


def test_a_pipe_in_a_cell_does_not_split_the_markdown_row():
    rows = [_common.row("Grad-CAM", "vgg11", 8.0, note="max |Δ mask| 7e-07")]
    line = [x for x in bench_all.render(rows, {}, 1.0).splitlines() if "vgg11" in x][0]
    assert line.count("|") - line.count("\\|") == len(bench_all.HEADER) + 1


def test_machine_line_tells_hosts_of_one_model_name_apart():
    cpuinfo = Path("/proc/cpuinfo")
    line = _common.machine()
    assert "cores" in line and "torch" in line
    if cpuinfo.exists() and "cpu family" in cpuinfo.read_text():
        family = next(
            x.split(":")[1].strip()
            for x in cpuinfo.read_text().splitlines()
            if x.startswith("cpu family")
        )
        assert f"family {family} model " in line
