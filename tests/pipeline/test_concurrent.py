"""Runs that meet each other (slow): two studies at once on one machine, a second run on
a store that is in use, and Ctrl-C — each through the `citylens` command, as a user or a
cron job would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from citylens.storage import Store

pytestmark = pytest.mark.slow

NOISE = (
    "Traceback",
    "Destroying worker",
    "multiple active Ray instances",
    "PlacementGroupCleaner",
    "placement group was removed",
)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    return env


class Run:
    """``citylens run`` in a subprocess; its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "citylens.cli", "run", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while not any(text in ln for ln in self.lines):
            if self.proc.poll() is not None and not self.reader.is_alive():
                raise AssertionError(f"ended before {text!r}:\n{self.output[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"no {text!r} in {timeout} s:\n{self.output[-3000:]}")
            time.sleep(0.2)

    def finish(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def test_two_studies_at_once_and_a_second_run_on_a_busy_store(three_cities, tiny, tmp_path):
    # two studies training at once is what could go wrong (two Rays, two Ray Trains):
    # both stop after train; the stages after it run alike in every other test
    stages = ("--stages", "ingest,train")
    a = Run(
        *tiny.overrides(str(tmp_path / "a"), str(three_cities)),
        "name=study-a",
        "train.epochs=3",
        *stages,
    )
    try:
        a.wait_for("train: fitting")
        b = Run(
            *tiny.overrides(str(tmp_path / "b"), str(three_cities)),
            "name=study-b",
            "train.epochs=2",
            *stages,
        )
        again = Run(*tiny.overrides(str(tmp_path / "a"), str(three_cities)), "name=study-a")
        assert again.finish(timeout=120) == 4, again.output
        assert f"store {tmp_path / 'a'} is in use by study 'study-a'" in again.output
        assert "pid " in again.output and "Traceback" not in again.output
        assert b.finish() == 0, b.output
    finally:
        code_a = a.finish()
    assert code_a == 0, a.output
    for run, name in ((a, "a"), (b, "b")):
        assert not [n for n in NOISE if n in run.output], (name, run.output[-4000:])
        store = Store(str(tmp_path / name))
        assert sorted(store.record("train")["models"]) == ["simpler-s0", "simpler-s1"]
        assert store.record("ingest") is not None and store.ls("lock") == []


def test_ctrl_c_stops_cleanly_naming_the_stage_and_a_rerun_resumes(three_cities, tiny, tmp_path):
    args = [*tiny.overrides(str(tmp_path / "s"), str(three_cities)), "train.epochs=4"]
    run = Run(*args, "--stages", "ingest,train")
    run.wait_for("train: fitting")
    time.sleep(3)
    os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
    assert run.finish(timeout=180) == 130, run.output
    out = run.output
    assert "citylens: interrupted during stage train" in out and "re-run" not in out
    assert "run the same command again to resume" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    store = Store(str(tmp_path / "s"))
    assert store.record("ingest") is not None and store.record("train") is None
    assert store.ls("lock") == []  # the lease was given back
    rerun = Run(*args, "--stages", "ingest,train")
    assert rerun.finish() == 0, rerun.output
    assert "ingest: up to date, skipped" in rerun.output
    assert sorted(store.record("train")["models"]) == ["simpler-s0", "simpler-s1"]
