"""Read models (CQRS): projections of the event log into ``order_views`` and ``inventory_views``.

Each projection keeps a checkpoint that is written in the same transaction as its view changes, so a
batch is either applied with its checkpoint or not at all; handlers also skip events at or below the
row's version, so re-delivery changes nothing. A failing projection is parked before the failing
event, names it, and is retried with a growing delay. A rebuild and the live projector exclude each
other through an advisory lock per projection (see :func:`rebuild`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypedDict

import asyncpg

from domain import events as ev
from domain import inventory as inv
from domain import order as o
from store.errors import StoreError, StoreUnavailable, postgres_errors
from store.event_store import PostgresEventStore, after_checkpoint, columns, record_from_row

log = logging.getLogger(__name__)


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]
    aggregate_types: tuple[str, ...]  # the streams it reads; the runner moves past others' events unread

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None: ...


_ORDER_UPDATES: dict[type, Callable[[ev.DomainEvent], tuple[str, str | None]]] = {
    o.InventoryReserved: lambda e: (o.OrderStatus.INVENTORY_RESERVED, None),
    o.PaymentProcessed: lambda e: (o.OrderStatus.PAYMENT_PROCESSED, None),
    o.ShipmentCreated: lambda e: (o.OrderStatus.SHIPMENT_CREATED, None),
    o.OrderConfirmed: lambda e: (o.OrderStatus.CONFIRMED, None),
    o.OrderCompensationStarted: lambda e: (o.OrderStatus.COMPENSATING, e.reason),  # type: ignore[attr-defined]
    o.OrderCancelled: lambda e: (o.OrderStatus.CANCELLED, e.reason),  # type: ignore[attr-defined]
}


class OrderViews:
    """``order_views``: one row an order with its status, for the list endpoints."""

    name = "order_views"
    tables: tuple[str, ...] = ("order_views",)
    aggregate_types: tuple[str, ...] = (o.AGGREGATE_TYPE,)

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        e = record.event
        if isinstance(e, o.OrderCreated):
            await conn.execute(_INSERT_ORDER, e.order_id, e.customer_id, o.OrderStatus.PENDING.value, e.total_amount,
                               record.at, record.version, e.saga_id, _items(e))
            return
        update = _ORDER_UPDATES.get(type(e))
        if update is None:
            if record.aggregate_type == o.AGGREGATE_TYPE:
                await conn.execute(_UPDATE_VERSION, record.aggregate_id, record.version)
            return
        status, reason = update(e)
        await conn.execute(_UPDATE_STATUS, record.aggregate_id, str(status), reason, record.at, record.version)

    async def apply_many(self, conn: asyncpg.Connection, records: list[ev.Recorded]) -> None:
        """A batch of events at once, as ``apply`` one after the other leaves the rows: each order's events
        fold into one change (its last status and when, its last reason, its highest version), written in
        at most three statements for the whole batch, each taking its rows as arrays."""
        created: list[tuple[Any, ...]] = []
        changed: dict[Any, list[Any]] = {}  # order id: [status, reason, updated_at, version]
        for record in records:
            e = record.event
            if isinstance(e, o.OrderCreated):
                # The items as JSON text: in an array of jsonb, asyncpg would read each order's list as a dimension.
                created.append((e.order_id, e.customer_id, o.OrderStatus.PENDING.value, e.total_amount, record.at,
                                record.version, e.saga_id, json.dumps(_items(e))))
                continue
            if record.aggregate_type != o.AGGREGATE_TYPE:
                continue
            change = changed.setdefault(record.aggregate_id, [None, None, None, 0])
            change[3] = max(change[3], record.version)
            if (update := _ORDER_UPDATES.get(type(e))) is not None:
                status, reason = update(e)
                change[0], change[2] = str(status), record.at
                change[1] = reason if reason is not None else change[1]
        if created:
            await conn.execute(_INSERT_ORDERS, *columns(sorted(created, key=lambda row: row[0]), 8))
        statuses = [(order_id, *c) for order_id, c in sorted(changed.items()) if c[0] is not None]
        if statuses:
            await conn.execute(_UPDATE_STATUSES, *columns(statuses, 5))
        versions = [(order_id, c[3]) for order_id, c in sorted(changed.items()) if c[0] is None]
        if versions:
            await conn.execute(_UPDATE_VERSIONS, *columns(versions, 2))


_INSERT_ORDER = """INSERT INTO order_views (order_id, customer_id, status, total_amount, created_at, updated_at,
                                            version, saga_id, items)
                   VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8) ON CONFLICT (order_id) DO NOTHING"""
_UPDATE_STATUS = """UPDATE order_views SET status = $2, reason = COALESCE($3, reason), updated_at = $4, version = $5
                    WHERE order_id = $1 AND version < $5"""
_UPDATE_VERSION = "UPDATE order_views SET version = $2 WHERE order_id = $1 AND version < $2"
_INSERT_ORDERS = """INSERT INTO order_views (order_id, customer_id, status, total_amount, created_at, updated_at,
                                             version, saga_id, items)
                    SELECT o.order_id, o.customer_id, o.status, o.total_amount, o.at, o.at, o.version, o.saga_id, o.items::jsonb
                    FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::numeric[], $5::timestamptz[], $6::int[],
                                $7::uuid[], $8::text[])
                         AS o(order_id, customer_id, status, total_amount, at, version, saga_id, items)
                    ON CONFLICT (order_id) DO NOTHING"""
_UPDATE_STATUSES = """UPDATE order_views v SET status = c.status, reason = COALESCE(c.reason, v.reason),
                                               updated_at = c.at, version = c.version
                      FROM unnest($1::uuid[], $2::varchar[], $3::text[], $4::timestamptz[], $5::int[])
                           AS c(order_id, status, reason, at, version)
                      WHERE v.order_id = c.order_id AND v.version < c.version"""
_UPDATE_VERSIONS = """UPDATE order_views v SET version = c.version
                      FROM unnest($1::uuid[], $2::int[]) AS c(order_id, version)
                      WHERE v.order_id = c.order_id AND v.version < c.version"""


def _items(e: o.OrderCreated) -> list[dict[str, Any]]:
    return [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price)}
            for x in e.lines]


class RowsRaced(StoreError):
    """A batch's rows were written by another batch after it read them; applied one event at a time, it is exact."""


