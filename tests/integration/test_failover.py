"""A failover that leaves the service's connections on the old primary, now a standby that refuses writes: each
write is an outage (StoreUnavailable: a 503, a saga's wait) that writes nothing, and the pools replace their
connections, so that writes work again once the address names a primary, with no restart. A connection made
between a replacement and the end of the failover (reads go on meanwhile) still reaches the old server: its
refusals replace the connections again once REPLACE_EVERY has passed since the last replacement, no sooner.

The pool holds one connection, so that which connection a statement gets does not depend on the pool's order,
and the replacement a refusal starts is awaited before the next statement, rather than raced."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from domain import inventory as inv
from store import errors
from store.errors import StoreUnavailable
from store.event_store import SERVICE, CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from tests.support import Servers, create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the connections were last replaced is read from this clock; the other pools of this process are
    left out."""
    now = [1000.0]
    monkeypatch.setattr(errors, "_clock", lambda: now[0])
    monkeypatch.setattr(errors, "_pools", {})
    return now


@asynccontextmanager
async def standby(servers: Servers) -> AsyncIterator[tuple[PostgresEventStore, Callable[[], Awaitable[None]]]]:
    """A store on a migrated database whose sessions start read-only, as those of a standby do, and the end of
    the failover: sessions that start from then on may write."""
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
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

        async def fail_over() -> None:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')

        pool = await create_pool(dsn, 1, SERVICE)
        yield PostgresEventStore(pool), fail_over
    finally:
        if pool is not None:
            await pool.close()
        await admin.close()
        await drop_database(servers.database_url, dsn)


def stock_of(pid: uuid.UUID) -> list[StreamAppend]:
    return [StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [inv.StockSet(pid, 5, Decimal("1.00"), "thing")])]


async def write(store: PostgresEventStore, pid: uuid.UUID) -> list[int]:
    """The SKU's first event written: the versions recorded."""
    return [r.version for r in await store.append(stock_of(pid), CommandContext.new(pid, NOW))]


async def refused(store: PostgresEventStore, pid: uuid.UUID) -> None:
    """The write is refused as the old server refuses it; whatever replacement of the pool's connections that
    started has taken effect (they are expired) before this returns."""
    with pytest.raises(StoreUnavailable, match="read-only"):
        await write(store, pid)
    await asyncio.gather(*errors._expiring)


async def test_writes_a_standby_refuses_are_an_outage_and_the_pool_reconnects_after_the_failover(
        servers: Servers, clock: list[float]) -> None:
    async with standby(servers) as (store, fail_over):
        pid = uuid.uuid4()
        await refused(store, pid)

        # The failover completes: the address now names a primary (new sessions may write); the pool's
        # connection, expired, is replaced as it is next used.
        await fail_over()
        assert await write(store, pid) == [1]
        assert [r.version for r in await store.load_stream(pid)] == [1]  # the refused write left nothing


async def test_a_connection_made_during_the_failover_is_replaced_once_the_interval_has_passed(
        servers: Servers, clock: list[float]) -> None:
    async with standby(servers) as (store, fail_over):
        pid = uuid.uuid4()
        await refused(store, pid)
        assert await store.load_stream(pid) == []  # reads go on, on a new connection to the old server

        await fail_over()
        await refused(store, pid)  # that connection, within the interval: not replaced
        clock[0] += errors.REPLACE_EVERY
        await refused(store, pid)  # still it, but now it is replaced
        assert await write(store, pid) == [1]
        assert [r.version for r in await store.load_stream(pid)] == [1]
