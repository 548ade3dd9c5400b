"""The statements PostgreSQL runs per order: starts a PostgreSQL of its own with pg_stat_statements loaded
(loading it needs a server start, so the machine's server is never touched), runs the HTTP benchmark's
order phase on it, and prints the top statements by calls and by time, per confirmed order.

    python -m bench.pg_statements [--duration 15] [--top 15]

Needs PostgreSQL's server binaries with the contrib modules (Debian: postgresql, postgresql-contrib):
the highest version under /usr/lib/postgresql, or the directory of ``pg_config --bindir``. Orders are
counted by the rows that the statement projecting new orders into ``order_views`` inserted (one per order,
whether one statement inserts one order or a batch of them); every figure
is over the whole run, the unmeasured warm-up and the service's background work (polls, pings) included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from bench import http_load
from bench.common import redis_server
from tests.support import free_port

ORDER_CREATED = "INSERT INTO order_views"


def server_binaries() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if candidates:
        return candidates[-1].parent
    if pg_config := shutil.which("pg_config"):
        return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    raise SystemExit("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")


def _as_owner(owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: run it as ``owner`` then."""
    return ["runuser", "-u", owner, "--"] if owner else []


@contextlib.contextmanager
def postgres_with_statements() -> Iterator[str]:
    """A PostgreSQL of this run's own, with pg_stat_statements; stopped (by its data directory) on the way out."""
    binaries = server_binaries()
    owner = None
    if os.geteuid() == 0:
        owner = next((u for u in ("postgres", "pgserver") if _user_exists(u)), None)
        if owner is None:
            raise SystemExit("running as root: a 'postgres' system user is needed to run PostgreSQL")
    with tempfile.TemporaryDirectory(prefix="commerce-pg-statements-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if owner:
            shutil.chown(tmp, owner)
            shutil.chown(data, owner)
        subprocess.run([*_as_owner(owner), str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "--encoding=utf8"], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        options = (f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements "
                   "-c pg_stat_statements.track=all -c max_connections=200")
        subprocess.run([*_as_owner(owner), str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                        "-l", str(Path(tmp) / "log"), "start"], check=True, stdout=subprocess.DEVNULL)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*_as_owner(owner), str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           check=False, stdout=subprocess.DEVNULL)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def top_statements(dsn: str, top: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time, rows, wal_records,
                      wal_fpi, wal_bytes
               FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'""")
        wal = await conn.fetchrow("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
    finally:
        await conn.close()
    orders = sum(r["rows"] for r in rows if r["query"].startswith(ORDER_CREATED))
    if orders == 0:
        raise SystemExit("no order was projected: nothing to divide by")
    total_calls = sum(r["calls"] for r in rows)
    total_ms = sum(r["total_exec_time"] for r in rows)
    lines = [f"{orders} orders; per order: {total_calls / orders:.1f} statements, "
             f"{1000 * total_ms / orders:.0f} µs of execution in PostgreSQL; WAL per order (the whole server's): "
             f"{wal['wal_records'] / orders:.0f} records, {wal['wal_fpi'] / orders:.2f} full-page images, "
             f"{wal['wal_bytes'] / orders / 1024:.1f} KiB", "",
             "| statement | calls per order | µs per order | µs per call | WAL records, full-page images, KiB per order |",
             "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["calls"])[:top]:
        query = r["query"] if len(r["query"]) <= 110 else r["query"][:107] + "..."
        lines.append(f"| `{query.replace('|', '/')}` | {r['calls'] / orders:.2f} | "
                     f"{1000 * r['total_exec_time'] / orders:.0f} | {1000 * r['total_exec_time'] / r['calls']:.0f} | "
                     f"{r['wal_records'] / orders:.1f}, {r['wal_fpi'] / orders:.2f}, "
                     f"{int(r['wal_bytes']) / orders / 1024:.2f} |")
    return "\n".join(lines)


def main(duration: int, top: int) -> None:
    with postgres_with_statements() as dsn, redis_server() as redis:
        asyncio.run(_extension(dsn))
        options = http_load.Options(duration, warmup=5, repeat=1, concurrency=[32], timeout=30, drain_timeout=600.0)
        http_load.run(dsn, redis, options)  # on a database of its own, dropped at the end: the statistics stay
        print()
        print(asyncio.run(top_statements(dsn, top)), flush=True)


async def _extension(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        await conn.execute("SELECT pg_stat_reset_shared('wal')")
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=15, help="seconds of the order phase (default 15)")
    parser.add_argument("--top", type=int, default=15, help="statements to list (default 15)")
    args = parser.parse_args()
    main(args.duration, args.top)