class InventoryViews:
    """``inventory_views`` (stock per SKU, units sold) and ``inventory_reservations`` (open ones, by expiry)."""

    name = "inventory_views"
    tables: tuple[str, ...] = ("inventory_views", "inventory_reservations")
    aggregate_types: tuple[str, ...] = (inv.AGGREGATE_TYPE,)

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        e, pid, v = record.event, record.aggregate_id, record.version
        if isinstance(e, inv.StockSet):
            await conn.execute(
                """INSERT INTO inventory_views (product_id, name, price, on_hand, reserved, version, updated_at)
                   VALUES ($1, $2, $3, $4, 0, $5, $6)
                   ON CONFLICT (product_id) DO UPDATE SET name = $2, price = $3, on_hand = $4, version = $5,
                   updated_at = $6 WHERE inventory_views.version < $5""",
                pid, e.name, e.price, e.on_hand, v, record.at)
            return
        deltas = _inventory_deltas(e)
        if deltas is None:
            return
        on_hand, reserved, sold = deltas
        status = await conn.execute(
            """UPDATE inventory_views SET on_hand = on_hand + $2, reserved = reserved + $3,
               units_sold = units_sold + $4, version = $5, updated_at = $6
               WHERE product_id = $1 AND version < $5""",
            pid, on_hand, reserved, sold, v, record.at)
        if status.endswith(" 0"):
            return
        if isinstance(e, inv.StockReserved):
            await conn.execute(_INSERT_RESERVATION, e.reservation_id, pid, e.quantity, e.expires_at)
        else:
            await conn.execute("DELETE FROM inventory_reservations WHERE reservation_id = $1",
                               e.reservation_id)  # type: ignore[attr-defined]

    async def apply_many(self, conn: asyncpg.Connection, records: list[ev.Recorded]) -> None:
        """A batch of events at once, as ``apply`` one after the other leaves the rows. The batch's SKU rows are
        read and locked in the order of their ids (a second projector's batch on them waits, then reads what this
        one wrote), and each event is applied to them in memory. Then one statement writes the rows, one deletes
        the reservations closed, and the ones left open are inserted, pipelined: a hot SKU's row changes once a
        batch, and a reservation opened and closed within the batch is never written. A SKU that had no row to
        lock, and whose row another batch wrote meanwhile from later events, raises :class:`RowsRaced`: the
        runner then applies the batch one event at a time."""
        products = list(dict.fromkeys(r.aggregate_id for r in records))
        rows = {row["product_id"]: dict(row) for row in await conn.fetch(
            "SELECT * FROM inventory_views WHERE product_id = ANY($1::uuid[]) ORDER BY product_id FOR UPDATE",
            products)}
        changed: set[Any] = set()  # the SKUs whose row the batch changed
        dropped: set[Any] = set()  # reservations deleted, then (if ``opened``) written again
        opened: dict[Any, tuple[Any, ...]] = {}
        for record in records:
            e, pid, v, row = record.event, record.aggregate_id, record.version, rows.get(record.aggregate_id)
            if isinstance(e, inv.StockSet):
                if row is None:
                    row = rows[pid] = {"product_id": pid, "reserved": 0, "units_sold": 0}
                elif row["version"] >= v:
                    continue
                row.update(name=e.name, price=e.price, on_hand=e.on_hand, version=v, updated_at=record.at)
                changed.add(pid)
                continue
            deltas = _inventory_deltas(e)
            if deltas is None or row is None or row["version"] >= v:
                continue
            row["on_hand"] += deltas[0]
            row["reserved"] += deltas[1]
            row["units_sold"] += deltas[2]
            row.update(version=v, updated_at=record.at)
            changed.add(pid)
            reservation_id = e.reservation_id  # type: ignore[attr-defined]
            if isinstance(e, inv.StockReserved):  # an id still open keeps its first row, as ON CONFLICT does
                opened.setdefault(reservation_id, (reservation_id, pid, e.quantity, e.expires_at))
            else:
                dropped.add(reservation_id)
                opened.pop(reservation_id, None)
        if changed:
            columns = zip(*(tuple(rows[pid][c] for c in _SKU_COLUMNS) for pid in sorted(changed)), strict=True)
            written = {row["product_id"] for row in await conn.fetch(_UPSERT_SKUS, *columns)}
            if written != changed:  # a row this batch found absent was written meanwhile from later events
                raise RowsRaced(f"{len(changed - written)} SKU rows were written meanwhile by another batch")
        if dropped:
            await conn.execute("DELETE FROM inventory_reservations WHERE reservation_id = ANY($1::uuid[])",
                               list(dropped))
        if opened:
            await conn.executemany(_INSERT_RESERVATION, list(opened.values()))


