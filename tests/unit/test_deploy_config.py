"""The deployment files: the Serve config and the RayService's serveConfigV2 are valid for Serve, say the
same, and keep their secrets out."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from commerce.app import AppArgs

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_serve_config_and_the_rayservice_deploy_the_same_valid_application() -> None:
    config = yaml.safe_load((DEPLOY / "serve-config.yaml").read_text())
    service = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == config
    app = ServeDeploySchema.model_validate(embedded).applications[0]
    assert app.import_path == "commerce.app:app_builder" and AppArgs.model_validate(app.args).max_replicas == 6
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == __import__("ray").__version__
    assert cluster["authOptions"] == {"mode": "token"}  # the dashboard it exposes to the operator is guarded
    # Never two clusters on one database at once: an upgrade is a delete, then an apply.
    assert service["spec"]["upgradeStrategy"] == {"type": "None"}


def test_no_secret_is_written_in_the_deployment_files() -> None:
    service = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    env = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    secret_names = {"COMMERCE_ADMIN_TOKEN", "COMMERCE_SERVER_SECRET", "COMMERCE_JWT_SECRET", "PGPASSWORD"}
    assert {e["name"] for e in env if "valueFrom" in e} == secret_names
    assert all("value" not in e for e in env if e["name"] in secret_names)
    for path in DEPLOY.glob("*.yaml"):
        text = path.read_text()
        assert ":" not in text.split("postgresql://")[1].split("@")[0]  # no password in a database URL
