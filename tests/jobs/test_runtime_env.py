"""jobs/runtime_env.yaml: what Ray reads, and the requirements it names (no Ray started)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_runtime_env_names_every_dependency_of_the_project(monkeypatch):
    from ray._private.runtime_env.validation import parse_and_validate_pip

    env = yaml.safe_load((REPO / "jobs/runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv" in env["excludes"]
    monkeypatch.chdir(REPO)  # `ray job submit` runs from the repository's root
    pip = parse_and_validate_pip(env["pip"])
    # Ray passes the file's lines to `pip install -r` as they are: comments included
    pinned = {_name(r): r for r in pip["packages"] if r.strip() and not r.startswith("#")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    assert wanted <= set(pinned), f"missing from jobs/requirements.txt: {wanted - set(pinned)}"
    # exact versions (what citylens is tested with), and Ray at the cluster's own
    assert all("==" in r for r in pinned.values()), pinned
    assert pinned["torch"] == "torch==2.14.1" and pinned["ray"].endswith("==2.60.0")
