from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.embedded import EmbeddedPostgres, EmbeddedRedis
from store.event_store import PostgresEventStore, create_pool
from store.migrations import migrate
from tests.support import Servers, create_database, drop_database

ADMIN = {"Authorization": "Bearer test-admin-token"}
ADDRESS = {"name": "A", "line1": "1", "city": "C", "postal_code": "1", "country": "US"}


@pytest.fixture(scope="session")
async def database(servers: Servers) -> AsyncIterator[str]:
    """A database of this session's own, migrated."""
    dsn = await create_database(servers.database_url, "commerce_store")
    pool = await create_pool(dsn, 4)
    async with pool.acquire() as conn:
        await migrate(conn)
    await pool.close()
    yield dsn
    await drop_database(servers.database_url, dsn)


@pytest.fixture(scope="session")
async def event_store(database: str) -> AsyncIterator[PostgresEventStore]:
    pool = await create_pool(database, 20)
    yield PostgresEventStore(pool)
    await pool.close()


@dataclass
class Deployment:
    http: httpx.AsyncClient
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    ingress: Any


@contextlib.asynccontextmanager
async def embedded_deployment(folder: Path) -> AsyncIterator[Deployment]:
    """The HTTP app in-process over actors on the session's Ray, over a PostgreSQL and a Redis of its own in
    ``folder``, which a test may stop, restart or flush."""
    import serve_app
    from actors.deploy import deploy_actors, remove_actors
    from commerce.runtime import run_migrations
    from tests.integration.ray_support import test_settings as settings_for

    pg, rd = EmbeddedPostgres(folder), EmbeddedRedis(folder)
    settings = settings_for(pg.start(), rd.start(), order_shards=1, inventory_shards=1, data_dir=folder)
    await run_migrations(settings.database_url)
    await asyncio.to_thread(deploy_actors, settings)
    ingress = serve_app.Ingress(settings)
    transport = httpx.ASGITransport(app=ingress.app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=ADMIN, timeout=60) as client:
            yield Deployment(client, pg, rd, ingress)
        services = await ingress.provider.get()
        await services.carts.close()
        await services.pool.close()
    finally:
        await asyncio.to_thread(remove_actors, settings)
        rd.stop()
        pg.stop()


@pytest.fixture
async def service_over_embedded(tmp_path: Path, ray_session: Path) -> AsyncIterator[Deployment]:
    """A deployment of the test's own (``embedded_deployment``)."""
    async with embedded_deployment(tmp_path) as deployment:
        yield deployment
