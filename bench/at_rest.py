"""The whole service at rest: starts ``commerce serve`` as a user does, waits until /health answers 200, lets
it settle, then measures the CPU time that the service's processes (the command and everything it started:
Ray's processes, the actors, Serve's controller, proxy and replicas) use over a window with no request,
as a share of one core, by process, and the transactions PostgreSQL ran for it meanwhile (PostgreSQL is not
among the processes when it is the machine's own). Stops the service with SIGTERM.

    python -m bench.at_rest [--settle 30] [--window 60] [--by-thread N]

With ``--by-thread N``, also the N threads that used the most CPU, grouped by process kind and thread name,
with how often they woke up (their voluntary context switches, from /proc).

Servers: COMMERCE_DATABASE_URL / COMMERCE_REDIS_URL, else the defaults of bench/common.py, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.common import cpu_seconds, own_database, process_tree, running_service, used_by_kind


async def transactions_so_far(database: str) -> int:
    """The transactions committed and rolled back so far in the service's database (PostgreSQL's own counts:
    pg_stat_database, which the server updates about once a second)."""
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


Thread = tuple[str, str]  # the process's kind, the thread's name


def threads(kinds: dict[int, tuple[str, float]]) -> dict[tuple[int, int], tuple[Thread, float, int]]:
    """Each thread of the processes that ``kinds`` names (by pid, as :func:`cpu_seconds` gives them), by
    (pid, tid): its process's kind and its own name, its CPU time so far and how often it went to sleep of its
    own accord (each such sleep ends in a wake-up), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid, (kind, _) in kinds.items():
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            sleeps = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("voluntary_ctxt_switches"))
            out[(pid, tid)] = ((kind, name), (int(fields[11]) + int(fields[12])) / tick, sleeps)
    return out


def print_threads(before: dict[tuple[int, int], tuple[Thread, float, int]],
                  after: dict[tuple[int, int], tuple[Thread, float, int]], window: float, top: int) -> None:
    used: dict[Thread, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for key, (thread, t, sleeps) in after.items():
        _, t0, sleeps0 = before.get(key, (thread, 0.0, 0))
        used[thread][0] += t - t0
        used[thread][1] += sleeps - sleeps0
    print("| process | thread | % of one core | wake-ups/s |")
    print("|---|---|---|---|")
    for (kind, name), (t, wakes) in sorted(used.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"| `{kind}` | `{name}` | {100 * t / window:.2f} | {wakes / window:.1f} |")


def main(database: str, redis: str, settle: float, window: float, by_thread: int) -> None:
    with tempfile.TemporaryDirectory(prefix="commerce-at-rest-") as data, running_service(
            {"COMMERCE_DATABASE_URL": database, "COMMERCE_REDIS_URL": redis, "COMMERCE_DATA_DIR": data}) as (root, _, _):
        time.sleep(settle)  # the start's own work (migrations, deploys, the first pings) is over
        before, transactions = cpu_seconds(process_tree(root)), asyncio.run(transactions_so_far(database))
        threads_before = threads(before) if by_thread else {}
        time.sleep(window)
        after = cpu_seconds(process_tree(root))
        threads_after = threads(after) if by_thread else {}
        transactions = asyncio.run(transactions_so_far(database)) - transactions
    used = used_by_kind(before, after)
    total = sum(used.values())
    print(f"at rest over {window:.0f} s: {100 * total / window:.1f} % of one core, {len(after)} processes; "
          f"PostgreSQL ran {transactions / window:.1f} transactions/s for it")
    print("| process | % of one core |")
    print("|---|---|")
    for name, t in sorted(used.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| `{name}` | {100 * t / window:.2f} |")
    if by_thread:
        print()
        print_threads(threads_before, threads_after, window, by_thread)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--by-thread", type=int, default=0, metavar="N",
                        help="also the N threads (by process kind and thread name) that used the most CPU")
    args = parser.parse_args()
    with own_database("commerce_at_rest") as (database, redis):
        main(database, redis, args.settle, args.window, args.by_thread)
