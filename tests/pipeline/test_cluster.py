"""Starting Ray: a local Ray of citylens's own, on loopback only, blind to other Rays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import sys
import ray
import psutil  # Ray's vendored copy, on the path once ray is imported
from citylens.config import load_config
from citylens.pipeline import cluster

cluster.connect(load_config(None, []))  # a study's own start: a local Ray, its dashboard
print("DASHBOARD", ray._private.worker._global_node.address_info["webui_url"], flush=True)

@ray.remote
class Probe:
    def ping(self):
        return 1

@ray.remote
def lookup(actor_id):
    from ray.util.state import get_actor
    try:
        found = get_actor(actor_id, timeout=30)
        return found.state if found else "NOT FOUND"
    except Exception as err:
        return f"{type(err).__name__}: {err}"

probe = Probe.remote()
ray.get(probe.ping.remote())
print("LOOKUP", ray.get(lookup.remote(probe._actor_id.hex())), flush=True)
listening = set()
for proc in psutil.Process().children(recursive=True):
    try:
        listening |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == "LISTEN"}
    except psutil.Error:
        pass
print("LISTEN", " ".join(sorted(listening)), flush=True)
if len(sys.argv) > 1:  # the other cluster: stay up until told to stop
    sys.stdin.read()
ray.shutdown()
"""


@pytest.mark.slow  # 46 s: two local Rays; keeps the fast suite under 10 min
def test_two_local_rays_on_one_machine_each_see_only_their_own_cluster():
    """Ray Train's placement-group cleaner asks the state API whether its controller is
    alive; with a second Ray on the machine it used to ask the wrong one (or fail on
    "multiple active Ray instances") and remove its own run's placement group. Every
    process of a local Ray of ours names its own dashboard; every server is on loopback."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    }
    other = subprocess.Popen(
        [sys.executable, "-c", _PROBE, "stay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = [other.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("DASHBOARD 127.0.0.1:"), lines
        assert lines[1].split() == ["LOOKUP", "ALIVE"], lines
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300
        )
    finally:
        other.communicate("", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = dict(ln.split(" ", 1) for ln in out.stdout.splitlines() if " " in ln)
    assert got["DASHBOARD"].startswith("127.0.0.1:") and got["LOOKUP"] == "ALIVE", got
    for line in (lines[2], "LISTEN " + got["LISTEN"]):
        addresses = line.split()[1:]
        assert addresses and set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, line


def _timed_out_start(tries: list, children: list, fail_times: int):
    """A start that, like Ray's, leaves a child process behind when it times out."""

    def start():
        tries.append(1)
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        if len(tries) <= fail_times:
            raise Exception("The current node timed out during startup. This could happen")

    return start


def test_a_start_that_times_out_is_stopped_and_tried_again():
    from citylens.pipeline.cluster import start_retrying

    tries, children = [], []
    start_retrying(_timed_out_start(tries, children, fail_times=1), attempts=3)
    assert len(tries) == 2
    # the timed-out try's process was stopped and reaped, the good try's is running
    assert children[0].poll() is not None
    assert children[1].poll() is None
    children[1].kill()
    children[1].wait()


def test_the_last_timeout_and_any_other_error_are_raised():
    from citylens.pipeline.cluster import start_retrying

    tries, children = [], []
    with pytest.raises(Exception, match="timed out during startup"):
        start_retrying(_timed_out_start(tries, children, fail_times=5), attempts=2)
    assert len(tries) == 2
    assert children[0].poll() is not None  # stopped before the second try
    for c in children:
        c.kill()
        c.wait()

    calls = []

    def broken():
        calls.append(1)
        raise ValueError("object_store_memory must be positive")

    with pytest.raises(ValueError, match="object_store_memory"):
        start_retrying(broken, attempts=3)
    assert calls == [1]


def test_child_pids_are_this_process_children_only():
    from citylens.pipeline.cluster import child_pids, stop_pids

    before = child_pids()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    assert child_pids() - before == {p.pid}
    assert os.getpid() not in child_pids() and os.getppid() not in child_pids()
    stop_pids({p.pid}, grace_s=5.0)
    assert p.poll() is not None


def test_an_address_nothing_answers_at_is_refused_at_once_naming_it():
    import socket
    import time

    from citylens.errors import InputError
    from citylens.pipeline.cluster import check_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: connections are refused
        t = time.monotonic()
        with pytest.raises(InputError, match=f"'127.0.0.1:{closed}'.*RAY_ADDRESS"):
            check_reachable(f"127.0.0.1:{closed}")
        assert time.monotonic() - t < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")  # something answers: no error
    for left_to_ray in ("auto", "local", "ray://10.0.0.1:10001"):
        check_reachable(left_to_ray)
    with pytest.raises(InputError, match="bad port"):
        check_reachable("head:http")
