"""Integrity checks of the event store and what is derived from it (``commerce events verify``).

Streams are contiguous from version 1; every event type is known and decodes; ``order_views``
equals a replay of the order streams; ``sagas`` and ``saga_steps`` agree with the saga streams, and the sagas
counted by status (``saga_counts``) with ``sagas``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from domain import events as ev
from domain import order as o
from domain import saga as sg
from store.event_store import record_from_row
from store.sagas import COUNTS, STEP_OUTCOMES

BATCH = 2000


class Kind(enum.Enum):
    """What is wrong; ``commerce events repair`` decides per kind whether a fix is safe."""

    GAP = "gap"
    UNKNOWN_TYPE = "unknown event type"
    UNDECODABLE = "event does not decode"
    BAD_STREAM = "stream does not start as its aggregate does"
    READ_MODEL = "read model differs from the events"
    SAGA_TABLE = "sagas table differs from the events"
    SAGA_COUNTS = "sagas counted by status differ from the sagas"
    CHECKPOINT_AHEAD = "projection checkpoint ahead of the store"


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    text: str
    subject: uuid.UUID | str | None = None  # the stream, event or projection concerned
    position: int | None = None

    def __str__(self) -> str:
        return self.text


async def _rows(pool: asyncpg.Pool, snapshot: str) -> AsyncIterator[asyncpg.Record]:
    """Every event, each with whether its transaction had committed as of ``snapshot`` (``seen``)."""
    after = 0
    while True:
        rows = await pool.fetch(
            """SELECT id, position, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata,
                      version, created_at, transaction_id, pg_visible_in_snapshot(transaction_id, $3::text::pg_snapshot) AS seen
               FROM events WHERE position > $1 ORDER BY position LIMIT $2""",
            after, BATCH, snapshot)
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1]["position"]


async def verify(pool: asyncpg.Pool) -> list[str]:
    """Every problem found, as sentences; empty when the store is consistent."""
    return [str(p) for p in await find_problems(pool)]


async def find_problems(pool: asyncpg.Pool) -> list[Problem]:
    problems: list[Problem] = []
    gaps = await pool.fetch(
        """SELECT aggregate_id, COUNT(*) AS n, MIN(version) AS lo, MAX(version) AS hi FROM events
           GROUP BY aggregate_id HAVING MIN(version) <> 1 OR MAX(version) <> COUNT(*)""")
    for g in gaps:
        problems.append(Problem(Kind.GAP, f"stream {g['aggregate_id']} is not contiguous: {g['n']} events, "
                                          f"versions {g['lo']}..{g['hi']}", g["aggregate_id"]))
    # What derives from the events is read first, in one snapshot, and compared with the events as they stood
    # then: a service running meanwhile moves orders and sagas on, and that is no problem. In one snapshot: a
    # batch the projector commits between the reads of its views and of its checkpoint would make the views
    # older than the checkpoint, and a saga started after the sagas rows were read would have events and no row.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchval("SELECT pg_current_snapshot()::text")
        views = {r["order_id"]: r for r in await conn.fetch(
            "SELECT order_id, customer_id, status, total_amount, version FROM order_views")}
        # The projector reads in (transaction, position) order: an event at a lower position than its
        # checkpoint's, of a later transaction, may not be projected yet.
        checkpoint = await conn.fetchrow(
            "SELECT transaction_id, position FROM projection_checkpoints WHERE name = 'order_views'")
        rows: dict[Any, asyncpg.Record] = {r["saga_id"]: r for r in await conn.fetch(
            """SELECT s.saga_id, s.status, s.current_step, s.version,
                      (SELECT COUNT(*) FROM saga_steps h WHERE h.saga_id = s.saga_id) AS steps FROM sagas s""")}
        counted = {r["status"]: r["n"] for r in await conn.fetch(COUNTS)}
    held = collections.Counter(r["status"] for r in rows.values())
    if counted != held:
        problems.append(Problem(Kind.SAGA_COUNTS, f"the sagas counted by status, {dict(sorted(counted.items()))}, "
                                                  f"are not the sagas', {dict(sorted(held.items()))}"))
    projected = (checkpoint["transaction_id"], checkpoint["position"]) if checkpoint is not None else None
    orders: dict[uuid.UUID, o.Order | None] = {}
    unprojected: set[uuid.UUID] = set()
    sagas: dict[uuid.UUID, sg.Saga | None] = {}
    steps: dict[uuid.UUID, int] = {}
    async for row in _rows(pool, snapshot):
        try:
            record = record_from_row(row)
        except ev.UnknownEventType:
            problems.append(Problem(Kind.UNKNOWN_TYPE, f"event {row['id']} at position {row['position']} has "
                                                       f"unknown type {row['event_type']!r}", row["id"], row["position"]))
            continue
        except (KeyError, TypeError, ValueError) as e:
            problems.append(Problem(Kind.UNDECODABLE, f"event {row['id']} ({row['event_type']}) does not decode: "
                                                      f"{type(e).__name__}: {e}", row["id"], row["position"]))
            continue
        aid = record.aggregate_id
        if record.aggregate_type == o.AGGREGATE_TYPE:
            orders[aid] = o.evolve(orders.get(aid), record)
            if projected is None or (row["transaction_id"], row["position"]) > projected:
                unprojected.add(aid)
        elif record.aggregate_type == sg.AGGREGATE_TYPE and (
                record.version <= rows[aid]["version"] if aid in rows else row["seen"]):  # a row's events, as then
            sagas[aid] = sg.evolve(sagas.get(aid), record)
            steps[aid] = steps.get(aid, 0) + (type(record.event) in STEP_OUTCOMES)
    problems += _compare_orders(views, {k: v for k, v in orders.items() if k not in unprojected}, set(orders))
    problems += _compare_sagas(rows, sagas, steps)
    problems += await _checkpoints_ahead(pool)
    return problems


async def _checkpoints_ahead(pool: asyncpg.Pool) -> list[Problem]:
    rows = await pool.fetch(
        """SELECT name, position FROM projection_checkpoints
           WHERE position > (SELECT COALESCE(MAX(position), 0) FROM events)""")
    return [Problem(Kind.CHECKPOINT_AHEAD, f"projection {r['name']} is at position {r['position']}, past the "
                                           f"store's last event", r["name"], r["position"]) for r in rows]


def _compare_orders(views: dict[Any, asyncpg.Record], orders: dict[uuid.UUID, o.Order | None],
                    streams: set[uuid.UUID]) -> list[Problem]:
    """``orders``: the replays of the streams the projection has reached; ``streams``: every order stream."""
    problems = []
    for order_id, order in orders.items():
        view = views.get(order_id)
        if order is None:
            problems.append(Problem(Kind.BAD_STREAM, f"order stream {order_id} does not start with OrderCreated",
                                    order_id))
            continue
        expected = (order.customer_id, order.status.value, order.total_amount, order.version)
        found = (view["customer_id"], view["status"], view["total_amount"], view["version"]) if view else None
        if found != expected:
            problems.append(Problem(Kind.READ_MODEL, f"order_views row of {order_id} is {found}, a replay gives "
                                                     f"{expected}", order_id))
    problems += [Problem(Kind.READ_MODEL, f"order_views has order {oid} that has no events", oid)
                 for oid in views if oid not in streams]
    return problems


def _compare_sagas(rows: dict[Any, asyncpg.Record], sagas: dict[uuid.UUID, sg.Saga | None],
                   steps: dict[uuid.UUID, int]) -> list[Problem]:
    problems = []
    for saga_id, saga in sagas.items():
        row = rows.get(saga_id)
        if saga is None:
            problems.append(Problem(Kind.BAD_STREAM, f"saga stream {saga_id} does not start with SagaStarted", saga_id))
            continue
        expected = (saga.status.value, saga.current_step or "done", saga.version, steps.get(saga_id, 0))
        found = (row["status"], row["current_step"], row["version"], row["steps"]) if row else None
        if found != expected:
            problems.append(Problem(Kind.SAGA_TABLE, f"sagas row of {saga_id} is {found}, its history gives {expected}",
                                    saga_id))
    problems += [Problem(Kind.SAGA_TABLE, f"sagas has saga {sid} that has no events", sid)
                 for sid in rows if sid not in sagas]
    return problems
