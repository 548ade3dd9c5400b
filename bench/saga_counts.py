"""What the sagas' figures of ``/health`` and ``/metrics`` cost as the ``sagas`` table grows: both count every
saga by status (``SagaStore.counts``) and find the oldest unfinished one (``SagaStore.oldest_unfinished_age``).
A database of its own gets sagas in steps up to the sizes asked for (one in 50 compensated, one in 100,000
still running, the rest completed), each step followed by ``VACUUM ANALYZE`` (as autovacuum would leave the
table), then the two questions are asked five times through the service's own store and timed.

    python -m bench.saga_counts [--sagas 100000 1000000 3000000]

Servers: COMMERCE_DATABASE_URL, else the default of bench/common.py, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from bench.common import postgres
from store.event_store import PostgresEventStore, create_pool
from store.migrations import migrate
from store.sagas import SagaStore
from tests.support import create_database, drop_database

ASKED = 5


async def main(base_dsn: str, sizes: list[int]) -> None:
    database = await create_database(base_dsn, "commerce_saga_counts")
    conn = await asyncpg.connect(database)
    pool = await create_pool(database, 2)
    try:
        await migrate(conn)
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
            await conn.execute("VACUUM ANALYZE sagas")
            held = size
            took = []
            for _ in range(ASKED):
                started = time.monotonic()
                await store.counts()
                await store.oldest_unfinished_age()
                took.append((time.monotonic() - started) * 1000)
            print(f"{size:>11,} sagas: counts and the oldest unfinished in {min(took):.0f}–{max(took):.0f} ms "
                  f"({ASKED} times)", flush=True)
    finally:
        await pool.close()
        await conn.close()
        await drop_database(base_dsn, database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000],
                        help="table sizes to time at (default 100000 1000000 3000000)")
    args = parser.parse_args()
    with postgres() as base_dsn:
        asyncio.run(main(base_dsn, args.sagas))
