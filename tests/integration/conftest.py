from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.event_store import PostgresEventStore, create_pool
from store.migrations import migrate
from tests.support import Servers, create_database, drop_database


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


@pytest.fixture(scope="session")
async def actor_settings(servers: Servers, ray_session: None) -> AsyncIterator[object]:
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
