from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from store.event_store import PostgresEventStore, create_pool
from tests.support import Servers, create_database, drop_database, free_port, serve_ports


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="commerce-test-") as tmp:
        s = Servers(Path(tmp))
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Path]:
    """One local Ray for the whole session (starting it takes seconds); yields the folder of its logs."""
    import logging
    import os

    import ray

    from commerce import logs
    from commerce.runtime import serve_env, stop_log_monitor

    os.environ.update(serve_env())
    os.environ.update(serve_ports(31000, 41000))  # not the defaults: another Serve may be running here
    root, before = logging.getLogger(), set(logging.getLogger().handlers)
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       runtime_env={"env_vars": serve_env()}, logging_config=logs.ray_logging())
    added = [h for h in root.handlers if h not in before]  # Ray's, writing to this session's captured stderr
    stop_log_monitor()  # as the service's own local Ray runs
    yield Path(context.address_info["session_dir"]) / "logs"
    ray.shutdown()
    for handler in added:  # the stream is closed with the session: what logs at exit must not write to it
        root.removeHandler(handler)


@pytest.fixture(scope="session")
async def actor_settings(servers: Servers, ray_session: Path) -> AsyncIterator[object]:
    """The service's actors on the session's Ray, over a database of their own."""
    import asyncio

    from actors.deploy import deploy_actors, remove_actors
    from commerce.runtime import run_migrations
    from tests.integration.ray_support import test_settings

    dsn = await create_database(servers.database_url, "commerce_actors")
    await run_migrations(dsn)
    settings = test_settings(dsn, servers.redis_url)
    await asyncio.to_thread(deploy_actors, settings)
    yield settings
    await asyncio.to_thread(remove_actors, settings)
    await drop_database(servers.database_url, dsn)


@pytest.fixture(scope="session")
def orders(actor_settings: object) -> object:
    from actors.client import OrderClient

    return OrderClient(actor_settings.namespace, actor_settings.order_shards)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def inventory(actor_settings: object) -> object:
    from actors.client import InventoryClient

    return InventoryClient(actor_settings.namespace, actor_settings.inventory_shards)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def actor_store(actor_settings: object) -> AsyncIterator[PostgresEventStore]:
    pool = await create_pool(actor_settings.database_url, 8)  # type: ignore[attr-defined]
    yield PostgresEventStore(pool)
    await pool.close()


@pytest.fixture(scope="session")
async def api(actor_settings: object) -> AsyncIterator[str]:
    """The HTTP API on Ray Serve, over the session's actors; yields its base URL."""
    import asyncio

    from ray import serve

    from serve_app import build_app
    from tests.integration.ray_support import eventually

    port = free_port()
    settings = actor_settings.replace(port=port)  # type: ignore[attr-defined]

    def start() -> None:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings), name="commerce", route_prefix="/")

    await asyncio.to_thread(start)
    base = f"http://127.0.0.1:{port}"
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def health() -> int:
            try:
                return (await client.get("/health")).status_code
            except httpx.HTTPError:
                return 0

        await eventually(health, lambda code: code == 200, timeout=60)
    yield base
