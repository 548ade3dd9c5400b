"""cluster.yaml is a launcher config that installs the project and starts Ray the way Serve needs,
with Ray token authentication on every node, the dashboard on loopback, nothing local synced that
must stay local, and exact versions."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "cluster.yaml"
RAY_DEFAULT_TOKEN_PATH = "~/.ray/auth_token"  # ray/_private/authentication/authentication_token_setup.py


def _config() -> dict[str, Any]:
    config = yaml.safe_load(CONFIG.read_text())
    assert isinstance(config, dict)
    return config


def _ray_starts(commands: list[str]) -> list[str]:
    starts = [c for c in commands if re.search(r"\bray start\b", c)]
    assert starts, commands
    return starts


def _env_before_ray_start(command: str) -> dict[str, str]:
    """The VAR=value assignments that prefix the `ray start` invocation of a shell command."""
    words = shlex.split(command)
    env: dict[str, str] = {}
    for word in words:
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", word)
        if not m:
            break
        env[m.group(1)] = m.group(2)
    rest = words[len(env):]
    assert rest[0].rsplit("/", 1)[-1] == "ray" and rest[1] == "start", command
    return env


def test_cluster_yaml_defines_head_and_workers_that_install_and_start_the_project() -> None:
    config = _config()
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


def test_cluster_yaml_validates_against_rays_launcher_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _config()
    jsonschema.validate(config, schema)
    # What `ray up` itself does before it calls the cloud: fill in the provider's defaults, then validate.
    validate_config(prepare_config(copy.deepcopy(config)))
    # The schema rejects unknown top-level keys, so a misspelt key (rsync_excludes, ...) cannot pass silently.
    misspelt = {**config, "rsync_excludes": config.get("rsync_exclude", [])}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, schema)


def test_every_ray_start_enables_token_auth_and_finds_a_token_that_is_not_in_the_repository() -> None:
    config = _config()
    text = CONFIG.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert not re.search(r"RAY_AUTH_TOKEN=\S", text), "the token itself must never be in cluster.yaml"
    mounts = config.get("file_mounts") or {}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in _ray_starts(config[key]):
            env = _env_before_ray_start(command)
            assert env.get("RAY_AUTH_MODE") == "token", (key, command)
            # Ray reads RAY_AUTH_TOKEN, then the file named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token.
            token_path = env.get("RAY_AUTH_TOKEN_PATH", RAY_DEFAULT_TOKEN_PATH)
            assert token_path in mounts, f"{key}: nothing puts the token at {token_path} on the node"
            # The global file_mounts reach the head (ray up) and every worker (the head's autoscaler).
            source = Path(os.path.expanduser(mounts[token_path]))
            assert source.is_absolute(), "the token file must come from the operator's machine, not the repo"
            assert not source.resolve().is_relative_to(ROOT.resolve())


def test_dashboard_listens_on_loopback_only_and_is_reached_over_ssh() -> None:
    config = _config()
    text = CONFIG.read_text()
    assert "0.0.0.0" not in text
    (head,) = _ray_starts(config["head_start_ray_commands"])
    assert re.findall(r"--dashboard-host[= ](\S+)", head) == ["127.0.0.1"], head
    for command in _ray_starts(config["worker_start_ray_commands"]):
        assert "--dashboard-host" not in command or "--dashboard-host=127.0.0.1" in command
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "ray dashboard cluster.yaml" in header and "127.0.0.1" in header


def test_rsync_never_copies_the_virtualenv_the_data_directory_or_git() -> None:
    config = _config()
    excludes = [p.rstrip("/") for p in config.get("rsync_exclude") or []]
    for name in (".venv", ".commerce", ".git", "__pycache__"):
        assert any(fnmatch.fnmatch(name, pattern) for pattern in excludes), name
    # .gitignore (which also lists the local-only paths) is honoured as an rsync filter in every directory.
    assert ".gitignore" in (config.get("rsync_filter") or [])
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".commerce/" in ignored and ".venv" in ignored  # .venv: the directory, or a link to one


def test_python_and_runtime_packages_are_pinned_to_the_tested_versions() -> None:
    config = _config()
    setup = " ".join(config["setup_commands"])
    assert "python3.11 -m venv" in setup and "apt-get install -y python3.11" in setup
    installs = [c for c in config["setup_commands"] if "pip install" in c and "commerce" in c]
    assert installs
    pins: dict[str, str] = {}
    for command in installs:
        for word in shlex.split(command):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?(==|>=|<=|~=|>|<|!=)?(.*)", word)
            if m and m.group(3):
                assert m.group(3) == "==", f"{word}: pin exact versions"
                pins[m.group(1).lower()] = m.group(4)
            elif re.fullmatch(r"ray(\[[a-z,]+\])?", word):
                pytest.fail(f"unpinned {word} in {command!r}")
    assert pins.get("ray") == metadata.version("ray") == "2.60.0"
    assert "ray[serve]==" in setup
    for package in ("asyncpg", "redis", "fastapi", "pydantic", "pyjwt"):
        assert package in pins, package
    # What they pull in (pydantic-settings, psutil, ...) is held to the lock the tests install from.
    assert all("-c ~/commerce/requirements.lock" in command for command in installs), installs
    for package, version in pins.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        assert version == installed, f"{package}: cluster.yaml pins {version}, the tests run {installed}"
