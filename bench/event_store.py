"""Event appends per second against PostgreSQL: one event per commit, batched, 16 concurrent streams;
and, in the same run, the same rows written by plain asyncpg into a table of the same shape (``raw_events``:
``LIKE events INCLUDING ALL``): one autocommit INSERT per event, one ``unnest`` INSERT per 50, 16
concurrent writers. The store's figure over the raw one, per case, is what the store's work costs.

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
from store.event_store import SERVICE, CommandContext, PostgresEventStore, StreamAppend, create_pool
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


_RAW = """INSERT INTO raw_events (id, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata,
                                   version, created_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::varchar[], $5::int[], $6::jsonb[], $7::jsonb[],
                     $8::int[], $9::timestamptz[])"""


async def raw_insert(store: PostgresEventStore, pid: uuid.UUID, first: int, count: int) -> None:
    """``count`` rows of one stream in one autocommit statement, as plain asyncpg writes them."""
    data = {"product_id": str(pid), "on_hand": 1, "price": "1.00", "name": "bench"}
    meta = {"event_id": "", "command_id": "", "correlation_id": str(pid), "causation_id": None}
    columns = ([uuid.uuid4() for _ in range(count)], [pid] * count, [inv.AGGREGATE_TYPE] * count, ["StockSet"] * count,
               [1] * count, [data] * count, [meta] * count, list(range(first + 1, first + count + 1)), [NOW] * count)
    await store.pool.execute(_RAW, *columns)


async def raw(store: PostgresEventStore, n: int, batch: int = 1, streams: int = 1) -> float:
    async def writer(count: int) -> None:
        pid = uuid.uuid4()
        for v in range(0, count, batch):
            await raw_insert(store, pid, v, batch)

    start = time.perf_counter()
    await asyncio.gather(*[writer(n // streams) for _ in range(streams)])
    return time.perf_counter() - start


CASES: dict[str, Callable[[PostgresEventStore, int], Awaitable[float]]] = {
    "appends, one event per commit (1 stream)": one_per_commit,
    "raw asyncpg, one row per commit (1 stream)": raw,
    "appends, 50 events per commit (1 stream)": lambda store, n: batched(store, n, 50),
    "raw asyncpg, 50 rows per commit (1 stream)": lambda store, n: raw(store, n, batch=50),
    "appends, one event per commit, 16 streams": lambda store, n: concurrent_streams(store, n, 16),
    "raw asyncpg, one row per commit, 16 streams": lambda store, n: raw(store, n, streams=16),
}
PAIRS = [("appends, one event per commit (1 stream)", "raw asyncpg, one row per commit (1 stream)"),
         ("appends, 50 events per commit (1 stream)", "raw asyncpg, 50 rows per commit (1 stream)"),
         ("appends, one event per commit, 16 streams", "raw asyncpg, one row per commit, 16 streams")]


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
    pool = await create_pool(database, 20, SERVICE)  # as the service's shards make theirs
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        store = PostgresEventStore(pool)
        await one_per_commit(store, 50)  # warm up connections and plans
        rates = await measure(store, events, repeat)
    finally:
        await pool.close()
        await drop_database(base, database)
    print(f"\nmedian (min–max) of {repeat} repeats\n| case | events | events/s |\n|---|---|---|")
    for label, values in rates.items():
        print(f"| {label} | {events} | {spread(values, '{:.0f}')} |", flush=True)
    print("\n| case | appends ÷ raw asyncpg (same repeat) |\n|---|---|")
    for store_case, raw_case in PAIRS:
        ratios = [100 * a / b for a, b in zip(rates[store_case], rates[raw_case], strict=True)]
        print(f"| {store_case.removeprefix('appends, ')} | {spread(ratios, '{:.0f}', ' %')} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with postgres() as base_dsn:
        asyncio.run(main(base_dsn, args.events, args.repeat))
