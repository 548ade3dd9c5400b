"""An order shard's orders in the store: an order and its saga load as one entity (each from its
snapshot and later events), are snapshotted together, and record their events in one transaction (the
shard's group commit, :mod:`actors.order_commits`)."""

from __future__ import annotations

import datetime as dt
import uuid

from actors import metrics as m
from actors.order_commits import GroupCommit
from actors.saga_host import OrderEntity
from domain import events as ev
from domain import fulfilment as ff
from domain import order as o
from store import repository as repo
from store.errors import ConcurrencyConflict, DuplicateCommand
from store.event_store import CommandContext, PostgresEventStore, StreamAppend
from store.sagas import SagaStore


class OrderRecords:
    def __init__(self, store: PostgresEventStore, metrics: m.OrderMetrics) -> None:
        self.store = store
        self.sagas = SagaStore(store)
        self.commits = GroupCommit(store, self.sagas)
        self.metrics = metrics

    async def load(self, order_id: uuid.UUID) -> OrderEntity:
        return (await self.load_based(order_id))[0]

    async def load_based(self, order_id: uuid.UUID) -> tuple[OrderEntity, int]:
        """The entity, and the version of its stored snapshots (as OrderEntity.version counts: both streams')."""
        saga_id = ff.saga_id_of(order_id)  # an order's saga: both streams in one round trip
        stored = await self.store.load_streams([order_id, saga_id])
        order, _, order_base = repo.state_of(repo.ORDER, stored[order_id].snapshot, stored[order_id].records)
        saga, saga_base = None, 0
        if order is not None and order.saga_id == saga_id:
            saga, _, saga_base = repo.state_of(repo.SAGA, stored[saga_id].snapshot, stored[saga_id].records)
        elif order is not None:  # an order whose saga id was made otherwise
            saga, _, saga_base = await repo.load_based(self.store, repo.SAGA, order.saga_id)
        return OrderEntity(order, saga), order_base + saga_base

    async def snapshot(self, ent: OrderEntity) -> None:
        if ent.order is not None:
            await self.store.save_snapshot(repo.snapshot_of(repo.ORDER, ent.order.order_id, ent.order))
        if ent.saga is not None:
            await self.store.save_snapshot(repo.snapshot_of(repo.SAGA, ent.saga.saga_id, ent.saga))

    async def record(self, order_id: uuid.UUID, state: OrderEntity, saga_events: list[ev.DomainEvent],
                     order_events: list[ev.DomainEvent], ctx: CommandContext | None = None) -> OrderEntity | None:
        """Append saga and order events atomically: the state after them, or None when another write came
        first (the caller reloads and decides again)."""
        others = [StreamAppend(order_id, o.AGGREGATE_TYPE, state.order.version if state.order else 0, order_events)]
        # The saga its order names (the one load_based loaded): an order placed with a saga id of an earlier making
        # keeps its saga there, and the id is not worked out again at every step. A new order's is derived.
        saga_id = state.order.saga_id if state.order is not None else ff.saga_id_of(order_id)
        try:
            saga, records = await self.commits.record(ctx or CommandContext.new(order_id, dt.datetime.now(dt.UTC)),
                                                    state.saga, saga_id, saga_events, others)
        except (ConcurrencyConflict, DuplicateCommand):
            return None
        after = OrderEntity(repo.fold(repo.ORDER, state.order, records), saga)
        self.metrics.observe(after.order, saga, records)
        return after
