"""Starting Ray: a local Ray of citylens's own, its dashboard on loopback only."""

from __future__ import annotations

import os
import subprocess
import sys

_CHECK = """
import ray
from citylens.config import load_config
from citylens.pipeline import cluster

cluster.connect(load_config(None, []))
try:
    info = ray._private.worker._global_node.address_info
    print("DASHBOARD", info["webui_url"])
    print("CPUS", int(ray.cluster_resources()["CPU"]))
finally:
    ray.shutdown()
"""


def test_a_local_ray_binds_its_dashboard_to_loopback():
    env_free = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, env=env_free, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    url = next(ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("DASHBOARD"))
    assert url.startswith("127.0.0.1:"), url
