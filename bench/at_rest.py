"""The whole service at rest: starts ``commerce serve`` as a user does, waits until /health answers 200, lets
it settle, then measures the CPU time that the service's processes (the command and everything it started:
Ray's processes, the actors, Serve's controller, proxy and replicas) use over a window with no request,
as a share of one core, by process, and the transactions PostgreSQL ran for it meanwhile (PostgreSQL is not
among the processes when it is the machine's own). Stops the service with SIGTERM.

    python -m bench.at_rest [--settle 30] [--window 60]

Servers: COMMERCE_DATABASE_URL / COMMERCE_REDIS_URL, else the defaults of bench/common.py, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time

import asyncpg

from bench.common import cpu_seconds, postgres, process_tree, redis_server, running_service
from tests.support import create_database, drop_database


async def transactions_so_far(database: str) -> int:
    """The transactions committed and rolled back so far in the service's database (PostgreSQL's own counts:
    pg_stat_database, which the server updates about once a second)."""
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


def main(database: str, redis: str, settle: float, window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="commerce-at-rest-") as data, running_service(
            {"COMMERCE_DATABASE_URL": database, "COMMERCE_REDIS_URL": redis, "COMMERCE_DATA_DIR": data}) as (root, _, _):
        time.sleep(settle)  # the start's own work (migrations, deploys, the first pings) is over
        before, transactions = cpu_seconds(process_tree(root)), asyncio.run(transactions_so_far(database))
        time.sleep(window)
        after = cpu_seconds(process_tree(root))
        transactions = asyncio.run(transactions_so_far(database)) - transactions
    used: dict[str, float] = collections.defaultdict(float)
    for pid, (name, t) in after.items():
        used[name] += t - before.get(pid, (name, 0.0))[1]  # a process started during the window counts whole
    total = sum(used.values())
    print(f"at rest over {window:.0f} s: {100 * total / window:.1f} % of one core, {len(after)} processes; "
          f"PostgreSQL ran {transactions / window:.1f} transactions/s for it")
    print("| process | % of one core |")
    print("|---|---|")
    for name, t in sorted(used.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| `{name}` | {100 * t / window:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    with postgres() as base_dsn, redis_server() as redis:
        database = asyncio.run(create_database(base_dsn, "commerce_at_rest"))
        try:
            main(database, redis, args.settle, args.window)
        finally:
            asyncio.run(drop_database(base_dsn, database))
