"""cluster.yaml is a launcher config that installs the project and starts Ray the way Serve needs."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_defines_head_and_workers_that_install_and_start_the_project() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands"} <= set(config)
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes and len(nodes) >= 2
    assert any(n.get("min_workers", 0) >= 1 for name, n in nodes.items() if name != config["head_node_type"])
    assert any("pip install" in c and "commerce" in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--address=$RAY_HEAD_IP" in workers
    for started in (head, workers):
        assert "RAY_SERVE_ENABLE_HA_PROXY=1" in started and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in started
    assert "RAY_ADDRESS" in CONFIG.read_text() and "commerce serve" in CONFIG.read_text()
