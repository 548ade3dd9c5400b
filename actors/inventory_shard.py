"""The inventory shard: a Ray actor hosting many SKU entities.

Each SKU command runs under the SKU's mailbox: decide on the current state, append with the state's
version as the expected one. A ConcurrencyConflict (another instance of the entity wrote first)
reloads the SKU and decides again. A timer expires reservations whose time has come.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from actors import metrics as m
from actors.base import Shard
from actors.entities import Entity, EntityHost
from actors.routing import shard_of
from actors.wire import returns_result
from commerce.settings import ResolvedSettings, Settings
from domain import events as ev
from domain import inventory as inv
from domain.errors import DomainError
from store import repository as repo
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.event_store import SERVICE, CommandContext, PostgresEventStore, StreamAppend, build_records, create_pool

MAX_DECIDE_ATTEMPTS = 20
EXPIRY_INTERVAL = 1.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stock_view(sku: inv.Sku) -> dict[str, Any]:
    return {"product_id": str(sku.product_id), "name": sku.name, "price": str(sku.price), "on_hand": sku.on_hand,
            "reserved": sku.reserved, "available": sku.available, "version": sku.version}


def reservation_view(sku: inv.Sku, r: inv.Reservation) -> dict[str, Any]:
    return {"reservation_id": str(r.reservation_id), "product_id": str(sku.product_id), "quantity": r.quantity,
            "expires_at": r.expires_at.isoformat(), "version": r.version, "status": r.outcome.value}


@dataclasses.dataclass(slots=True)
class Queued:
    """A SKU command waiting for the SKU's mailbox, and where its outcome goes."""

    decide: Callable[[inv.Sku | None], list[ev.DomainEvent]]
    ctx: CommandContext
    result: asyncio.Future[tuple[inv.Sku | None, list[ev.Recorded]]]


