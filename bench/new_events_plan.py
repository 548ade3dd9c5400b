"""The plan and cost of the projector's question to its caught-up runners (``NewEvents.PENDING``) over a
large log: a database of its own with ``--events`` rows written in transactions of 1,000, both projections'
checkpoints at the end, then ``EXPLAIN (ANALYZE, BUFFERS)`` before and after ``ANALYZE``, and with one
checkpoint missing (a projection reset for a rebuild reads from the start).

    python -m bench.new_events_plan [--events 300000]

Servers: COMMERCE_DATABASE_URL, else the default of bench/common.py, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from bench.common import postgres
from store.migrations import migrate
from store.projections import NewEvents, all_projections
from tests.support import create_database, drop_database


async def explain(conn: asyncpg.Connection, names: list[str], label: str) -> None:
    print(f"--- {label}")
    for row in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + NewEvents.PENDING, names):
        print(row[0])


async def main(base_dsn: str, events: int) -> None:
    database = await create_database(base_dsn, "commerce_new_events_plan")
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        for _ in range(events // 1000):
            await conn.execute("INSERT INTO events (aggregate_id, aggregate_type, event_type, event_data, version) "
                               "SELECT gen_random_uuid(), 'Order', 'OrderCreated', '{}', 1 FROM generate_series(1, 1000)")
        last = await conn.fetchrow("SELECT position, transaction_id::text AS xid FROM events "
                                   "ORDER BY transaction_id DESC, position DESC LIMIT 1")
        names = [p.name for p in all_projections()]
        for name in names:
            await conn.execute(
                """INSERT INTO projection_checkpoints (name, position, transaction_id) VALUES ($1, $2, $3::text::xid8)
                   ON CONFLICT (name) DO UPDATE SET position = $2, transaction_id = $3::text::xid8""",
                name, last["position"], last["xid"])
        await explain(conn, names, f"{events:,} events, caught up, no statistics")
        await conn.execute("ANALYZE")
        await explain(conn, names, "caught up, analysed")
        await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", names[-1])
        await explain(conn, names, f"no checkpoint for {names[-1]}")
    finally:
        await conn.close()
        await drop_database(base_dsn, database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    with postgres() as base_dsn:
        asyncio.run(main(base_dsn, args.events))
