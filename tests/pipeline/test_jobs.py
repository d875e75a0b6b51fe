"""`ray job submit` against a real local cluster started by the test (slow)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from citylens.pipeline.run import STAGES
from citylens.storage import Store

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _head(bin_dir: Path, tmp_path: Path):
    """``ray start --head --block`` of ``bin_dir``'s Ray, in its own process group.

    Yields ``(JobSubmissionClient, dashboard address)``; stopped by killing the group.
    """
    ports = {name: _free_port() for name in ("gcs", "dashboard", "client", "agent", "metrics")}
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # a dev head on loopback; clusters keep token auth
    env["PATH"] = f"{bin_dir}:{env['PATH']}"  # jobs run that environment's python
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    env.pop("RAY_ADDRESS", None)
    env.pop("VIRTUAL_ENV", None)
    # Unix socket paths must stay under 108 bytes: a short temp dir, not pytest's.
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    cmd = [
        str(bin_dir / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={ports['gcs']}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-agent-listen-port={ports['agent']}",
        f"--metrics-export-port={ports['metrics']}",
        "--num-cpus=2",
        f"--object-store-memory={400 * 2**20}",
        f"--temp-dir={temp}",
    ]
    log_path = tmp_path / "head.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        address = f"http://127.0.0.1:{ports['dashboard']}"
        from ray.job_submission import JobSubmissionClient

        try:
            for _ in range(120):
                try:
                    client = JobSubmissionClient(address)
                    client.list_jobs()
                    break
                except Exception:
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text()[-3000:]) from None
                    time.sleep(1)
            yield client, address
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            shutil.rmtree(temp, ignore_errors=True)


SMALL_DEMO = (
    "synthetic.places=8 synthetic.views=2 models.archs=[simpler] models.seeds=[0] "
    "train.epochs=1 analysis.perplexity=5 ablate.max_objects=2 ablate.steps=[0,0.2]"
)


@pytest.mark.slow
def test_a_head_with_only_ray_runs_a_study_through_the_documented_runtime_env(
    tmp_path, ray_lines
):
    """jobs/runtime_env.yaml on a head whose Python has Ray and nothing else: the
    README's `ray job submit`, and a job log of citylens's own lines."""
    stock = Path(tempfile.mkdtemp(prefix="stock", dir="/tmp"))
    try:
        python = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(python), "-m", "venv", str(stock)], check=True, timeout=120)
        pip = [str(stock / "bin" / "pip"), "install", "-q", "ray[default]==2.60.0"]
        subprocess.run(pip, check=True, timeout=600, capture_output=True)
        bare = subprocess.run(
            [str(stock / "bin" / "python"), "-c", "import torch, citylens"],
            cwd=tmp_path,
            capture_output=True,
        )
        assert bare.returncode != 0  # neither torch nor citylens: a stock Ray
        store = tmp_path / "store"
        with _head(stock / "bin", tmp_path) as (client, address):
            assert address.startswith("http://127.0.0.1:")  # dashboard bound to loopback
            # the README's command, run with that head's own `ray` from the repository
            cmd = [
                str(stock / "bin" / "ray"),
                "job",
                "submit",
                f"--address={address}",
                "--runtime-env=jobs/runtime_env.yaml",
                "--submission-id=citylens-test-job",
                "--",
                *f"python jobs/run_study.py demo store={store} {SMALL_DEMO}".split(),
            ]
            env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
            env["PATH"] = f"{stock / 'bin'}:{env['PATH']}"
            done = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500
            )
            logs = client.get_job_logs("citylens-test-job")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        assert "Report:" in out
        assert f"{len(STAGES)} stage(s) ran" in logs and "Report:" in logs
        # no line per Ray Train report, no torch warning from the explain actor, no Ray
        # Data warning that a decode task used more memory than it asked for
        for noise in ("Reporting training result", "is not writable", "used up to"):
            assert noise not in logs, noise
        # a job's log is citylens's own lines (the job's stdout is no terminal)
        theirs, errors = ray_lines(logs)
        assert len(theirs) <= 5 and not errors, "\n".join(theirs)
        s = Store(str(store))
        assert all(s.record(stage) is not None for stage in STAGES)
        assert s.exists("report.html")
    finally:
        shutil.rmtree(stock, ignore_errors=True)
