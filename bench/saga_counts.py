"""What the sagas' figures of ``/health`` and ``/metrics`` cost as the ``sagas`` table grows. Both count the sagas
by status (``SagaStore.counts()``, kept as the sagas change since migration 15) and find the oldest unfinished
saga (``SagaStore.oldest_unfinished_age``); beside them, in the same run, the count that reads every saga
(``GROUP BY status``, what ``counts()`` ran before). A database of its own gets sagas in steps up to the sizes
asked for (one in 50 compensated, one in 100,000 still running, the rest completed), each row written once, the
changes of the counts folded and the table vacuumed and analysed after each step: a best case for the count
over every saga, since the service updates each saga several times and autovacuum comes when it comes. Then each
question is asked five times, through the service's own store on a pool like the service's, and timed. Last,
the same with changes not yet folded, as between two of the projector's folds under load, and their fold.

    python -m bench.saga_counts [--sagas 100000 1000000 3000000]

Servers: COMMERCE_DATABASE_URL, else the default of bench/common.py, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.common import postgres
from store.event_store import SERVICE, PostgresEventStore, create_pool
from store.migrations import migrate
from store.sagas import SCANNED_COUNTS, SagaStore
from tests.support import create_database, drop_database

ASKED = 5
CHANGED = 10_000


async def figures(store: SagaStore) -> None:
    await store.counts()
    await store.oldest_unfinished_age()


async def timed(ask: Callable[[], Awaitable[object]]) -> str:
    took = []
    for _ in range(ASKED):
        started = time.monotonic()
        await ask()
        took.append((time.monotonic() - started) * 1000)
    return f"{min(took):.1f}–{max(took):.1f} ms"


async def main(base_dsn: str, sizes: list[int]) -> None:
    database = await create_database(base_dsn, "commerce_saga_counts")
    try:
        async with contextlib.AsyncExitStack() as stack:
            conn = await asyncpg.connect(database)
            stack.push_async_callback(conn.close)
            await migrate(conn)
            pool = await create_pool(database, 2, SERVICE)
            stack.push_async_callback(pool.close)
            store, held = SagaStore(PostgresEventStore(pool)), 0
            for size in sorted(sizes):
                await conn.execute(
                    """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version,
                                          created_at)
                       SELECT gen_random_uuid(), 'order_fulfilment', 'done', '{}'::jsonb,
                              CASE WHEN i % 100000 = 1 THEN 'RUNNING' WHEN i % 50 = 0 THEN 'COMPENSATED'
                                   ELSE 'COMPLETED' END,
                              gen_random_uuid(), 1, NOW() - make_interval(secs => i)
                       FROM generate_series($1::int + 1, $2::int) i""", held, size)
                await store.fold_counts()
                await conn.execute("VACUUM ANALYZE sagas")
                await store.vacuum_count_changes()
                held = size
                print(f"{size:>11,} sagas ({ASKED} times each): the counts kept and the oldest unfinished "
                      f"{await timed(lambda: figures(store))}; every saga read ({SCANNED_COUNTS}) "
                      f"{await timed(lambda: pool.fetch(SCANNED_COUNTS))}", flush=True)
            await conn.execute(f"UPDATE sagas SET status = 'COMPENSATED' WHERE saga_id IN (SELECT saga_id FROM sagas"
                               f" WHERE status = 'COMPLETED' LIMIT {CHANGED})")
            pending = await conn.fetchval("SELECT COUNT(*) FROM saga_count_changes")
            counted = await timed(lambda: figures(store))
            started = time.monotonic()
            await store.fold_counts()
            print(f"{pending:,} changes not yet folded ({CHANGED:,} sagas changed status): the counts kept and the "
                  f"oldest unfinished {counted}; their fold {(time.monotonic() - started) * 1000:.1f} ms", flush=True)
    finally:
        await drop_database(base_dsn, database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000],
                        help="table sizes to time at (default 100000 1000000 3000000)")
    args = parser.parse_args()
    with postgres() as base_dsn:
        asyncio.run(main(base_dsn, args.sagas))
