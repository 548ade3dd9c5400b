"""The order shard: a Ray actor hosting many orders, each with its fulfilment saga.

An order and its saga form one entity with one mailbox. Commands go: decide (domain), then record
(saga events, the sagas row and the order's events in one transaction). The saga engine
(``actors.saga_engine``) drives each unfinished saga; on start the shard resumes every one it owns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import asyncpg

from actors import metrics as m
from actors.base import Shard
from actors.client import BATCHED_ORDER_CALLS, InventoryClient
from actors.entities import Entity, EntityHost
from actors.orders import OrderRecords
from actors.prices import Prices
from actors.providers import SimulatedPayments, SimulatedShipping
from actors.routing import shard_of
from actors.saga_engine import SagaEngine
from actors.saga_host import OrderEntity
from actors.saga_steps import StepRunner
from actors.views import Cancelled, OrderView, Placed, SagaState
from commerce.settings import ResolvedSettings
from domain import events as ev
from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from domain.errors import NotFound
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.event_store import SERVICE, CommandContext, PostgresEventStore, create_pool, event_id
from store.ledger import ProviderLedger

RESCAN_INTERVAL = 5.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Orders:
    """What the saga engine sees of the shard: an order with its mailbox held, the store, the providers."""

    def __init__(self, shard: OrderShard) -> None:
        self.shard = shard

    def entity(self, order_id: uuid.UUID) -> AbstractAsyncContextManager[Entity[OrderEntity]]:
        return self.shard.host.entity(order_id)

    async def record(self, ent: Entity[OrderEntity], saga_events: list[ev.DomainEvent],
                     order_events: list[ev.DomainEvent]) -> bool:
        return await self.shard._record(ent, saga_events, order_events)

    async def run_step(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> tuple[sg.StepResult, ff.StepData]:
        return await self.shard.steps.run(order, saga, action)


class OrderShard(Shard):
    KIND = "order"
    KIND_NAME = "order"
    BATCHED = frozenset(BATCHED_ORDER_CALLS)

    def __init__(self, settings: ResolvedSettings, index: int) -> None:
        self.policy = settings.saga_policy
        self.metrics = m.OrderMetrics()
        tick = settings.saga_step_tick  # the shards of a machine a fraction of it apart: their bursts do not meet
        self.engine = SagaEngine(_Orders(self), self.policy, tick=tick, phase=tick * index / settings.order_shards)
        self.prices = Prices(lambda product_ids: self.inventory.catalog(product_ids))
        super().__init__(settings, index)

    # --- lifecycle ------------------------------------------------------------------------------

    async def _start(self) -> None:
        pool = await create_pool(self.settings.database_url, self.settings.database_pool_size, SERVICE)
        try:
            await self._start_on(pool)
        except BaseException:
            await pool.close()  # the start is tried again, with a pool of its own
            raise

    async def _start_on(self, pool: asyncpg.Pool) -> None:
        self.store = PostgresEventStore(pool)
        self.records = OrderRecords(self.store, self.metrics)
        ledger = ProviderLedger(self.store)
        inventory = InventoryClient(self.settings.namespace, self.settings.inventory_shards,
                                    self.settings.request_timeout, batched=True, watch=self.watch)
        self.steps = StepRunner(inventory, SimulatedPayments(ledger), SimulatedShipping(ledger),
                                self.settings.reservation_ttl, self.settings.derived_key("order-reservations"))
        self.inventory = inventory
        self.host: EntityHost[OrderEntity] = EntityHost(
            self.records.load_based, self.records.snapshot, lambda e: e.version, self.settings.max_active_entities,
            self.settings.snapshot_every, exists=lambda e: e.order is not None or e.saga is not None)
        await self._resume_unfinished(include_failed=True)
        self._tasks = [asyncio.create_task(self._rescan_loop()), asyncio.create_task(self._passivation_loop())]

    async def _resume_unfinished(self, include_failed: bool) -> None:
        for _, order_id in await self.records.sagas.unfinished(include_failed):
            if shard_of(order_id, self.settings.order_shards) == self.index:
                self.engine.drive(order_id)

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(RESCAN_INTERVAL)
            await self.watch.run("resuming unfinished sagas", lambda: self._resume_unfinished(include_failed=False))

    async def ping(self) -> dict[str, Any]:
        await self.start()
        return {"shard": self.index, "active": self.host.active, "sagas_running": len(self.engine.drivers),
                "failing": self.failing()}

    # --- commands -------------------------------------------------------------------------------

    async def create_order(self, order_id: uuid.UUID, customer_id: uuid.UUID, items: list[tuple[uuid.UUID, int]],
                           shipping_address: dict[str, str], payment_token: str, new: bool = False) -> Placed:
        """Create the order and start its saga (nothing, for an order created before). ``new``: the caller made
        the id at random, so the order is not read first; should it exist (a call sent again after a shard was
        lost), its append conflicts and the order stored answers."""
        await self.start()
        prices = await self.prices.of([pid for pid, _ in items])
        lines = tuple(o.OrderLine(pid, qty, prices[pid]) for pid, qty in items)
        saga_id = ff.saga_id_of(order_id)
        async with self.host.entity(order_id, OrderEntity(None, None) if new else None) as ent:
            events = o.decide_create(ent.state.order, order_id=order_id, customer_id=customer_id, lines=lines,
                                     saga_id=saga_id, shipping_address=o.ShippingAddress(**shipping_address),
                                     payment_token=payment_token)
            if events:
                saga_events = sg.with_next_attempt(saga_id, None, sg.decide_start(order_id, now(), self.policy),
                                                   now(), self.policy)
                recorded = await self._record(ent, saga_events, events, ctx=CommandContext.new(order_id, now()))
                if not recorded and ent.state.order is None:
                    raise StoreUnavailable("order could not be recorded")
            order = self._order(ent)
        self.engine.drive(order_id)
        return Placed(order.order_id, order.status, order.saga_id)

    async def price_changed(self, product_id: uuid.UUID, price: Decimal, version: int) -> None:
        """An inventory shard set this price (actors/prices.py); it needs no start."""
        self.prices.learn(product_id, price, version)

    async def get_order(self, order_id: uuid.UUID) -> OrderView:
        await self.start()
        state = await self.host.read(order_id)  # not behind its commands: an order's state is a value
        if state.order is None:
            raise NotFound(f"unknown order {order_id}")
        return OrderView.of(state.order)

    async def cancel_order(self, order_id: uuid.UUID, reason: str, command_id: uuid.UUID) -> Cancelled:
        """A customer's cancel; not ``accepted`` when the order was cancelled before."""
        await self.start()
        async with self.host.entity(order_id) as ent:
            if await self._applied(ent, command_id):
                return Cancelled(True, OrderView.of(self._order(ent)))
            decision = ff.decide_cancel(self._order(ent), self._saga(ent), reason, now())
            if decision is None:
                return Cancelled(False, OrderView.of(self._order(ent)))
            await self._saga_command(ent, lambda order, saga: decision, command_id)
            return Cancelled(True, OrderView.of(self._order(ent)))

    async def retry_saga(self, order_id: uuid.UUID, command_id: uuid.UUID) -> SagaState:
        await self.start()
        async with self.host.entity(order_id) as ent:
            holds = dt.timedelta(seconds=self.settings.reservation_ttl)  # as reserve_inventory sets their expiry
            await self._saga_command(ent, lambda order, saga: ff.implied(
                order, sg.decide_retry(saga, now(), self.policy, saga.holds_from + holds)), command_id)
            return SagaState(self._saga(ent).saga_id, self._saga(ent).status)

    async def compensate_saga(self, order_id: uuid.UUID, reason: str, command_id: uuid.UUID) -> SagaState:
        await self.start()
        async with self.host.entity(order_id) as ent:
            await self._saga_command(
                ent, lambda order, saga: ff.decide_compensate(order, saga, reason, now()), command_id)
            return SagaState(self._saga(ent).saga_id, self._saga(ent).status)

    async def _applied(self, ent: Entity[OrderEntity], command_id: uuid.UUID) -> bool:
        """Whether this command already reached the saga (a Ray retry or a repeated HTTP request)."""
        saga = self._saga(ent)
        return await self.store.contains(event_id(command_id, saga.saga_id, 0))

    async def _saga_command(self, ent: Entity[OrderEntity], decide: Callable[[o.Order, sg.Saga], ff.Decision],
                            command_id: uuid.UUID) -> None:
        """An operator's or a customer's command to the saga: decide, record, and let the engine know."""
        if await self._applied(ent, command_id):
            return
        decision = decide(self._order(ent), self._saga(ent))
        events = decision.saga_events
        ctx = CommandContext.new(ent.id, now(), command_id=command_id)
        if events and not await self._record(ent, events, decision.order_events, ctx=ctx):
            raise ConcurrencyConflict(ent.id, -1)
        if events:  # a command that changed nothing must not cut the engine's backoff short
            self.engine.wake(ent.id, cancel_call=any(isinstance(e, sg.CompensationStarted) for e in events))
        self.engine.drive(ent.id)

    @staticmethod
    def _order(ent: Entity[OrderEntity]) -> o.Order:
        if ent.state.order is None:
            raise NotFound(f"unknown order {ent.id}")
        return ent.state.order

    def _saga(self, ent: Entity[OrderEntity]) -> sg.Saga:
        if ent.state.saga is None:
            raise NotFound(f"order {ent.id} has no saga")
        return ent.state.saga

    async def _record(self, ent: Entity[OrderEntity], saga_events: list[ev.DomainEvent],
                      order_events: list[ev.DomainEvent] | None = None, ctx: CommandContext | None = None) -> bool:
        """Record, and hold the state after; False (the state reloaded) when another write came first. When
        the outcome is unknown (PostgreSQL lost, the caller gone), the entity is read again by the next command."""
        try:
            after = await self.records.record(ent.id, ent.state, saga_events, list(order_events or []), ctx)
            if after is None:  # another write came first: the store's state
                ent.state = await self.records.load(ent.id)
                return False
        except BaseException:
            self.host.mark_stale(ent.id)
            raise
        ent.state = after
        return True

    # --- observability --------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        return {**await super().stats(), "sagas_running": len(self.engine.drivers)}

    async def workload(self) -> dict[str, int]:
        return {"sagas_running": len(self.engine.drivers), "conflicts": 0}
