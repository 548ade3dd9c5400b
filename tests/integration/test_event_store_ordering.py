"""A tailing reader never skips an event whose transaction commits after a later one is visible."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from domain import inventory as inv
from store.event_store import CommandContext, PostgresEventStore, StreamAppend

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
