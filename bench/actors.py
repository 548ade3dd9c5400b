"""The actor layer without HTTP: orders per second through the order shards, and reservations per
second on one hot SKU from 64 concurrent callers, with the oversell check.

    python -m bench.actors [--orders 300] [--concurrency 32] [--reservations 2000]

The confirmed rate waits for the sagas by watching their count in PostgreSQL (bench/drain.py), not by
asking the shards that run them about each order.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import time
import uuid

import ray

from actors.client import InventoryClient, OrderClient
from actors.deploy import deploy_actors, remove_actors
from bench.common import postgres, redis_server, row, summary
from bench.drain import drain
from commerce.runtime import SERVE_ENV, run_migrations
from commerce.settings import ResolvedSettings
from domain import inventory as inv
from store import repository as repo
from store.event_store import PostgresEventStore, create_pool
from store.sagas import SagaStore
from tests.support import create_database, drop_database

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


async def hot_sku(inventory: InventoryClient, store: PostgresEventStore, attempts: int, callers: int) -> None:
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
    row(f"reservations on one SKU ({callers} callers)", attempts, time.perf_counter() - start, summary(latencies))
    sku, _ = await repo.load(store, repo.SKU, pid, use_snapshot=False)
    assert sku is not None and won == stock and sku.reserved == stock and sku.available == 0, "oversold!"
    print(f"  oversell check: {won} reserved of {stock} on hand, {refused} refused, available {sku.available}")


async def main(base: str, redis: str, n: int, concurrency: int, reservations: int) -> None:
    database = await create_database(base, "commerce_bench")
    await run_migrations(database)
    # Secrets of its own: the order shards derive their reservation ids from the server secret.
    settings = ResolvedSettings(database_url=database, redis_url=redis, namespace=f"bench-{uuid.uuid4().hex[:6]}",
                                order_shards=2, inventory_shards=2, admin_token=secrets.token_urlsafe(24),
                                jwt_secret=secrets.token_urlsafe(32), server_secret=secrets.token_urlsafe(32))
    os.environ.update(SERVE_ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = await create_pool(database, 4)
    try:
        await asyncio.to_thread(deploy_actors, settings)
        orders = OrderClient(settings.namespace, settings.order_shards)
        inventory = InventoryClient(settings.namespace, settings.inventory_shards)
        store = PostgresEventStore(pool)
        await orders_per_second(orders, inventory, SagaStore(store), 20, concurrency)  # warm up
        await orders_per_second(orders, inventory, SagaStore(store), n, concurrency)
        await hot_sku(inventory, store, reservations, 64)
    finally:
        await pool.close()
        remove_actors(settings)
        ray.shutdown()
        await drop_database(base, database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reservations", type=int, default=2000)
    args = parser.parse_args()
    with postgres() as base_dsn, redis_server() as redis:
        asyncio.run(main(base_dsn, redis, args.orders, args.concurrency, args.reservations))
