"""The actor layer without HTTP: orders per second through the order shards, and reservations per
second on one hot SKU from 64 concurrent callers, with the oversell check: a Ray call per reservation,
then in batched calls as the order shards make them.

    python -m bench.actors [--orders 300] [--concurrency 32] [--reservations 2000]

The confirmed rate waits for the sagas by watching their count in PostgreSQL (bench/drain.py), not by
asking the shards that run them about each order.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid

from actors.client import InventoryClient, OrderClient
from bench.common import postgres, redis_server, row, service_actors, summary
from bench.drain import drain
from domain import inventory as inv
from store import repository as repo
from store.event_store import PostgresEventStore
from store.sagas import SagaStore

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
DRAIN_TIMEOUT = 600.0


async def orders_per_second(orders: OrderClient, inventory: InventoryClient, sagas: SagaStore, n: int,
                            concurrency: int) -> None:
    pid = uuid.uuid4()
    await inventory.set_stock(pid, n, "9.99", "bench")
    ids = [uuid.uuid4() for _ in range(n)]
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def place(order_id: uuid.UUID) -> None:
        async with gate:
            t = time.perf_counter()
            await orders.create_order(order_id, uuid.uuid4(), [(pid, 1)], ADDRESS, "tok_visa")
            latencies.append(time.perf_counter() - t)

    before = await sagas.counts()
    start = time.perf_counter()
    await asyncio.gather(*[place(i) for i in ids])
    accepted = time.perf_counter() - start
    row(f"orders accepted (concurrency {concurrency})", n, accepted, summary(latencies))
    drained = await drain(sagas, DRAIN_TIMEOUT)
    confirmed = drained.count("COMPLETED") - before.get("COMPLETED", 0)
    row("orders confirmed (saga drained, end to end)", confirmed, time.perf_counter() - start)


async def hot_sku(inventory: InventoryClient, store: PostgresEventStore, attempts: int, callers: int,
                  label: str) -> None:
    pid = uuid.uuid4()
    stock = attempts // 2
    await inventory.set_stock(pid, stock, "1.00", "hot")
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    queue = list(range(attempts))
    won = refused = 0
    latencies: list[float] = []

    async def caller() -> None:
        nonlocal won, refused
        while queue:
            queue.pop()
            t = time.perf_counter()
            try:
                await inventory.reserve(pid, uuid.uuid4(), 1, expires, "bench")
                won += 1
            except inv.InsufficientStock:
                refused += 1
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*[caller() for _ in range(callers)])
    row(f"reservations on one SKU ({callers} callers, {label})", attempts, time.perf_counter() - start, summary(latencies))
    sku, _ = await repo.load(store, repo.SKU, pid, use_snapshot=False)
    assert sku is not None and won == stock and sku.reserved == stock and sku.available == 0, "oversold!"
    print(f"  oversell check: {won} reserved of {stock} on hand, {refused} refused, available {sku.available}")


async def main(base: str, redis: str, n: int, concurrency: int, reservations: int) -> None:
    async with service_actors(base, redis, order_shards=2, inventory_shards=2) as (settings, pool):
        orders = OrderClient(settings.namespace, settings.order_shards)
        inventory = InventoryClient(settings.namespace, settings.inventory_shards)
        store = PostgresEventStore(pool)
        await orders_per_second(orders, inventory, SagaStore(store), 20, concurrency)  # warm up
        await orders_per_second(orders, inventory, SagaStore(store), n, concurrency)
        await hot_sku(inventory, store, reservations, 64, "a Ray call each")
        # As the order shards reserve for their sagas: the calls to a shard travel in batches (actors.lanes).
        batched = InventoryClient(settings.namespace, settings.inventory_shards, batched=True)
        await hot_sku(batched, store, reservations, 64, "batched calls")

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reservations", type=int, default=2000)
    args = parser.parse_args()
    with postgres() as base_dsn, redis_server() as redis:
        asyncio.run(main(base_dsn, redis, args.orders, args.concurrency, args.reservations))
