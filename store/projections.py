"""Read models (CQRS): projections of the event log into ``order_views`` and ``inventory_views``.

Each projection keeps a checkpoint that is written in the same transaction as its view changes, so a
batch is either applied with its checkpoint or not at all; handlers also skip events at or below the
row's version, so re-delivery changes nothing. A failing projection stops and reports its error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

from domain import events as ev
from domain import inventory as inv
from domain import order as o
from store.errors import postgres_errors
from store.event_store import PostgresEventStore, record_from_row


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]

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

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        e = record.event
        if isinstance(e, o.OrderCreated):
            items = [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price)}
                     for x in e.lines]
            await conn.execute(
                """INSERT INTO order_views (order_id, customer_id, status, total_amount, created_at, updated_at,
                                            version, saga_id, items)
                   VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8) ON CONFLICT (order_id) DO NOTHING""",
                e.order_id, e.customer_id, o.OrderStatus.PENDING.value, e.total_amount, record.at,
                record.version, e.saga_id, items)
            return
        update = _ORDER_UPDATES.get(type(e))
        if update is None:
            if record.aggregate_type == o.AGGREGATE_TYPE:
                await conn.execute("UPDATE order_views SET version = $2 WHERE order_id = $1 AND version < $2",
                                   record.aggregate_id, record.version)
            return
        status, reason = update(e)
        await conn.execute(
            """UPDATE order_views SET status = $2, reason = COALESCE($3, reason), updated_at = $4, version = $5
               WHERE order_id = $1 AND version < $5""",
            record.aggregate_id, str(status), reason, record.at, record.version)


class InventoryViews:
    """``inventory_views`` (stock per SKU, units sold) and ``inventory_reservations`` (open ones, by expiry)."""

    name = "inventory_views"
    tables: tuple[str, ...] = ("inventory_views", "inventory_reservations")

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
            await conn.execute(
                """INSERT INTO inventory_reservations (reservation_id, product_id, quantity, expires_at)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""", e.reservation_id, pid, e.quantity, e.expires_at)
        else:
            await conn.execute("DELETE FROM inventory_reservations WHERE reservation_id = $1",
                               e.reservation_id)  # type: ignore[attr-defined]


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


class ProjectionRunner:
    """Tails the event store into one projection, one batch per transaction."""

    def __init__(self, store: PostgresEventStore, projection: Projection, batch_size: int = 500,
                 before_checkpoint: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        self.error: str | None = None
        self._before_checkpoint = before_checkpoint

    async def checkpoint(self) -> int:
        with postgres_errors():
            pos = await self.store.pool.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = $1", self.projection.name)
        return int(pos or 0)

    async def backlog(self, upto_position: int | None = None) -> tuple[int, float]:
        """How many committed events are not applied yet (up to a position), and the oldest one's age."""
        with postgres_errors():
            cp = await self.store.pool.fetchrow(
                "SELECT position, transaction_id::text AS xid FROM projection_checkpoints WHERE name = $1",
                self.projection.name)
            row = await self.store.pool.fetchrow(
                """SELECT COUNT(*) AS n, EXTRACT(EPOCH FROM NOW() - MIN(created_at)) AS age FROM events
                   WHERE (transaction_id, position) > ($1::text::xid8, $2::bigint)
                     AND ($3::bigint IS NULL OR position <= $3)""",
                cp["xid"] if cp else "0", cp["position"] if cp else 0, upto_position)
        return int(row["n"]), float(row["age"] or 0)

    async def run_once(self) -> int:
        """Apply the next batch; returns how many events it applied (0 when caught up)."""
        after = await self.checkpoint()
        rows = await self.store.read_all_rows(after, self.batch_size)
        if not rows:
            return 0
        records = [record_from_row(r) for r in rows]
        with postgres_errors():
            async with self.store.pool.acquire() as conn, conn.transaction():
                for record in records:
                    await self.projection.apply(conn, record)
                if self._before_checkpoint is not None:
                    await self._before_checkpoint()
                last = rows[-1]
                await conn.execute(
                    """INSERT INTO projection_checkpoints (name, position, transaction_id)
                       VALUES ($1, $2, $3::text::xid8)
                       ON CONFLICT (name) DO UPDATE SET position = $2, transaction_id = $3::text::xid8,
                       updated_at = NOW()""",
                    self.projection.name, last["position"], last["transaction_id"])
        return len(records)

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


def all_projections() -> tuple[Projection, ...]:
    return (OrderViews(), InventoryViews())

