"""The example Serve config, as ``serve deploy`` reads it: Serve checks its args against the builder's
pydantic model, and the builder refuses a deployment without its secrets. tests/cluster/test_cluster.py
deploys the file itself, the config's way, and places an order through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # what serve deploy calls
from ray.serve._private.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from commerce.app import AppArgs
from commerce.settings import SettingsError

CONFIG = Path(__file__).parents[2] / "deploy" / "serve-config.yaml"


def config_app() -> Any:
    """The config's application, validated by Serve's own schema."""
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text())).applications[0]


@pytest.fixture
def cluster_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("COMMERCE_CONFIG", "COMMERCE_ADMIN_TOKEN", "COMMERCE_SERVER_SECRET", "COMMERCE_JWT_SECRET",
                 "COMMERCE_JWT_PUBLIC_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_the_config_s_args_are_checked_by_the_builder_s_model() -> None:
    app = config_app()
    assert app.import_path == "commerce.app:app_builder"
    assert AppArgs.model_validate(app.args).order_shards == 4
    with pytest.raises(ValidationError, match="shards"):
        call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), {**app.args, "shards": 3})
    with pytest.raises(ValidationError, match="replicas"):
        call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), {**app.args, "replicas": 0})


def test_a_deployment_without_its_secrets_is_refused(cluster_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCE_DATABASE_URL", "postgresql://nowhere/x")
    monkeypatch.setenv("COMMERCE_REDIS_URL", "redis://nowhere:6379/0")
    with pytest.raises(SettingsError, match="COMMERCE_ADMIN_TOKEN.*COMMERCE_SERVER_SECRET"):
        call_user_app_builder_with_args_if_necessary(import_attr(config_app().import_path), config_app().args)
