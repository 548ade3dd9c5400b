"""Consistency under contention, crashes, restarts, duplicate entity instances and passivation."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from typing import Any

import pytest
import ray

from actors.client import ActorRef, InventoryClient, OrderClient, call
from actors.deploy import deploy_actors, remove_actors
from actors.inventory_shard import InventoryShard
from actors.routing import inventory_shard_name, order_shard_name, shard_of
from actors.views import ReservationView
from domain import inventory as inv
from store import repository as repo
from store.event_store import PostgresEventStore
from tests.integration.ray_support import eventually, order_of, stock_of
from tests.integration.test_order_saga_actors import ADDRESS, TERMINAL, event_types, stocked
from tests.support import provider_calls_held

pytestmark = pytest.mark.ray


async def place_many(orders: OrderClient, pid: uuid.UUID, n: int, token: str = "tok_visa",
                     address: dict[str, str] = ADDRESS) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    await asyncio.gather(*[orders.create_order(i, uuid.uuid4(), [(pid, 1)], address, token) for i in ids])
    return ids


async def statuses(orders: OrderClient, ids: list[uuid.UUID]) -> list[str]:
    return [o["status"] for o in await asyncio.gather(*[order_of(orders, i) for i in ids])]


async def all_settled(orders: OrderClient, ids: list[uuid.UUID], timeout: float = 120.0) -> Counter[str]:
    found = await eventually(lambda: statuses(orders, ids), lambda s: set(s) <= TERMINAL, timeout, 0.25)
    return Counter(found)


async def replay_never_oversells(store: PostgresEventStore, pid: uuid.UUID) -> inv.Sku:
    state = None
    records = await store.load_stream(pid)
    assert [r.version for r in records] == list(range(1, len(records) + 1))
    for r in records:
        state = inv.evolve(state, r)
        assert state is not None and state.on_hand - state.reserved >= 0 and state.reserved >= 0
    assert state is not None
    return state


async def test_forty_orders_for_ten_units_confirm_exactly_ten(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=10)
    ids = await place_many(orders, pid, 40)
    assert await all_settled(orders, ids) == Counter({"CONFIRMED": 10, "CANCELLED": 30})
    stock = await stock_of(inventory, pid)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (0, 0, 0)
    final = await replay_never_oversells(actor_store, pid)
    assert final.on_hand == 0


async def place_on_shard(orders: OrderClient, pid: uuid.UUID, n: int, shard: int, shards: int,
                         address: dict[str, str] = ADDRESS) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    while len(ids) < n:
        candidate = uuid.uuid4()
        if shard_of(candidate, shards) == shard:
            ids.append(candidate)
    await asyncio.gather(*[orders.create_order(i, uuid.uuid4(), [(pid, 1)], address, "tok_visa") for i in ids])
    return ids


async def provider_effects(store: PostgresEventStore, order_id: uuid.UUID) -> dict[str, Any]:
    """Every saga of the order, and what the payment provider did and was asked under any of them."""
    sagas = [r["saga_id"] for r in await store.pool.fetch("SELECT saga_id FROM sagas WHERE order_id = $1", order_id)]
    keys = [f"{s}:%" for s in sagas]
    ledger = await store.pool.fetch(
        "SELECT operation, status FROM provider_ledger WHERE provider = 'payments' AND key LIKE ANY($1::text[])", keys)
    attempts = await store.pool.fetch(
        """SELECT operation, key FROM provider_attempts
           WHERE provider = 'payments' AND outcome = 'received' AND key LIKE ANY($1::text[])""", keys)
    return {"sagas": sagas, "charges": [r["status"] for r in ledger if r["operation"] == "charge"],
            "refunds": [r["status"] for r in ledger if r["operation"] == "refund"],
            "charge_attempts": [r["key"] for r in attempts if r["operation"] == "charge"]}


async def test_a_killed_order_shard_restarts_and_every_saga_finishes_exactly_once(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore, actor_settings: Any) -> None:
    pid = await stocked(inventory, on_hand=100)
    shards = actor_settings.order_shards
    good = await place_on_shard(orders, pid, 12, 0, shards)
    bad = await place_on_shard(orders, pid, 6, 0, shards, address={**ADDRESS, "postal_code": "00000"})
    running = await actor_store.pool.fetchval(
        "SELECT COUNT(*) FROM sagas WHERE order_id = ANY($1::uuid[]) AND status IN ('RUNNING', 'COMPENSATING')",
        good + bad)
    assert running > 0  # the kill below interrupts sagas in flight on that shard
    ray.kill(ray.get_actor(order_shard_name(0), namespace=actor_settings.namespace), no_restart=False)
    counts = await all_settled(orders, good + bad)
    assert counts == Counter({"CONFIRMED": 12, "CANCELLED": 6})
    for order_id in good + bad:
        effects = await provider_effects(actor_store, order_id)
        assert len(effects["sagas"]) == 1
        assert len(effects["charge_attempts"]) >= 1
        assert set(effects["charge_attempts"]) == {f"{effects['sagas'][0]}:process_payment"}
        if order_id in good:
            assert effects["charges"] == ["succeeded"] and effects["refunds"] == []
        else:
            assert effects["charges"] == ["refunded"] and effects["refunds"] == ["succeeded"]
    stock = await stock_of(inventory, pid)
    assert (stock["on_hand"], stock["reserved"]) == (88, 0)


async def test_a_price_set_while_an_order_shard_is_down_is_answered_and_its_next_orders_carry_it(
        orders: OrderClient, inventory: InventoryClient, actor_settings: Any) -> None:
    pid = await stocked(inventory, on_hand=100, price="10.00")
    shards = actor_settings.order_shards
    before = await place_on_shard(orders, pid, 1, 0, shards)  # shard 0 remembers 10.00
    ray.kill(ray.get_actor(order_shard_name(0), namespace=actor_settings.namespace), no_restart=False)
    changed = await inventory.set_stock(pid, 100, "12.00", "Mug")  # tells every order shard, shard 0 down
    assert str(changed.price) == "12.00"
    after = await place_on_shard(orders, pid, 1, 0, shards)
    prices = [(await order_of(orders, i))["items"][0]["unit_price"] for i in (*before, *after)]
    assert prices == ["10.00", "12.00"]


async def test_sagas_in_flight_when_every_actor_stops_finish_after_a_restart(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore, actor_settings: Any) -> None:
    pid = await stocked(inventory, on_hand=100)
    # Each saga stops at its charge, in flight, each holding one of its shard's connections (10) while it
    # waits: six orders leave a shard room for its own work even when they all land on it.
    async with provider_calls_held(actor_settings.database_url):
        ids = await place_many(orders, pid, 6, token="tok_flaky")
        await asyncio.to_thread(remove_actors, actor_settings)
        unfinished = await actor_store.pool.fetchval(  # read before a process that outlives its kill goes on
            "SELECT COUNT(*) FROM sagas WHERE order_id = ANY($1::uuid[]) AND status NOT IN ('COMPLETED', 'COMPENSATED')",
            ids)
    assert unfinished == 6
    await asyncio.to_thread(deploy_actors, actor_settings)
    for client in (orders, inventory):
        for ref in client.refs:
            ref.forget()
    assert await all_settled(orders, ids) == Counter({"CONFIRMED": 6})


async def test_two_live_instances_of_one_sku_never_corrupt_its_stream(
        inventory: InventoryClient, actor_store: PostgresEventStore, actor_settings: Any) -> None:
    pid = await stocked(inventory, on_hand=10)
    index = shard_of(pid, actor_settings.inventory_shards)
    twin = ray.remote(InventoryShard).options(num_cpus=0).remote(actor_settings, index)
    owner = ActorRef(inventory_shard_name(index), actor_settings.namespace)
    await twin.get_stock.remote(pid)  # both instances now hold the SKU in memory
    await call(owner, "get_stock", pid)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)

    async def reserve(k: int) -> Any:
        rid = uuid.uuid4()
        try:
            if k % 2:
                return await twin.reserve.remote(pid, rid, 1, expires, "test")
            return await call(owner, "reserve", pid, rid, 1, expires, "test")
        except inv.InsufficientStock as e:  # from the twin: Ray's error, which is an InsufficientStock too
            return e

    results = await asyncio.gather(*[reserve(k) for k in range(24)])
    assert sum(isinstance(r, ReservationView) for r in results) == 10
    assert all(isinstance(r, inv.InsufficientStock) for r in results if not isinstance(r, ReservationView))
    final = await replay_never_oversells(actor_store, pid)
    assert (final.on_hand, final.reserved) == (10, 10)
    conflicts = (await twin.stats.remote())["conflicts"] + (await call(owner, "stats"))["conflicts"]
    assert conflicts > 0
    ray.kill(twin)


async def test_passivation_keeps_at_most_the_cap_in_memory_and_state_survives(
        orders: OrderClient, inventory: InventoryClient, actor_settings: Any) -> None:
    refs = [ActorRef(order_shard_name(i), actor_settings.namespace) for i in range(actor_settings.order_shards)]
    previous = [(await call(r, "stats"))["active"] for r in refs]
    try:
        for r in refs:
            await call(r, "set_max_active", 50)
        pid = await stocked(inventory, on_hand=1000)
        ids = await place_many(orders, pid, 500)
        assert await all_settled(orders, ids, timeout=300) == Counter({"CONFIRMED": 500})
        for r in refs:
            stats = await call(r, "stats")
            assert stats["peak_active"] <= 50
            assert stats["activations"] > 50
        sample = await asyncio.gather(*[order_of(orders, i) for i in ids[:20]])
        assert all(o["items"] == [{"product_id": str(pid), "quantity": 1, "unit_price": "29.99"}] for o in sample)
        assert all(o["version"] == 5 for o in sample)
    finally:
        for r, n in zip(refs, previous, strict=True):
            await call(r, "set_max_active", max(n, actor_settings.max_active_entities))


async def test_an_order_id_wrongly_said_to_be_new_answers_with_the_stored_order_and_writes_nothing(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore, actor_settings: Any) -> None:
    """``new`` skips the read of an order id the ingress has just made at random; should the id exist after all
    (out of memory), its append conflicts and the shard answers with the order the store holds."""
    pid = await stocked(inventory, on_hand=100)
    [order_id] = await place_many(orders, pid, 1)
    assert await all_settled(orders, [order_id]) == Counter({"CONFIRMED": 1})
    index = shard_of(order_id, actor_settings.order_shards)
    shard = ActorRef(order_shard_name(index), actor_settings.namespace)
    previous = (await call(shard, "stats"))["active"]
    try:
        await call(shard, "set_max_active", 1)
        for _ in range(200):  # other orders of the shard push it out of memory
            if not (await call(shard, "locate", order_id))["active"]:
                break
            other = uuid.uuid4()
            if shard_of(other, actor_settings.order_shards) == index:
                await orders.create_order(other, uuid.uuid4(), [(pid, 1)], ADDRESS, "tok_visa", True)
        assert not (await call(shard, "locate", order_id))["active"]
        placed = await orders.create_order(order_id, uuid.uuid4(), [(pid, 7)], ADDRESS, "tok_visa", True)
    finally:
        await call(shard, "set_max_active", max(previous, actor_settings.max_active_entities))
    assert (placed.order_id, placed.status.value) == (order_id, "CONFIRMED")
    assert await event_types(actor_store, order_id) == [
        "OrderCreated", "InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderConfirmed"]
    order = await order_of(orders, order_id)
    assert order["items"] == [{"product_id": str(pid), "quantity": 1, "unit_price": "29.99"}]
    assert await actor_store.pool.fetchval("SELECT COUNT(*) FROM sagas WHERE order_id = $1", order_id) == 1


async def test_an_expired_reservation_returns_its_stock_and_records_an_event(
        inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=4)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    # Held until then; not read back in between: on a slow machine that read could come after the expiry.
    held = await inventory.reserve(pid, uuid.uuid4(), 3, soon, "test")
    assert (held.quantity, held.outcome) == (3, inv.Outcome.ACTIVE)
    stock = await eventually(lambda: stock_of(inventory, pid), lambda s: s["available"] == 4, timeout=30)
    assert stock["reserved"] == 0
    assert (await event_types(actor_store, pid))[-2:] == ["StockReserved", "ReservationExpired"]
    sku, _ = await repo.load(actor_store, repo.SKU, pid, use_snapshot=False)
    assert sku is not None and sku.on_hand == 4


async def test_a_reservation_of_a_sku_no_longer_in_memory_expires_too(
        inventory: InventoryClient, actor_store: PostgresEventStore, actor_settings: Any) -> None:
    pid = await stocked(inventory, on_hand=4)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)
    await inventory.reserve(pid, uuid.uuid4(), 3, expires, "test")
    index = shard_of(pid, actor_settings.inventory_shards)
    shard = ActorRef(inventory_shard_name(index), actor_settings.namespace)
    try:
        await call(shard, "set_max_active", 1)
        for _ in range(200):  # other SKUs of the shard push it out of memory
            if not (await call(shard, "locate", pid))["active"]:
                break
            other = await stocked(inventory)
            if shard_of(other, actor_settings.inventory_shards) == index:
                await stock_of(inventory, other)
        assert not (await call(shard, "locate", pid))["active"]
        assert dt.datetime.now(dt.UTC) < expires  # out of memory before it was due: the sweep in memory cannot see it
        types = await eventually(lambda: event_types(actor_store, pid), lambda t: t[-1] == "ReservationExpired",
                                 timeout=30)
        assert types.count("ReservationExpired") == 1
    finally:
        await call(shard, "set_max_active", actor_settings.max_active_entities)
    sku, _ = await repo.load(actor_store, repo.SKU, pid, use_snapshot=False)
    assert sku is not None and (sku.on_hand, sku.reserved) == (4, 0)


async def test_a_burst_on_one_sku_shares_commits_and_each_event_keeps_its_command(
        inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=100)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    rids = [uuid.uuid4() for _ in range(40)]
    await asyncio.gather(*[inventory.reserve(pid, rid, 1, expires, "test", correlation_id=rid) for rid in rids])
    rows = await actor_store.pool.fetch(
        """SELECT transaction_id::text AS xid, metadata FROM events
           WHERE aggregate_id = $1 AND event_type = 'StockReserved'""", pid)
    assert len(rows) == 40
    assert len({r["xid"] for r in rows}) < 40  # several reservations went into one commit
    assert {uuid.UUID(r["metadata"]["correlation_id"]) for r in rows} == set(rids)
    assert (await stock_of(inventory, pid))["reserved"] == 40
