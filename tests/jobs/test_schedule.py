"""The schedule examples: cron + submit.sh, and the KubeRay RayJob / CronJob manifests."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from citylens.config import apply_overrides

SCHEDULE = Path(__file__).resolve().parents[2] / "jobs" / "schedule"


def test_submit_script_submits_a_dated_job_without_waiting(tmp_path):
    # a stand-in `ray` that records its arguments: the script's own logic is under test
    fake = tmp_path / "bin" / "ray"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(
        [SCHEDULE / "submit.sh", "s3://b/studies/tokyo.yaml", "run.gpus=8"], env=env, check=True
    )
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:3] == ["job", "submit", "--no-wait"]
    sid = argv[argv.index("--submission-id") + 1]
    assert re.fullmatch(r"tokyo-\d{8}", sid)
    assert Path(argv[argv.index("--working-dir") + 1]) == SCHEDULE.parents[1]
    assert argv[argv.index("--") + 1 :] == [
        "python",
        "jobs/run_study.py",
        "s3://b/studies/tokyo.yaml",
        "run.gpus=8",
    ]
    bad = subprocess.run([SCHEDULE / "submit.sh"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "usage" in bad.stderr


def test_crontab_calls_the_submit_script():
    lines = [
        line
        for line in (SCHEDULE / "crontab.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    fields = lines[0].split()
    assert len(fields[:5]) == 5 and fields[5].endswith("jobs/schedule/submit.sh")


def _entrypoint_args(entrypoint: str) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[0] == "python" and argv[1].endswith("jobs/run_study.py")
    return argv[2:]


def test_rayjob_runs_the_study_entry_point_on_an_autoscaling_private_cluster():
    job = yaml.safe_load((SCHEDULE / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    study, *overrides = _entrypoint_args(spec["entrypoint"])
    assert study.startswith("s3://") and study.endswith(".yaml")
    apply_overrides({}, overrides)  # the overrides are citylens overrides
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].startswith("2.60")
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"]) * gpu["maxReplicas"]
    assert f"run.gpus={gpus}" in overrides  # the study asks for what the group can grow to


def test_cronjob_creates_the_same_rayjob_under_a_dated_name(tmp_path):
    cron = yaml.safe_load((SCHEDULE / "cronjob.yaml").read_text())
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    # run the CronJob's own command with `kubectl` replaced by `cat`, on the real manifest
    (tmp_path / "schedule").mkdir()
    (tmp_path / "schedule" / "rayjob.yaml").write_text((SCHEDULE / "rayjob.yaml").read_text())
    script = script.replace("/schedule/", f"{tmp_path}/schedule/")
    script = script.replace("kubectl create -f -", "cat")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True)
    created = yaml.safe_load(out.stdout)
    original = yaml.safe_load((SCHEDULE / "rayjob.yaml").read_text())
    assert re.fullmatch(r"citylens-tokyo-\d{8}", created["metadata"]["name"])
    assert created["spec"] == original["spec"]