_SKU_COLUMNS = ("product_id", "name", "price", "on_hand", "reserved", "units_sold", "version", "updated_at")
# One statement, so that it can say which rows it wrote: a SKU that had no row when the batch read them may have
# one by now, written by another projector's batch. A row of the same version is the same events' (rewritten as
# it is), one of a lower version a prefix of them; one of a higher version came from events this batch has not
# read, and is left as it is.
_UPSERT_SKUS = """INSERT INTO inventory_views AS w (product_id, name, price, on_hand, reserved, units_sold, version,
                                                   updated_at)
                  SELECT * FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::int[], $5::int[], $6::bigint[],
                                       $7::int[], $8::timestamptz[])
                  ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price,
                  on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, units_sold = EXCLUDED.units_sold,
                  version = EXCLUDED.version, updated_at = EXCLUDED.updated_at WHERE w.version <= EXCLUDED.version
                  RETURNING product_id"""
_INSERT_RESERVATION = """INSERT INTO inventory_reservations (reservation_id, product_id, quantity, expires_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"""


def _inventory_deltas(e: ev.DomainEvent) -> tuple[int, int, int] | None:
    if isinstance(e, inv.StockReserved):
        return 0, e.quantity, 0
    if isinstance(e, (inv.ReservationReleased, inv.ReservationExpired)):
        return 0, -e.quantity, 0
    if isinstance(e, inv.ReservationCommitted):
        return -e.quantity, -e.quantity, e.quantity
    if isinstance(e, inv.SaleReturned):
        return e.quantity, 0, -e.quantity
    return None


