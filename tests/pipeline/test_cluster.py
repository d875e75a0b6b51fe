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
