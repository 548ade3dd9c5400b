"""Event appends per second against PostgreSQL: one event per commit, batched, 16 concurrent streams.

    python -m bench.event_store [--events 2000] [--repeat 3]

Each case runs --repeat times, in turn with the others; the table gives the median and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from bench.common import postgres, spread
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


CASES: dict[str, Callable[[PostgresEventStore, int], Awaitable[float]]] = {
    "appends, one event per commit (1 stream)": one_per_commit,
    "appends, 50 events per commit (1 stream)": lambda store, n: batched(store, n, 50),
    "appends, one event per commit, 16 streams": lambda store, n: concurrent_streams(store, n, 16),
}


async def measure(store: PostgresEventStore, events: int, repeat: int) -> dict[str, list[float]]:
    """Events per second of every case, ``repeat`` times; the cases take turns, so drift hits all alike."""
    rates: dict[str, list[float]] = {label: [] for label in CASES}
    for _ in range(repeat):
        for label, case in CASES.items():
            rates[label].append(events / await case(store, events))
            print(f"  {label:<44} {rates[label][-1]:9.1f}/s", flush=True)
    return rates


async def main(base: str, events: int, repeat: int) -> None:
    database = await create_database(base, "commerce_bench")
    pool = await create_pool(database, 20)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PostgresEventStore(pool)
        await one_per_commit(store, 50)  # warm up connections and plans
        rates = await measure(store, events, repeat)
    finally:
        await pool.close()
        await drop_database(base, database)
    print(f"\nmedian (min–max) of {repeat} repeats\n| case | events | events/s |\n|---|---|---|")
    for label, values in rates.items():
        print(f"| {label} | {events} | {spread(values, '{:.0f}')} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with postgres() as base_dsn:
        asyncio.run(main(base_dsn, args.events, args.repeat))