POLL_INTERVAL = 0.05  # a batch was applied: more is probably waiting
IDLE_INTERVAL = 0.25  # caught up, or paused by a rebuild: the longest a new event waits for the lists
RETRY_BASE = 1.0
RETRY_CAP = 60.0

REBUILD_IN_PROGRESS = "another projections rebuild is running; run it again once that one has finished"


def retry_delay(failures: int, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4, ... up to a minute."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 32))  # the exponent is bounded so it never overflows


def _advisory_key(text: str) -> int:
    # hash() is salted per process; every projector and CLI process must agree on the key
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def projection_lock(name: str) -> int:
    """The advisory lock of one projection: live batches share it, a rebuild holds it exclusively."""
    return _advisory_key(f"commerce.projection:{name}")


REBUILD_LOCK = _advisory_key("commerce.projections.rebuild")


class FailedEvent(TypedDict):
    event_id: str
    position: int
    event_type: str


class ProjectionFailed(StoreError):
    """A projection raised on one event; the batch holding it was rolled back, its checkpoint stays before it."""

    def __init__(self, projection: str, event: FailedEvent, cause: str) -> None:
        self.event = event
        super().__init__(f"{projection} stopped at event {event['event_id']} ({event['event_type']}, position "
                         f"{event['position']}): {cause}")


class RebuildInProgress(StoreError):
    """Another ``projections rebuild`` holds the rebuild lock."""


class ProjectionRunner:
    """Tails the event store into one projection, one batch per transaction.

    A live runner (``yield_to_rebuild``) takes its projection's advisory lock shared in each batch and
    applies nothing while a rebuild holds it exclusively, so it cannot write a checkpoint or a row
    from before the rebuild's reset into the rebuilt read model.
    """

    def __init__(self, store: PostgresEventStore, projection: Projection, batch_size: int = 500,
                 before_checkpoint: Callable[[], Awaitable[None]] | None = None,
                 yield_to_rebuild: bool = True, before_transaction: str | None = None) -> None:
        self.store = store
        self.projection = projection
        self.before_transaction = before_transaction  # a replay's end: the transactions before this one
        self.batch_size = batch_size
        self.yield_to_rebuild = yield_to_rebuild
        self.error: str | None = None
        self.failed_event: FailedEvent | None = None
        self.failures = 0
        self.fallbacks = 0  # batches that failed at once and were applied one event at a time
        self.paused = False
        self.caught_up = False  # the last step applied nothing and was neither paused nor failed
        self._before_checkpoint = before_checkpoint

    async def _checkpoint_row(self, conn: asyncpg.Connection | None = None) -> tuple[int, str | None]:
        """The checkpoint's position and the transaction of the row there, as text (0 and None for none)."""
        with postgres_errors():
            row = await (conn or self.store.pool).fetchrow(
                "SELECT position, transaction_id::text AS xid FROM projection_checkpoints WHERE name = $1",
                self.projection.name)
        return (int(row["position"]), row["xid"]) if row is not None else (0, None)

    async def checkpoint(self, conn: asyncpg.Connection | None = None) -> int:
        position, _ = await self._checkpoint_row(conn)
        return position

    async def backlog(self, upto_position: int | None = None) -> tuple[int, float]:
        """How many committed events are not applied yet (up to a position), and the oldest one's age."""
        position, transaction = await self._checkpoint_row()
        with postgres_errors():
            row = await self.store.pool.fetchrow(
                """SELECT COUNT(*) AS n, EXTRACT(EPOCH FROM NOW() - MIN(created_at)) AS age FROM events
                   WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint)
                     AND ($3::bigint IS NULL OR position <= $3)""",
                transaction or "0", position, upto_position)
        return int(row["n"]), float(row["age"] or 0)

    async def run_once(self) -> int:
        """Apply the next batch; returns how many events it applied (0 when caught up or paused).

        The checkpoint is read inside the batch's transaction, after the lock, so it is never one
        read before a rebuild reset it.
        """
        with postgres_errors():
            async with self.store.pool.acquire() as conn, conn.transaction():
                self.paused = self.yield_to_rebuild and not await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock_shared($1)", projection_lock(self.projection.name))
                if self.paused:
                    return 0
                wanted = self.projection.aggregate_types
                position, transaction = await self._checkpoint_row(conn)
                rows = await self.store.read_all_rows(position, self.batch_size, conn, wanted,
                                                      self.before_transaction, transaction)
                if not rows:
                    return 0
                decoded = [(row, self._decode(row)) for row in rows if row["aggregate_type"] in wanted]
                if not await self._apply_many(conn, [record for _, record in decoded]):
                    for row, record in decoded:
                        await self._apply(conn, row, record)
                if self._before_checkpoint is not None:
                    await self._before_checkpoint()
                await self._save_checkpoint(conn, rows[-1])
        return len(rows)

    def _decode(self, row: asyncpg.Record) -> ev.Recorded:
        try:
            return record_from_row(row)
        except Exception as e:
            raise self._failed(row, e) from e

    async def _apply_many(self, conn: asyncpg.Connection, records: list[ev.Recorded]) -> bool:
        """The batch at once, where the projection can (``apply_many``); False when it cannot, or failed:
        then the batch is applied again one event at a time, which names the event that fails."""
        apply_many = getattr(self.projection, "apply_many", None)
        if apply_many is None or len(records) < 2:
            return False
        try:
            with postgres_errors():
                async with conn.transaction():  # a savepoint: a failure leaves the batch's transaction usable
                    await apply_many(conn, records)
        except Exception as e:
            # The connection or the server failed, not the batch: raised. A statement that the server cancelled
            # (its statement_timeout) may pass as smaller ones.
            if isinstance(e, StoreUnavailable) and not isinstance(e.__cause__, asyncpg.exceptions.QueryCanceledError):
                raise
            self.fallbacks += 1
            log.warning("%s: a batch of %d events failed at once (%s: %s); applying it one event at a time",
                        self.projection.name, len(records), type(e).__name__, e)
            return False
        return True

    async def _apply(self, conn: asyncpg.Connection, row: asyncpg.Record, record: ev.Recorded) -> None:
        """Apply one event; a failure names the event, unless the connection itself failed."""
        try:
            with postgres_errors():
                await self.projection.apply(conn, record)
        except StoreUnavailable:
            raise
        except Exception as e:
            raise self._failed(row, e) from e

    def _failed(self, row: asyncpg.Record, error: Exception) -> ProjectionFailed:
        event: FailedEvent = {"event_id": str(row["id"]), "position": int(row["position"]),
                              "event_type": str(row["event_type"])}
        return ProjectionFailed(self.projection.name, event, f"{type(error).__name__}: {error}")

    async def _save_checkpoint(self, conn: asyncpg.Connection, last: asyncpg.Record) -> None:
        await conn.execute(
            """INSERT INTO projection_checkpoints (name, position, transaction_id)
               VALUES ($1, $2, $3::text::xid8)
               ON CONFLICT (name) DO UPDATE SET position = $2, transaction_id = $3::text::xid8,
               updated_at = NOW()""",
            self.projection.name, last["position"], last["transaction_id"])

    async def step(self) -> float:
        """One turn of the live loop; returns the seconds to wait before the next.

        A failure parks the projection (its checkpoint stays before the failing event, which is
        reported) and the retries back off, so an event that always fails does not spin.
        """
        self.caught_up = False
        try:
            applied = await self.run_once()
        except Exception as e:
            self.failures += 1
            self.error = str(e) if isinstance(e, ProjectionFailed) else f"{type(e).__name__}: {e}"
            self.failed_event = e.event if isinstance(e, ProjectionFailed) else None
            return retry_delay(self.failures)
        if not self.paused:  # a paused runner tried nothing, so it has not recovered either
            self.failures, self.error, self.failed_event = 0, None, None
        self.caught_up = not applied and not self.paused
        return POLL_INTERVAL if applied else IDLE_INTERVAL

    async def status(self) -> dict[str, Any]:
        """Position, lag and the parked error with its event, as /health shows them."""
        behind, age = await self.backlog()
        return {"position": await self.checkpoint(), "lag_events": behind, "lag_seconds": age,
                "error": self.error, "failed_event_id": self.failed_event["event_id"] if self.failed_event else None,
                "failed_event": self.failed_event, "paused": self.paused}

    async def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        total = 0
        while n := await self.run_once():
            total += n
            if progress:
                progress(n)
        return total

    async def reset(self) -> None:
        """Empty the projection's tables and its checkpoint, ready for a rebuild from position 0."""
        with postgres_errors():
            async with self.store.pool.acquire() as conn, conn.transaction():
                for table in self.projection.tables:
                    await conn.execute(f"TRUNCATE {table}")
                await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", self.projection.name)


class NewEvents:
    """Tells the caught-up runners of a projector when the log holds an event that their next batch would read.

    One statement per ``interval`` for all of them, shared by those waiting, instead of each runner's batch
    (a transaction of five round trips) every ``interval``. It asks, for each projection, what its batch
    would read (:func:`~store.event_store.after_checkpoint`), and wakes only the runners that have something
    to read (as of the question's snapshot): one projection parked on a failure or lagging does not make the
    others read in vain. When the question fails, every runner is woken, and its batch meets the failure and
    reports it; the question's own failures are logged once per run of them."""

    def __init__(self, pool: asyncpg.Pool, names: list[str], interval: float = IDLE_INTERVAL) -> None:
        self.pool = pool
        self.names = names
        self.interval = interval
        self._tick: asyncio.Task[set[str]] | None = None
        self._failing = False

    PENDING = """SELECT array_agg(n.name) FROM unnest($1::text[]) AS n(name)
                 LEFT JOIN projection_checkpoints c USING (name)
                 CROSS JOIN LATERAL (SELECT FROM events WHERE """ + after_checkpoint("COALESCE(c.position, 0)",
                                                                                     "c.transaction_id") + """
                                     ORDER BY transaction_id, position LIMIT 1) AS next"""

    async def pending(self) -> set[str]:
        """The projections that have an event their next batch would read."""
        with postgres_errors():
            names = await self.pool.fetchval(self.PENDING, self.names)
        return set(names or ())

    async def wait(self, name: str) -> None:
        """Return once projection ``name`` has something to read, asking every ``interval``."""
        if name not in self.names:
            raise ValueError(f"no projection {name!r} is asked after here")
        while True:
            if self._tick is None or self._tick.done():
                self._tick = asyncio.create_task(self._ask_later())
            tick = self._tick
            try:
                if name in await asyncio.shield(tick):
                    return
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not tick.cancelled() or (current is not None and current.cancelling()):
                    raise  # the waiter itself is cancelled; a cancelled question is only asked again

    async def _ask_later(self) -> set[str]:
        await asyncio.sleep(self.interval)
        try:
            pending = await self.pending()
        except Exception as e:
            if not self._failing:
                log.warning("asking for new events failed (%s: %s); the projections read their batches instead",
                            type(e).__name__, e)
            self._failing = True
            return set(self.names)
        if self._failing:
            log.info("asking for new events works again")
        self._failing = False
        return pending


async def tail(runner: ProjectionRunner, news: NewEvents, stepped: Callable[[ProjectionRunner], None] | None = None,
               longest: float | None = None) -> None:
    """A projector's live loop for one runner, until cancelled: a batch, then the runner's own delay (a short
    one after a batch, a growing one after failures), or, once it is caught up, a wait for ``news`` of its
    next event. ``stepped`` sees the runner after each batch; ``longest`` caps each delay."""
    while True:
        delay = await runner.step()
        if stepped is not None:
            stepped(runner)
        if runner.caught_up:
            await news.wait(runner.projection.name)
        else:
            await asyncio.sleep(delay if longest is None else min(delay, longest))


def all_projections() -> tuple[Projection, ...]:
    return (OrderViews(), InventoryViews())


async def rebuild(pool: asyncpg.Pool, progress: Callable[[str, int], None] | None = None,
                  batch_size: int = 1000) -> dict[str, int]:
    """Rebuild every read model from position 0, also while the service runs; returns events applied by projection.

    One connection holds session advisory locks throughout: the rebuild lock (a second rebuild is
    refused with :class:`RebuildInProgress`) and, while a projection is reset and replayed, that
    projection's lock exclusively. Taking it waits for the live batch in flight to commit, then
    pauses the projector's runner until the replay is done. ``progress`` gets (projection, events)
    once with 0 after the reset, then after every batch.
    """
    store = PostgresEventStore(pool)
    applied: dict[str, int] = {}
    with postgres_errors():
        async with pool.acquire() as lock_conn, _session_lock(lock_conn, REBUILD_LOCK, wait=False):
            for projection in all_projections():
                async with _session_lock(lock_conn, projection_lock(projection.name), wait=True):
                    applied[projection.name] = await _replay(store, projection, progress, batch_size)
    return applied


async def _replay(store: PostgresEventStore, projection: Projection, progress: Callable[[str, int], None] | None,
                  batch_size: int) -> int:
    """Replay from position 0 in two bounded passes: up to the oldest transaction running when the replay
    begins, then up to the oldest one running when that pass is done (a transaction in flight at the start,
    of this database or another of the server's, is in by then). On a busy service an unbounded replay
    would chase the writers; the live runner goes on from the replay's checkpoint."""
    runner = ProjectionRunner(store, projection, batch_size, yield_to_rebuild=False)  # it holds the lock itself
    runner.before_transaction = await _oldest_running(store)
    await runner.reset()
    report = functools.partial(progress, projection.name) if progress is not None else None
    if report is not None:
        report(0)
    applied = await runner.catch_up(report)
    runner.before_transaction = await _oldest_running(store)
    return applied + await runner.catch_up(report)


async def _oldest_running(store: PostgresEventStore) -> str:
    """The oldest transaction still running on the server, as text: every one before it has finished."""
    with postgres_errors():
        return str(await store.pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))


@contextlib.asynccontextmanager
async def _session_lock(conn: asyncpg.Connection, key: int, *, wait: bool) -> AsyncIterator[None]:
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
    elif not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        raise RebuildInProgress(REBUILD_IN_PROGRESS)
    try:
        yield
    finally:
        # a broken connection took its session locks with it; a tool's pool (never the service's, which skips
        # the reset) unlocks all on release too
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
