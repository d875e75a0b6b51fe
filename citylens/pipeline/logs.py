"""What a run prints: citylens's own progress lines, and Ray's only when asked for.

Under ``ray job submit``, cron or a CI log, stdout is not a terminal and Ray's console
output is noise around citylens's own lines: Ray Data logs every dataset's start, plan
and progress at INFO, the workers' and raylet's output is forwarded to the driver with
``(pid=…)``/``(raylet)`` prefixes, and two messages look like failures on a healthy run:

* ``core_worker.cc: Actor … has constructor arguments in the object store and
  max_restarts > 0`` (ERROR level, from the C++ core worker, straight to file
  descriptor 2). Ray Data passes every actor pool's map function to its actors as an
  object reference and lets them restart; Ray warns that a restart would fail if that
  object were lost (ray-project/ray#53727). The stage holds the reference until it
  ends, so a restart finds it; the crash tests restart explain's actors this way.
* ``(raylet) WARNING: 8 PYTHON worker processes have been started … 4x the maximum
  expected startup concurrency``: a study's actors (Ray Train's controller, workers and
  their helpers, the stage's actor pool) each need a process, more than Ray expects on a
  machine of few CPUs; nothing waits on them.
* ``Token authentication is enabled for this Ray cluster`` when citylens starts a local
  Ray: that is Ray's default and what it should do. (The warning that token
  authentication is *disabled* is kept: it is about security.)

:func:`configure` decides once per process. Quiet (stdout not a terminal and no
``--verbose``): Ray Data's console handler is raised to WARNING, Ray's own log lines
stop being forwarded (``log_to_driver=False``), the two messages above are dropped, and
:func:`session_logs_line` names the folder where Ray keeps everything. Ray's files are
untouched: ``<session>/logs`` holds every worker's output, ``logs/ray-data`` Ray Data's.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

__all__ = [
    "HARMLESS",
    "configure",
    "harmless",
    "init_args",
    "is_quiet",
    "quiet_ray_data",
    "ray_data_console_handlers",
    "session_logs_line",
]

# Lines dropped from the driver's file descriptor 2 when quiet (see the module text).
HARMLESS = (
    re.compile(r"core_worker\.cc:\d+: Actor .* has constructor arguments in the object store"),
    re.compile(r"PYTHON worker processes have been started on node: .* maximum expected"),
)

_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_state: dict = {"quiet": None, "filter": None}


def harmless(line: str) -> bool:
    """Whether a line of Ray's stderr is one of :data:`HARMLESS`."""
    return any(p.search(line) for p in HARMLESS)


def is_quiet() -> bool:
    """Whether Ray's console output is held back (:func:`configure`).

    Before :func:`configure` is called: whether stdout is not a terminal.
    """
    if _state["quiet"] is None:
        return not _isatty(sys.stdout)
    return _state["quiet"]


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure(verbose: bool = False, own_process: bool = False) -> bool:
    """Decide, for this process, whether Ray's console output is shown; apply it.

    Args:
        verbose: Show everything Ray prints (``--verbose``), terminal or not.
        own_process: The process is citylens's own (the ``citylens`` command, a job's
            entry point), so its file descriptor 2 may be filtered; a caller inside
            another program (a test runner, a notebook) keeps its descriptors.

    Returns:
        Whether the run is quiet (stdout not a terminal and not ``verbose``).
    """
    quiet = not verbose and not _isatty(sys.stdout)
    _state["quiet"] = quiet
    if quiet:
        quiet_ray_data()
        logging.getLogger(_AUTH_LOGGER).addFilter(_drop_default_auth_notice)
        _filter_raylet_notices()
        if own_process:
            _filter_stderr()
    return quiet


def _drop_default_auth_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Token authentication is enabled")


def _filter_raylet_notices() -> None:
    """Drop :data:`HARMLESS` notices the driver's error listener prints as ``(raylet)``.

    Ray prints the GCS's error messages for the job (a worker killed for memory, a node
    lost) from a thread of the driver through ``ray._private.worker.print_to_stdstream``;
    every other message still prints. Where a later Ray moves it, nothing is dropped.
    """
    try:
        from ray._private import worker
    except ImportError:
        return
    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "_citylens", False):
        return

    def print_unless_harmless(data, *args, **kwargs):
        lines = [line for line in data.get("lines", []) if not harmless(str(line))]
        if lines:
            show({**data, "lines": lines}, *args, **kwargs)

    print_unless_harmless._citylens = True
    worker.print_to_stdstream = print_unless_harmless


def quiet_ray_data() -> None:
    """Raise Ray Data's console handler to WARNING in this process.

    Its file handlers, under the session's ``logs/ray-data``, keep everything.
    """
    import ray.data  # noqa: F401  (configures the "ray.data" logger on import)

    for handler in ray_data_console_handlers():
        handler.setLevel(logging.WARNING)


def ray_data_console_handlers() -> list[logging.Handler]:
    """Ray Data's own handlers of the ``ray.data`` logger that write to the console.

    Not its file handlers, nor handlers another program added (a test runner's capture).
    """
    return [
        h
        for h in logging.getLogger("ray.data").handlers
        if type(h).__module__.startswith("ray.") and not type(h).__name__.endswith("FileHandler")
    ]


def init_args() -> dict:
    """``ray.init`` arguments for the decision: whether worker output reaches the driver."""
    return {"log_to_driver": not is_quiet()}


def session_logs_line() -> str | None:
    """Where this Ray session keeps its logs, in one line (None when not started here).

    A driver that joined a cluster names the head's folder: the files are on the head.
    """
    try:
        import ray

        node = ray._private.worker._global_node
        folder = node.get_logs_dir_path() if node is not None else None
    except Exception:
        return None
    if not folder:
        return None
    return f"Ray's logs: {folder} (on the head node; --verbose prints them here)"


def _filter_stderr() -> None:
    """Pass this process's file descriptor 2 through a filter that drops :data:`HARMLESS`.

    The C++ core worker writes to the descriptor, not to ``sys.stderr``, so the filter sits
    at the descriptor: a child process reads a pipe that replaces fd 2 and copies every
    other line to the original. Being a process of its own, it outlives a crash of this
    one and forwards its last lines.
    """
    if _state["filter"] is not None:
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read, write = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-u", "-m", "citylens.pipeline.logs"],
            stdin=read,
            stdout=original,
            stderr=original,
            close_fds=True,
            # its own session: Ctrl-C meant for the run must not stop the filter first
            start_new_session=True,
        )
    except OSError:
        return
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    os.close(original)
    _state["filter"] = child


def _copy_but_harmless(source, sink) -> None:
    """Copy lines from ``source`` to ``sink`` (binary streams) but :data:`HARMLESS` ones."""
    for raw in source:
        if not harmless(raw.decode("utf-8", "replace")):
            sink.write(raw)
            sink.flush()


if __name__ == "__main__":  # the filter process of _filter_stderr
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when the last writer closes
    _copy_but_harmless(sys.stdin.buffer, sys.stdout.buffer)
