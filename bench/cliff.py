"""No cliff: many orders through one order shard whose cap on entities in memory is far below their number,
so that it passivates all the way through. Prints the accepted rate of each window and of each half, the
confirmed count after the drain, and the memory (RSS) of the service's actors after each window (with
``--orders 100000``, the first window ends at 10,000 orders: the issue's check of flat memory).

    python -m bench.cliff [--orders 20000] [--cap 1000] [--concurrency 32] [--products 10]

Orders go to the actors directly (the order shard's ``create_order``), as bench/actors.py does: the driver
costs a Ray call per order, not an HTTP client. One inventory shard holds the products; each order takes
one unit of one of them, round robin.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
import uuid

import psutil

from actors.client import InventoryClient, OrderClient, call
from actors.directory import ActorDirectory
from bench.common import postgres, redis_server, service_actors
from bench.drain import drain
from store.event_store import PostgresEventStore
from store.sagas import SagaStore

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
WINDOWS = 10
DRAIN_TIMEOUT = 1800.0


async def rss_by_kind(directory: ActorDirectory) -> dict[str, float]:
    """The resident memory (MiB) of the service's actors, by kind (order, inventory shards and the projector)."""
    by_kind: dict[str, float] = collections.defaultdict(float)
    for actor in await directory.describe():
        by_kind[actor["kind"]] += psutil.Process(actor["pid"]).memory_info().rss / 2**20
    return by_kind


async def run(orders: OrderClient, inventory: InventoryClient, directory: ActorDirectory, sagas: SagaStore,
              n: int, cap: int, concurrency: int, products: int) -> None:
    pids = [uuid.uuid4() for _ in range(products)]
    for pid in pids:
        await inventory.set_stock(pid, n, "9.99", "bench")
    done = 0
    marks: list[float] = []  # when each window of n / WINDOWS orders was accepted
    window = n // WINDOWS
    kinds: list[dict[str, float]] = []  # the actors' RSS by kind after each window
    queue = iter(range(n))

    async def caller() -> None:
        nonlocal done
        for i in queue:
            await orders.create_order(uuid.uuid4(), uuid.uuid4(), [(pids[i % products], 1)], ADDRESS, "tok_visa")
            done += 1
            if done % window == 0:
                marks.append(time.perf_counter())
                kinds.append(await rss_by_kind(directory))

    start = time.perf_counter()
    await asyncio.gather(*[caller() for _ in range(concurrency)])
    edges = [start, *marks]
    rates = [window / (b - a) for a, b in zip(edges, edges[1:], strict=False)]
    print("accepted/s by window of", window, "orders:", " ".join(f"{r:.1f}" for r in rates))
    rss = [sum(window.values()) for window in kinds]
    print("RSS (MiB) of the actors after each window:", " ".join(f"{r:.0f}" for r in rss))
    for kind in sorted({kind for window in kinds for kind in window}):
        print(f"  of which {kind}:", " ".join(f"{k.get(kind, 0.0):.0f}" for k in kinds))
    half = WINDOWS // 2
    first, second = n / 2 / (edges[half] - edges[0]), n / 2 / (edges[-1] - edges[half])
    drained = await drain(sagas, DRAIN_TIMEOUT)
    stats = await call(directory.order[0], "stats")
    print("| orders | cap | first half accepted/s | second half accepted/s | second ÷ first | "
          "RSS after the first tenth | after first half | after second | last ÷ first tenth | confirmed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {n} | {cap} (peak {stats['peak_active']}) | {first:.1f} | {second:.1f} | "
          f"{100 * second / first:.0f} % | {rss[0]:.0f} MiB | {rss[half - 1]:.0f} MiB | {rss[-1]:.0f} MiB | "
          f"{100 * rss[-1] / rss[0]:.0f} % | "
          f"{drained.count('COMPLETED')} after a drain of {drained.seconds:.1f} s |")


async def main(base: str, redis: str, n: int, cap: int, concurrency: int, products: int) -> None:
    async with service_actors(base, redis, order_shards=1, inventory_shards=1, max_active_entities=cap) as (
            settings, pool):
        await run(OrderClient(settings.namespace, 1), InventoryClient(settings.namespace, 1),
                  ActorDirectory(settings.namespace, 1, 1), SagaStore(PostgresEventStore(pool)), n, cap,
                  concurrency, products)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--products", type=int, default=10)
    args = parser.parse_args()
    with postgres() as base_dsn, redis_server() as redis:
        asyncio.run(main(base_dsn, redis, args.orders, args.cap, args.concurrency, args.products))
