"""The example Serve config builds the service as ``serve deploy`` would: Serve checks its args against
the builder's pydantic model and calls the builder, which starts the actors; the app then answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from ray import serve
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # what serve deploy calls
from ray.serve._private.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from commerce.app import AppArgs
from commerce.settings import SettingsError
from tests.e2e.helpers import API, confirmed_order
from tests.integration.ray_support import TEST_JWT_SECRET, eventually
from tests.support import Servers, create_database, drop_database

CONFIG = Path(__file__).parents[2] / "deploy" / "serve-config.yaml"
TOKEN = "serve-config-admin-token"


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


async def test_the_example_config_deploys_a_service_that_takes_orders(
        api: str, servers: Servers, cluster_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    app = config_app()
    dsn = await create_database(servers.database_url, "commerce_config")
    namespace = f"config-{uuid.uuid4().hex[:6]}"
    # The config's runtime_env, with this machine's servers and the secrets an operator provides.
    for name, value in {**app.runtime_env["env_vars"], "COMMERCE_DATABASE_URL": dsn,
                        "COMMERCE_REDIS_URL": servers.redis_url, "COMMERCE_ADMIN_TOKEN": TOKEN,
                        "COMMERCE_SERVER_SECRET": "config-server-secret-0123456789", "COMMERCE_JWT_SECRET": TEST_JWT_SECRET,
                        "COMMERCE_NAMESPACE": namespace}.items():
        monkeypatch.setenv(name, value)
    # A small machine: fewer shards, small CPU reservations; Serve autoscales between 1 and 2 replicas.
    args = {**app.args, "replicas": 1, "max_replicas": 2, "order_shards": 2, "inventory_shards": 2,
            "shard_cpus": 0.01, "replica_cpus": 0.01}
    name, prefix = "commerce-from-config", "/from-config"
    try:
        built = await asyncio.to_thread(call_user_app_builder_with_args_if_necessary, import_attr(app.import_path),
                                        args)
        await asyncio.to_thread(serve.run, built, name=name, route_prefix=prefix)
        async with httpx.AsyncClient(base_url=f"{api}{prefix}", timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            await eventually(lambda: http.get("/health"), lambda r: r.status_code == 200, timeout=60)
            pid = await confirmed_order(http, on_hand=3, quantity=2)
            assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 1
            actors = (await http.get(f"{API}/admin/actors")).json()["items"]
            assert len([a for a in actors if a["kind"] == "order"]) == 2  # the args reached the actors
    finally:
        from actors.deploy import remove_actors
        from commerce.app import cluster_settings

        try:
            await asyncio.to_thread(serve.delete, name)
        finally:
            try:
                settings = cluster_settings(AppArgs.model_validate(args))
                await asyncio.to_thread(remove_actors, settings.replace(namespace=namespace))
            finally:
                await drop_database(servers.database_url, dsn)
