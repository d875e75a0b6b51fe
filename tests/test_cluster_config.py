"""cluster.yaml passes Ray's own cluster-config validator and keeps the cluster private."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_validator(raw):
    config = prepare_config(copy.deepcopy(raw))  # fills Ray's AWS defaults, no cloud calls
    validate_config(config)
    # and the validator is not a rubber stamp: a misspelt field fails it
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(bad))


def test_gpu_workers_autoscale_from_zero_behind_a_cpu_head(raw):
    nodes = raw["available_node_types"]
    assert raw["provider"]["type"] == "aws"
    assert nodes[raw["head_node_type"]]["node_config"]["InstanceType"].startswith("m")
    gpu = nodes["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 2
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))


def test_nothing_is_exposed_publicly(raw):
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmds in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in " ".join(cmds)
    for rule in raw["provider"]["security_group"]["IpPermissions"]:
        assert (rule["FromPort"], rule["ToPort"]) == (22, 22)  # SSH only; no dashboard port
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule["IpRanges"])


def test_nodes_get_the_pinned_environment_and_citylens(raw):
    setup = "\n".join(raw["setup_commands"])
    assert "torch==2.14.1 torchvision==0.29.1" in setup
    assert "pip install -q -e ~/citylens" in setup
    assert raw["file_mounts"]["~/citylens"] == "."
    # the job entrypoint runs in the head's environment: Ray starts from the virtualenv
    assert all("source ~/venv/bin/activate" in c for c in raw["head_start_ray_commands"][1:])