class InventoryShard(Shard):
    KIND = "sku"
    KIND_NAME = "inventory"

    def __init__(self, settings: ResolvedSettings, index: int) -> None:
        self.metrics = m.InventoryMetrics()
        self._queues: dict[uuid.UUID, list[Queued]] = {}
        super().__init__(settings, index)

    async def _start(self) -> None:
        pool = await create_pool(self.settings.database_url, self.settings.database_pool_size, SERVICE)
        self.store = PostgresEventStore(pool)
        self.host = repo_host(self.store, self.settings)
        self._tasks = [asyncio.create_task(self._expiry_loop()), asyncio.create_task(self._passivation_loop())]

    async def ping(self) -> dict[str, Any]:
        await self.start()
        return {"shard": self.index, "active": self.host.active, "failing": self.failing()}

    async def _decide(self, product_id: uuid.UUID, decide: Callable[[inv.Sku | None], list[ev.DomainEvent]],
                      ctx: CommandContext) -> tuple[inv.Sku | None, list[ev.Recorded]]:
        """Queue a command for the SKU; whoever holds its mailbox next decides every queued command,
        in order, and appends all their events at once (one commit for a burst on a hot SKU)."""
        await self.start()
        command = Queued(decide, ctx, asyncio.get_running_loop().create_future())
        self._queues.setdefault(product_id, []).append(command)
        try:
            async with self.host.entity(product_id) as ent:
                batch = [c for c in self._queues.pop(product_id, []) if not c.result.done()]
                if batch:
                    await self._apply_shielded(product_id, ent, batch, command)
        except BaseException:
            self._abandon(product_id, command)
            raise
        return await command.result

    async def _apply_shielded(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued],
                              own: Queued) -> None:
        """A leader that gives up still finishes its batch under the mailbox, the others' commands are in it;
        its own command is withdrawn unless it was already decided."""
        apply = asyncio.ensure_future(self._apply(product_id, ent, batch))
        try:
            await asyncio.shield(apply)
        except asyncio.CancelledError:
            if not own.result.done():
                own.result.cancel()
            await apply
            raise

    def _abandon(self, product_id: uuid.UUID, command: Queued) -> None:
        """The caller failed or gave up before its command ran: it must never run later."""
        queue = self._queues.get(product_id, [])
        if command in queue:
            queue.remove(command)
            if not queue:
                del self._queues[product_id]
        if not command.result.done():
            command.result.cancel()

    async def _apply(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued]) -> None:
        try:
            for _ in range(MAX_DECIDE_ATTEMPTS):
                if await self._try_apply(product_id, ent, batch):
                    return
                self.metrics.conflicts.inc()
                ent.state, _ = await repo.load(self.store, repo.SKU, product_id)
            raise ConcurrencyConflict(product_id, -1)
        except Exception as e:
            for command in batch:
                if not command.result.done():
                    command.result.set_exception(e)
        finally:
            for command in batch:  # interrupted (cancelled): the waiting callers must not hang
                if not command.result.done():
                    command.result.set_exception(StoreUnavailable("the command was interrupted; retry"))

    async def _try_apply(self, product_id: uuid.UUID, ent: Entity[inv.Sku | None], batch: list[Queued]) -> bool:
        """Decide the batch on the current state and append; False on a concurrency conflict."""
        state: inv.Sku | None = ent.state
        version = state.version if state else 0
        decided: list[tuple[Queued, list[ev.DomainEvent] | Exception]] = []
        events: list[ev.DomainEvent] = []
        contexts: list[CommandContext] = []
        preview = state  # the state after the commands decided so far, before anything is stored
        for command in batch:
            if command.result.done():  # its caller gave up before the command was decided: it never runs
                continue
            try:
                own = command.decide(preview)
            except DomainError as e:
                decided.append((command, e))
                continue
            decided.append((command, own))
            if own:
                preview = repo.fold(repo.SKU, preview, build_records(
                    [StreamAppend(product_id, inv.AGGREGATE_TYPE, version + len(events), own)], command.ctx))
            events += own
            contexts += [command.ctx] * len(own)
        records: list[ev.Recorded] = []
        if events:
            try:
                records = await self.store.append(
                    [StreamAppend(product_id, inv.AGGREGATE_TYPE, version, events, contexts)], contexts[0])
            except ConcurrencyConflict:
                return False
            ent.state = repo.fold(repo.SKU, state, records)
            self._count(records)
        position = 0
        for command, outcome in decided:
            if isinstance(outcome, list):
                mine = records[position:position + len(outcome)]
                position += len(outcome)
            if command.result.done():  # its caller gave up while the batch ran
                continue
            if isinstance(outcome, Exception):
                command.result.set_exception(outcome)
            else:
                command.result.set_result((ent.state, mine))
        return True

    def _count(self, records: list[ev.Recorded]) -> None:
        for r in records:
            e = r.event
            if isinstance(e, inv.ReservationCommitted):
                self.metrics.units_sold.inc(e.quantity)
            if isinstance(e, (inv.StockReserved, inv.ReservationReleased, inv.ReservationExpired,
                              inv.ReservationCommitted, inv.SaleReturned)):
                self.metrics.reservations.labels(type(e).__name__).inc()

    @returns_result
    async def set_stock(self, product_id: uuid.UUID, on_hand: int, price: str, name: str | None,
                        command_id: uuid.UUID | None = None) -> dict[str, Any]:
        ctx = CommandContext.new(product_id, now(), command_id=command_id)
        sku, _ = await self._decide(product_id, lambda s: inv.decide_set_stock(s, product_id, on_hand, Decimal(price), name), ctx)
        return stock_view(inv.require(sku, product_id))

    @returns_result
    async def get_stock(self, product_id: uuid.UUID) -> dict[str, Any]:
        await self.start()
        async with self.host.entity(product_id) as ent:
            return stock_view(inv.require(ent.state, product_id))

    @returns_result
    async def catalog(self, product_ids: list[uuid.UUID]) -> dict[str, dict[str, Any]]:
        await self.start()
        out = {}
        for pid in product_ids:
            async with self.host.entity(pid) as ent:
                out[str(pid)] = stock_view(inv.require(ent.state, pid))
        return out

    @returns_result
    async def reserve(self, product_id: uuid.UUID, reservation_id: uuid.UUID, quantity: int, expires_at: dt.datetime,
                      owner: str, expected_version: int | None = None, correlation_id: uuid.UUID | None = None) -> dict[str, Any]:
        ctx = CommandContext.new(correlation_id or reservation_id, now())
        sku, _ = await self._decide(product_id, lambda s: inv.decide_reserve(
            s, product_id, reservation_id, quantity, expires_at, owner, expected_version), ctx)
        sku = inv.require(sku, product_id)
        return {**reservation_view(sku, sku.reservations[reservation_id]), "stock": stock_view(sku)}

    @returns_result
    async def release(self, product_id: uuid.UUID, reservation_id: uuid.UUID, caller: str, admin: bool = False,
                      correlation_id: uuid.UUID | None = None) -> dict[str, Any]:
        """A direct release by an API caller (see ``inv.decide_release``)."""
        ctx = CommandContext.new(correlation_id or reservation_id, now())
        sku, records = await self._decide(
            product_id, lambda s: inv.decide_release(s, product_id, reservation_id, caller, admin=admin), ctx)
        return {"stock": stock_view(inv.require(sku, product_id)), "effective": bool(records)}

    @returns_result
    async def undo(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                   correlation_id: uuid.UUID | None = None) -> dict[str, Any]:
        """An order's compensation gives back what it holds (see ``inv.decide_undo``)."""
        ctx = CommandContext.new(correlation_id or reservation_id, now())
        sku, records = await self._decide(
            product_id, lambda s: inv.decide_undo(s, product_id, reservation_id, owner), ctx)
        return {"stock": stock_view(inv.require(sku, product_id)), "effective": bool(records)}

    @returns_result
    async def commit(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                     correlation_id: uuid.UUID | None = None) -> dict[str, Any]:
        ctx = CommandContext.new(correlation_id or reservation_id, now())
        sku, records = await self._decide(
            product_id, lambda s: inv.decide_commit(s, product_id, reservation_id, owner), ctx)
        return {"stock": stock_view(inv.require(sku, product_id)), "effective": bool(records)}

    async def expire_due(self) -> int:
        """Expire the due reservations of this shard's SKUs, in memory or not; returns how many SKUs changed."""
        await self.start()
        due = {pid for pid, sku in self.host.states() if (t := inv.next_expiry(sku)) and t <= now()}
        rows = await self.store.pool.fetch(
            "SELECT DISTINCT product_id FROM inventory_reservations WHERE expires_at <= NOW() LIMIT 500")
        due |= {r["product_id"] for r in rows if shard_of(r["product_id"], self.settings.inventory_shards) == self.index}
        changed = 0
        for pid in due:
            _, records = await self._decide(pid, lambda s: inv.decide_expire(s, now()), CommandContext.new(pid, now()))
            changed += bool(records)
        return changed

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            await self.watch.run("expiring reservations", self.expire_due)

    async def stats(self) -> dict[str, Any]:
        return {**await super().stats(), "conflicts": self.metrics.conflicts._value.get()}

    async def workload(self) -> dict[str, int]:
        return {"sagas_running": 0, "conflicts": int(self.metrics.conflicts._value.get())}


def repo_host(store: PostgresEventStore, settings: Settings) -> EntityHost[inv.Sku | None]:
    async def load(pid: uuid.UUID) -> inv.Sku | None:
        state, _ = await repo.load(store, repo.SKU, pid)
        return state

    async def snapshot(state: inv.Sku | None) -> None:
        if state is not None:
            await store.save_snapshot(repo.snapshot_of(repo.SKU, state.product_id, state))

    return EntityHost(load, snapshot, lambda s: s.version if s else 0, settings.max_active_entities,
                      settings.snapshot_every)
