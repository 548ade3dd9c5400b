"""With no URLs configured the service runs its own PostgreSQL and Redis, and their data survives."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import redis

from store.embedded import EmbeddedPostgres, EmbeddedRedis
from store.migrations import LATEST, current_version
from tests.support import Servers, create_database, drop_database


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_embedded_servers_keep_their_data_across_a_restart(tmp_path: Path) -> None:
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    dsn, url = pg.start(), rd.start()
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    await conn.close()
    redis.Redis.from_url(url).set("kept", "yes")
    redis_pid = int(rd.pidfile.read_text())
    pg.stop()
    rd.stop()
    assert not process_alive(redis_pid)

    pg2, rd2 = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    try:
        conn = await asyncpg.connect(pg2.start())
        assert await conn.fetchval("SELECT n FROM kept") == 42
        await conn.close()
        assert redis.Redis.from_url(rd2.start()).get("kept") == b"yes"
    finally:
        pg2.stop()
        rd2.stop()


def test_a_second_process_on_the_same_directory_uses_its_redis_and_leaves_it_running(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    url = owner.start()
    redis_pid = int(owner.pidfile.read_text())
    second = EmbeddedRedis(tmp_path)  # its own lock attempt, as another process's would be
    try:
        assert second.start() == url and not second.owns
        second.stop()  # a second service's stop (or its failed start) must not take the first one's Redis
        assert process_alive(redis_pid) and redis.Redis.from_url(url).ping()
    finally:
        owner.stop()
    assert not process_alive(redis_pid)


def test_a_redis_left_by_an_owner_that_died_is_taken_over_and_stopped(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    redis_pid = int(first.pidfile.read_text())
    first._give_up_ownership()  # as the kernel does when the owner dies: its Redis keeps running
    first._process = None
    heir = EmbeddedRedis(tmp_path)
    try:
        heir.start()
        assert heir.owns and heir.pid == redis_pid  # the same server, with its data
    finally:
        heir.stop()
    assert not process_alive(redis_pid)


async def test_commerce_migrate_runs_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COMMERCE_DATABASE_URL", "COMMERCE_REDIS_URL")}
    env["COMMERCE_DATA_DIR"] = str(tmp_path / "data")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "commerce.cli", "migrate", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    postmaster = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not postmaster.exists()  # stopped again on the way out


async def test_make_db_migrate_brings_a_fresh_database_to_the_latest_schema(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_make_migrate")
    try:
        root = Path(__file__).resolve().parents[2]
        venv = Path(sys.executable).parents[1]  # installed already: make must not reinstall in a test
        env = {**os.environ, "COMMERCE_DATABASE_URL": dsn, "VENV": str(venv)}
        proc = await asyncio.create_subprocess_exec("make", "-s", "-C", str(root), "-o", str(venv / ".installed"),
                                                    "db-migrate", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        conn = await asyncpg.connect(dsn)
        try:
            assert await current_version(conn) == LATEST
            assert await conn.fetchval("SELECT to_regclass('carts') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await drop_database(servers.database_url, dsn)
