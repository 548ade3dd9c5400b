"""A failover that leaves the service's connections on the old primary, now a standby that refuses writes: each
write is an outage (StoreUnavailable: a 503, a saga's wait) that writes nothing, and the pools replace their
connections, so that writes work again once the address names a primary, with no restart."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from domain import inventory as inv
from store.errors import StoreUnavailable
from store.event_store import SERVICE, CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from tests.support import Servers, create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def test_writes_a_standby_refuses_are_an_outage_and_the_pool_reconnects_after_the_failover(
        servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_failover")
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(servers.database_url)
    pool: asyncpg.Pool | None = None
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        # Sessions that start from now on are read-only, as those of a standby are.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        pool = await create_pool(dsn, 2, SERVICE)
        store = PostgresEventStore(pool)
        pid = uuid.uuid4()
        stock = [StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [inv.StockSet(pid, 5, Decimal("1.00"), "thing")])]

        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.append(stock, CommandContext.new(pid, NOW))
        assert await store.load_stream(pid) == []

        # The failover completes: the address now names a primary (new sessions may write); the pool's
        # connection still reaches the old one.
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        recorded = await store.append(stock, CommandContext.new(pid, NOW))
        assert [r.version for r in recorded] == [1]
        assert [r.version for r in await store.load_stream(pid)] == [1]
    finally:
        if pool is not None:
            await pool.close()
        await admin.close()
        await drop_database(servers.database_url, dsn)
