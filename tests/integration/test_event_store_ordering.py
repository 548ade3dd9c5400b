"""A tailing reader never skips an event whose transaction commits after a later one is visible."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from domain import inventory as inv
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from tests.support import Servers, create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def one_event(pid: uuid.UUID) -> list[StreamAppend]:
    from decimal import Decimal

    return [StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [inv.StockSet(pid, 1, Decimal("1.00"), "x")])]


async def head(store: PostgresEventStore) -> int:
    after = 0
    while batch := await store.read_all(after, 1000):
        after = batch[-1].position or after
    return after


async def tail(store: PostgresEventStore, after: int, ours: set[uuid.UUID]) -> tuple[list[uuid.UUID], int]:
    seen = []
    while batch := await store.read_all(after, 100):
        seen += [r.aggregate_id for r in batch if r.aggregate_id in ours]
        after = batch[-1].position or after
    return seen, after


async def test_a_lower_position_committed_late_is_read_once_and_first(event_store: PostgresEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    cursor = await head(event_store)
    async with contextlib.AsyncExitStack() as stack:
        tx_a = await stack.enter_async_context(event_store.transaction())
        [ra] = await event_store.append(one_event(a), CommandContext.new(a, NOW), conn=tx_a)
        [rb] = await event_store.append(one_event(b), CommandContext.new(b, NOW))
        assert (ra.position or 0) < (rb.position or 0)
        seen, cursor = await tail(event_store, cursor, {a, b})
        assert seen == []  # b is visible, but a lower position is still in flight
    seen, cursor = await tail(event_store, cursor, {a, b})
    assert seen == [a, b]
    assert (await tail(event_store, cursor, {a, b}))[0] == []


async def test_an_older_transaction_with_a_higher_position_is_not_lost(event_store: PostgresEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    cursor = await head(event_store)
    async with contextlib.AsyncExitStack() as outer:
        tx_b = await outer.enter_async_context(event_store.transaction())  # b's transaction id comes first
        async with contextlib.AsyncExitStack() as inner:
            tx_a = await inner.enter_async_context(event_store.transaction())
            [ra] = await event_store.append(one_event(a), CommandContext.new(a, NOW), conn=tx_a)
            [rb] = await event_store.append(one_event(b), CommandContext.new(b, NOW), conn=tx_b)
            assert (ra.position or 0) < (rb.position or 0)
            await outer.aclose()  # b commits while a is still open
            seen, cursor = await tail(event_store, cursor, {a, b})
            assert seen == [b]
        seen, cursor = await tail(event_store, cursor, {a, b})
        assert seen == [a]


async def test_transactions_are_read_in_their_numeric_order_across_a_power_of_ten(servers: Servers) -> None:
    """Transaction ids 9, 10 and 11 (as a database passes 999 to 1000, or any such boundary): read in batches
    of two, every event comes once, in the order of its transaction, none skipped."""
    dsn = await create_database(servers.database_url, "commerce_xid_order")
    pool = None
    try:
        pool = await create_pool(dsn, 2)
        async with pool.acquire() as conn:
            await migrate(conn)
            ids = [uuid.uuid4() for _ in range(3)]
            for xid, aggregate_id in zip((10, 11, 9), ids, strict=True):  # positions 1, 2, 3
                await conn.execute(
                    """INSERT INTO events (aggregate_id, aggregate_type, event_type, event_data, version, transaction_id)
                       VALUES ($1, 'Test', 'Test', '{}'::jsonb, 1, $2::text::xid8)""", aggregate_id, str(xid))
        store, after, seen = PostgresEventStore(pool), 0, []
        while rows := await store.read_all_rows(after, 2):
            seen += [(row["transaction_id"], row["aggregate_id"]) for row in rows]
            after = rows[-1]["position"]
        assert seen == [("9", ids[2]), ("10", ids[0]), ("11", ids[1])]
    finally:
        if pool is not None:
            await pool.close()
        await drop_database(servers.database_url, dsn)
