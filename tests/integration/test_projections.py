"""Read models: re-delivery changes nothing, rebuild equals incremental, and a failure leaves neither."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from domain import order as o
from store.event_store import CommandContext, PostgresEventStore, StreamAppend
from store.projections import OrderViews, ProjectionRunner

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")


async def an_order(store: PostgresEventStore, *more: o.DomainEvent) -> uuid.UUID:
    order_id = uuid.uuid4()
    line = o.OrderLine(uuid.uuid4(), 2, Decimal("5.00"))
    created = o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("10.00"), uuid.uuid4(), ADDRESS, "tok_visa")
    await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [created, *more])],
                       CommandContext.new(order_id, NOW))
    return order_id


async def view(store: PostgresEventStore, order_id: uuid.UUID) -> dict[str, Any] | None:
    row = await store.pool.fetchrow("SELECT * FROM order_views WHERE order_id = $1", order_id)
    return dict(row) if row else None


async def all_views(store: PostgresEventStore) -> list[dict[str, Any]]:
    return [dict(r) for r in await store.pool.fetch("SELECT * FROM order_views ORDER BY order_id")]


async def test_delivering_the_same_events_again_changes_nothing(event_store: PostgresEventStore) -> None:
    order_id = await an_order(event_store, o.InventoryReserved(()), o.OrderCompensationStarted("x"),
                              o.OrderCancelled("declined"))
    records = await event_store.load_stream(order_id)
    projection = OrderViews()
    async with event_store.pool.acquire() as conn:
        for r in records:
            await projection.apply(conn, r)
        once = await view(event_store, order_id)
        for r in records:
            await projection.apply(conn, r)
    assert await view(event_store, order_id) == once
    assert once is not None and (once["status"], once["reason"], once["version"]) == ("CANCELLED", "declined", 4)


async def test_a_rebuild_from_zero_equals_the_incremental_result(event_store: PostgresEventStore) -> None:
    runner = ProjectionRunner(event_store, OrderViews())
    await an_order(event_store, o.InventoryReserved(()))
    await runner.catch_up()
    await an_order(event_store, o.OrderConfirmed())
    await runner.catch_up()
    incremental = await all_views(event_store)
    await runner.reset()
    assert await all_views(event_store) == []
    await runner.catch_up()
    assert await all_views(event_store) == incremental
    assert await runner.backlog() == (0, 0.0)


async def test_a_failure_between_view_write_and_checkpoint_leaves_neither(event_store: PostgresEventStore) -> None:
    runner = ProjectionRunner(event_store, OrderViews())
    await runner.catch_up()
    before = await runner.checkpoint()

    async def crash() -> None:
        raise RuntimeError("injected failure before the checkpoint")

    failing = ProjectionRunner(event_store, OrderViews(), before_checkpoint=crash)
    order_id = await an_order(event_store)
    with pytest.raises(RuntimeError):
        await failing.run_once()
    assert await view(event_store, order_id) is None
    assert await runner.checkpoint() == before
    await runner.catch_up()
    assert (await view(event_store, order_id) or {}).get("status") == "PENDING"
