"""Migrations on a real PostgreSQL, from the states databases were really left in."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import asyncpg
import pytest

from domain import inventory as inv
from domain import saga as sg
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import LATEST, MIGRATIONS, migrate
from store.projections import InventoryViews, ProjectionRunner
from store.sagas import SagaStore
from tests.support import Servers, create_database, drop_database

# A database that applied the reverted version 9 holds it as applied, and an append_events that notifies.
REVERTED_9 = "INSERT INTO schema_migrations (version, name) VALUES (9, 'appends notify their readers')"


async def migrated_to(conn: asyncpg.Connection, last: int) -> None:
    """The state a database was left in by the releases up to migration ``last``."""
    await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())")
    for version, name, sql in MIGRATIONS:
        if version <= last:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)


async def test_a_database_that_applied_the_reverted_version_9_gets_the_plain_append_and_record_sagas(
        servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_migrations")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():  # the state of a database at version 9 of the reverted change
            await migrated_to(conn, 8)
            body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'append_events'")
            await conn.execute("CREATE OR REPLACE FUNCTION " + _notifying(body))
            await conn.execute(REVERTED_9)
        assert "pg_notify" in await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'append_events'")

        assert await migrate(conn) == [10, 11, 12, 13, 14, 15] and LATEST == 15
        assert await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'append_events'") == body
        assert await conn.fetchval("SELECT COUNT(*) FROM pg_proc WHERE proname = 'record_sagas'") == 1
    finally:
        await conn.close()
        await drop_database(servers.database_url, dsn)


async def test_a_database_where_version_9_was_record_sagas_migrates_to_the_same_functions(servers: Servers) -> None:
    """record_sagas was first numbered 9; such a database applies 10 all the same, and ends where a new one
    does."""
    dsn = await create_database(servers.database_url, "commerce_migrations")
    fresh = await create_database(servers.database_url, "commerce_migrations")
    conn, other = await asyncpg.connect(dsn), await asyncpg.connect(fresh)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                               " applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())")
            for version, name, sql in MIGRATIONS:
                if version > 10:
                    break
                number = 9 if version == 10 else version
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name)
        assert await migrate(conn) == [10, 11, 12, 13, 14, 15]
        assert await migrate(other) == [v for v, _, _ in MIGRATIONS]
        functions = "SELECT proname, prosrc FROM pg_proc WHERE proname IN ('append_events', 'record_sagas') ORDER BY 1"
        assert [tuple(r) for r in await conn.fetch(functions)] == [tuple(r) for r in await other.fetch(functions)]
        assert len(await conn.fetch(functions)) == 2
    finally:
        await conn.close()
        await other.close()
        await drop_database(servers.database_url, dsn)
        await drop_database(servers.database_url, fresh)


async def test_version_11_empties_the_read_models_and_the_projector_replays_them_whole(servers: Servers) -> None:
    """A database whose views were projected in the text order of transaction ids: version 11 drops them and
    their checkpoints, and a projector then rebuilds every view from the events, in order."""
    dsn = await create_database(servers.database_url, "commerce_migrations")
    pool = await create_pool(dsn, 2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await migrated_to(conn, 10)
        store = PostgresEventStore(pool)
        pid = uuid.uuid4()
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [inv.StockSet(pid, 7, Decimal("1.00"), "Mug")])],
                           CommandContext.new(pid, dt.datetime.now(dt.UTC)))
        runner = ProjectionRunner(store, InventoryViews())
        await runner.catch_up()
        await pool.execute("UPDATE inventory_views SET on_hand = 3")  # as a misordered replay could leave it
        async with pool.acquire() as conn:
            assert await migrate(conn) == [11, 12, 13, 14, 15]
        assert await pool.fetchval("SELECT COUNT(*) FROM inventory_views") == 0
        assert await pool.fetchval("SELECT COUNT(*) FROM projection_checkpoints") == 0
        assert await ProjectionRunner(store, InventoryViews()).catch_up() == 1
        assert await pool.fetchval("SELECT on_hand FROM inventory_views WHERE product_id = $1", pid) == 7
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


def _notifying(body: str) -> str:
    """migration 8's append_events, with a notification after its rows (as the reverted version 9 had)."""
    signature = next(sql for version, _, sql in MIGRATIONS if version == 8).split("RETURNS")[0]
    signature = signature.split("CREATE FUNCTION ", 1)[1]
    notified = body.replace("GET DIAGNOSTICS written = ROW_COUNT;",
                            "GET DIAGNOSTICS written = ROW_COUNT; PERFORM pg_notify('commerce_events', '');")
    return f"""{signature} RETURNS TABLE (id UUID, "position" BIGINT) LANGUAGE plpgsql AS $fn${notified}$fn$"""


async def test_a_sagas_row_rewritten_at_a_step_stays_on_its_page_when_the_table_has_filled_up(servers: Servers) -> None:
    """Version 14 keeps room on each page of ``sagas``: a step's rewrite of a saga's row goes beside the old
    version, with no new index entry (HOT), even once the sagas started after it have filled the pages."""
    dsn = await create_database(servers.database_url, "commerce_migrations")
    pool = await create_pool(dsn, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        sagas, policy, now = SagaStore(PostgresEventStore(pool)), sg.SagaPolicy(), dt.datetime.now(dt.UTC)
        started = []
        for _ in range(60):  # pages' worth of sagas, as the service writes them
            saga_id, order_id = uuid.uuid4(), uuid.uuid4()
            saga, _ = await sagas.record(CommandContext.new(order_id, now), None, saga_id,
                                         sg.decide_start(order_id, now, policy))
            started.append((saga_id, order_id, saga))
        page = "SELECT (ctid::text::point)[0] FROM sagas WHERE saga_id = $1"
        assert await pool.fetchval("SELECT COUNT(DISTINCT (ctid::text::point)[0]) FROM sagas") > 2
        for saga_id, order_id, saga in started[:3]:  # the first page's
            assert await pool.fetchval(page, saga_id) == 0
            action = sg.next_action(saga, now, policy)
            assert isinstance(action, sg.RunStep)
            await sagas.record(CommandContext.new(order_id, now), saga, saga_id, sg.decide_attempt(action))
            assert await pool.fetchval(page, saga_id) == 0  # on a full page it would have gone to the last one
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


async def test_version_14_gives_up_when_a_vacuum_of_sagas_holds_the_table_and_applies_once_it_is_done(
        servers: Servers) -> None:
    """A vacuum under way (an anti-wraparound one is not cancelled for it) holds the lock that the table's
    setting needs: the migration waits 5 s at most, fails, and changes nothing; tried again, it applies."""
    dsn = await create_database(servers.database_url, "commerce_migrations")
    conn, vacuum = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await migrated_to(conn, 13)
        held = vacuum.transaction()
        await held.start()
        await vacuum.execute("LOCK TABLE sagas IN SHARE UPDATE EXCLUSIVE MODE")  # the lock a VACUUM takes
        with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
            await asyncio.wait_for(migrate(conn), 30)  # without a lock timeout it would wait for the vacuum
        assert await conn.fetchval("SELECT MAX(version) FROM schema_migrations") == 13
        await held.rollback()
        assert await migrate(conn) == [14, 15]
        assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'sagas'") == ["fillfactor=50"]
    finally:
        await conn.close()
        await vacuum.close()
        await drop_database(servers.database_url, dsn)
