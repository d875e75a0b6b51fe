"""A quiet run: Ray's console lines held back, its harmless alarms dropped (no Ray)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest

from citylens.pipeline import logs

# Copied from a demo's log before this module existed.
CONSTRUCTOR_ARGS = (
    "[2026-12-02 18:39:50,546 E 2210 2210] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(CamWorker))' and ID: '3a0c40dce6129c01551beb7901000000' has "
    "constructor arguments in the object store and max_restarts > 0. If the arguments in "
    "the object store go out of scope or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details."
)
WORKER_COUNT = (
    "WARNING: 8 PYTHON worker processes have been started on node: 6d1d7ba1a27f with "
    "address: 127.0.0.1, which is 4x the maximum expected startup concurrency (2). This "
    "could be a result of using a large number of actors."
)
# What must still show: a real failure the GCS reports, and any other C++ error.
WORKER_KILLED = "A worker died or was killed while executing a task by an unexpected system error."
OTHER_CPP_ERROR = "[2026-12-02 18:39:50,546 E 2210 2210] core_worker.cc:1020: Failed to put"


def test_only_the_two_known_alarms_count_as_harmless(ray_lines):
    assert logs.harmless(CONSTRUCTOR_ARGS) and logs.harmless(WORKER_COUNT)
    assert not logs.harmless(WORKER_KILLED) and not logs.harmless(OTHER_CPP_ERROR)
    # the test's own classifier sees both as Ray's lines at ERROR level / not
    theirs, errors = ray_lines(f"{CONSTRUCTOR_ARGS}\n(raylet) {WORKER_COUNT}\nown line")
    assert len(theirs) == 2 and errors == [CONSTRUCTOR_ARGS]


_WRITER = textwrap.dedent(
    """
    import os, sys
    from citylens.pipeline import logs
    print("quiet" if logs.configure(verbose={verbose}, own_process=True) else "loud")
    sys.stdout.flush()
    os.write(2, {harmless!r}.encode() + b"\\n")   # as the C++ core worker writes
    os.write(2, {other!r}.encode() + b"\\n")
    print("python stderr", file=sys.stderr)
    os.write(2, b"no newline at the end")
    """
)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_descriptor_filter_drops_only_harmless_lines(tmp_path, verbose):
    script = _WRITER.format(verbose=verbose, harmless=CONSTRUCTOR_ARGS, other=OTHER_CPP_ERROR)
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:  # files, not terminals: a quiet run
        subprocess.run([sys.executable, "-c", script], stdout=o, stderr=e, check=True, timeout=60)
    assert out.read_text().strip() == ("loud" if verbose else "quiet")
    # the filter process forwards until the last writer closes; it may lag the writer
    want = [OTHER_CPP_ERROR, "python stderr", "no newline at the end"]
    if verbose:
        want.insert(0, CONSTRUCTOR_ARGS)
    for _ in range(100):
        if err.read_text().splitlines() == want:
            break
        subprocess.run(["sleep", "0.1"])
    assert err.read_text().splitlines() == want


def test_a_caller_inside_another_program_keeps_its_descriptors(monkeypatch):
    monkeypatch.setattr(logs, "_state", {"quiet": None, "filter": None})
    monkeypatch.setattr(logs, "_filter_raylet_notices", lambda: None)
    monkeypatch.setattr(logs, "quiet_ray_data", lambda: None)
    assert logs.configure(own_process=False)  # pytest's stdout is no terminal
    assert logs._state["filter"] is None
    assert logs.init_args() == {"log_to_driver": False}
    assert not logs.configure(verbose=True)
    assert logs.init_args() == {"log_to_driver": True}


def test_raylet_notices_are_filtered_and_the_rest_printed(monkeypatch, capsys):
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)
    logs._filter_raylet_notices()
    logs._filter_raylet_notices()  # once only, not wrapped twice
    assert worker.print_to_stdstream._citylens
    data = {"lines": [WORKER_COUNT], "pid": "raylet", "is_err": False}
    worker.print_to_stdstream(data, ignore_prefix=False)
    assert capsys.readouterr().out == ""
    worker.print_to_stdstream({**data, "lines": [WORKER_KILLED]}, ignore_prefix=False)
    assert WORKER_KILLED in capsys.readouterr().out


def test_ray_data_info_lines_stop_at_the_console():
    import ray.data  # noqa: F401

    # Ray Data's console handler keeps the stream of its first import (see conftest.py):
    # read what it writes from a stream of our own
    console = logs.ray_data_console_handlers()
    assert console, "Ray Data no longer logs to the console: nothing to quiet"
    was = [(h.level, h.setStream(io.StringIO())) for h in console]
    try:
        for h in console:  # as Ray Data starts (an in-process CLI test may have quieted it)
            h.setLevel(logging.INFO)
        logging.getLogger("ray.data.test").info("Starting execution of Dataset x")
        assert all("Dataset x" in h.stream.getvalue() for h in console)  # Ray Data's default
        logs.quiet_ray_data()
        logging.getLogger("ray.data.test").info("Starting execution of Dataset y")
        logging.getLogger("ray.data.test").warning("a real warning")
        for h in console:
            assert "Dataset y" not in h.stream.getvalue()
            assert "a real warning" in h.stream.getvalue()
    finally:
        for h, (level, stream) in zip(console, was, strict=True):
            h.setLevel(level)
            h.setStream(stream)


def test_only_the_default_token_notice_is_dropped():
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, msg, None, None)

    assert not logs._drop_default_auth_notice(record("Token authentication is enabled for x"))
    assert logs._drop_default_auth_notice(record("Token authentication is disabled for x"))
