"""Integrity checks of the event store and what is derived from it (``commerce events verify``).

Streams are contiguous from version 1; every event type is known and decodes; ``order_views``
equals a replay of the order streams; ``sagas`` and ``saga_steps`` agree with the saga streams.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from domain import events as ev
from domain import order as o
from domain import saga as sg
from store.event_store import record_from_row
from store.sagas import STEP_OUTCOMES

BATCH = 2000


async def _rows(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Record]:
    after = 0
    while True:
        rows = await pool.fetch(
            """SELECT id, position, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata,
                      version, created_at FROM events WHERE position > $1 ORDER BY position LIMIT $2""", after, BATCH)
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1]["position"]


async def verify(pool: asyncpg.Pool) -> list[str]:
    """Every problem found, as sentences; empty when the store is consistent."""
    problems: list[str] = []
    gaps = await pool.fetch(
        """SELECT aggregate_id, COUNT(*) AS n, MIN(version) AS lo, MAX(version) AS hi FROM events
           GROUP BY aggregate_id HAVING MIN(version) <> 1 OR MAX(version) <> COUNT(*)""")
    for g in gaps:
        problems.append(f"stream {g['aggregate_id']} is not contiguous: {g['n']} events, versions {g['lo']}..{g['hi']}")
    orders: dict[uuid.UUID, o.Order | None] = {}
    sagas: dict[uuid.UUID, sg.Saga | None] = {}
    steps: dict[uuid.UUID, int] = {}
    checked = 0
    async for row in _rows(pool):
        checked += 1
        try:
            record = record_from_row(row)
        except ev.UnknownEventType:
            problems.append(f"event {row['id']} at position {row['position']} has unknown type {row['event_type']!r}")
            continue
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"event {row['id']} ({row['event_type']}) does not decode: {type(e).__name__}: {e}")
            continue
        aid = record.aggregate_id
        if record.aggregate_type == o.AGGREGATE_TYPE:
            orders[aid] = o.evolve(orders.get(aid), record)
        elif record.aggregate_type == sg.AGGREGATE_TYPE:
            sagas[aid] = sg.evolve(sagas.get(aid), record)
            steps[aid] = steps.get(aid, 0) + (type(record.event) in STEP_OUTCOMES)
    problems += await _compare_orders(pool, orders)
    problems += await _compare_sagas(pool, sagas, steps)
    return problems


async def _compare_orders(pool: asyncpg.Pool, orders: dict[uuid.UUID, o.Order | None]) -> list[str]:
    problems = []
    views = {r["order_id"]: r for r in await pool.fetch(
        "SELECT order_id, customer_id, status, total_amount, version FROM order_views")}
    for order_id, order in orders.items():
        view = views.pop(order_id, None)
        if order is None:
            problems.append(f"order stream {order_id} does not start with OrderCreated")
            continue
        expected = (order.customer_id, order.status.value, order.total_amount, order.version)
        found = (view["customer_id"], view["status"], view["total_amount"], view["version"]) if view else None
        if found != expected:
            problems.append(f"order_views row of {order_id} is {found}, a replay gives {expected}")
    problems += [f"order_views has order {oid} that has no events" for oid in views]
    return problems


async def _compare_sagas(pool: asyncpg.Pool, sagas: dict[uuid.UUID, sg.Saga | None],
                         steps: dict[uuid.UUID, int]) -> list[str]:
    problems = []
    rows: dict[Any, asyncpg.Record] = {r["saga_id"]: r for r in await pool.fetch(
        """SELECT s.saga_id, s.status, s.current_step, s.version,
                  (SELECT COUNT(*) FROM saga_steps h WHERE h.saga_id = s.saga_id) AS steps FROM sagas s""")}
    for saga_id, saga in sagas.items():
        row = rows.pop(saga_id, None)
        if saga is None:
            problems.append(f"saga stream {saga_id} does not start with SagaStarted")
            continue
        expected = (saga.status.value, saga.current_step or "done", saga.version, steps.get(saga_id, 0))
        found = (row["status"], row["current_step"], row["version"], row["steps"]) if row else None
        if found != expected:
            problems.append(f"sagas row of {saga_id} is {found}, its history gives {expected}")
    problems += [f"sagas has saga {sid} that has no events" for sid in rows]
    return problems
