"""Event appends per second against PostgreSQL: one event per commit, batched, 16 concurrent streams.

    python -m bench.event_store [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal

from bench.common import dsn, row
from domain import inventory as inv
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from tests.support import create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def event(pid: uuid.UUID, n: int) -> inv.StockSet:
    return inv.StockSet(pid, n, Decimal("1.00"), "bench")


async def one_per_commit(store: PostgresEventStore, n: int) -> float:
    pid = uuid.uuid4()
    start = time.perf_counter()
    for v in range(n):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, v, [event(pid, v)])], CommandContext.new(pid, NOW))
    return time.perf_counter() - start


async def batched(store: PostgresEventStore, n: int, batch: int) -> float:
    pid = uuid.uuid4()
    start = time.perf_counter()
    for v in range(0, n, batch):
        events = [event(pid, v + i) for i in range(batch)]
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, v, events)], CommandContext.new(pid, NOW))
    return time.perf_counter() - start


async def concurrent_streams(store: PostgresEventStore, n: int, streams: int) -> float:
    async def writer(count: int) -> None:
        pid = uuid.uuid4()
        for v in range(count):
            await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, v, [event(pid, v)])],
                               CommandContext.new(pid, NOW))

    start = time.perf_counter()
    await asyncio.gather(*[writer(n // streams) for _ in range(streams)])
    return time.perf_counter() - start


async def main(events: int) -> None:
    base = dsn()
    database = await create_database(base, "commerce_bench")
    pool = await create_pool(database, 20)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PostgresEventStore(pool)
        await one_per_commit(store, 50)  # warm up connections and plans
        row("appends, one event per commit (1 stream)", events, await one_per_commit(store, events))
        row("appends, 50 events per commit (1 stream)", events, await batched(store, events, 50))
        row("appends, one event per commit, 16 streams", events, await concurrent_streams(store, events, 16))
    finally:
        await pool.close()
        await drop_database(base, database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    asyncio.run(main(parser.parse_args().events))
