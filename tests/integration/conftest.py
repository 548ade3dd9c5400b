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

