"""Sagas counted by status, as /metrics and /health show them: kept as the sagas change (migration 15), exact
whoever writes and however writers and folders interleave, and read without reading the sagas."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from store.event_store import PostgresEventStore, create_pool
from store.migrations import migrate
from store.sagas import COUNTS, FOLD_BATCH, FOLD_COUNTS, SCANNED_COUNTS, SagaStore
from tests.integration.plans import assert_reads_through, generic_plans_over, prepared_on
from tests.integration.ray_support import eventually
from tests.integration.test_migrations import migrated_to
from tests.support import Servers, create_database, drop_database

HELD = {"COMPLETED": 3, "COMPENSATED": 2, "RUNNING": 1, "COMPENSATING": 1, "FAILED": 2}
STATUSES = sorted(HELD)
INSERT = """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version)
            VALUES ($1, 'order_fulfilment', 'reserve_inventory', '{}'::jsonb, $2, $3, 1)"""
# as the group commit's record_sagas writes a saga: its row whole, new or not
UPSERT = """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version)
            SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::varchar[], $4::jsonb[], $5::varchar[], $6::uuid[],
                                 $7::int[])
            ON CONFLICT (saga_id) DO UPDATE SET current_step = EXCLUDED.current_step, status = EXCLUDED.status,
                version = EXCLUDED.version"""


async def upsert(conn: asyncpg.Connection, sagas: dict[uuid.UUID, str], version: int = 2) -> None:
    ids = list(sagas)
    await conn.execute(UPSERT, ids, ["order_fulfilment"] * len(ids), ["charge_payment"] * len(ids),
                       ["{}"] * len(ids), [sagas[i] for i in ids], [uuid.uuid4() for _ in ids], [version] * len(ids))


async def truth(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    return {r["status"]: r["n"] for r in await conn.fetch(SCANNED_COUNTS)}


@pytest.fixture
async def pool(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    dsn = await create_database(servers.database_url, "commerce_saga_counts")
    pool = await create_pool(dsn, 8)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            for status, n in HELD.items():
                await conn.executemany(INSERT, [(uuid.uuid4(), status, uuid.uuid4()) for _ in range(n)])
        yield pool
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


@pytest.fixture
def sagas(pool: asyncpg.Pool) -> SagaStore:
    return SagaStore(PostgresEventStore(pool))


async def test_every_saga_is_counted_by_status(sagas: SagaStore) -> None:
    assert await sagas.counts() == HELD
    assert await sagas.fold_counts() == sum(HELD.values())  # a change per statement and status: a saga each
    assert await sagas.counts() == HELD
    assert await sagas.fold_counts() == 0


async def test_the_counts_follow_every_way_a_saga_is_written(pool: asyncpg.Pool, sagas: SagaStore) -> None:
    async def check() -> None:
        assert await sagas.counts() == await truth(pool)

    async with pool.acquire() as conn:
        # many new sagas in one statement, and the same sagas written again as a group commit does: a status
        # changed, a status kept, a new saga beside them
        new = {uuid.uuid4(): "RUNNING" for _ in range(50)}
        await upsert(conn, new, version=1)
        await check()
        moved = dict.fromkeys(list(new)[:20], "COMPLETED") | dict.fromkeys(list(new)[20:25], "COMPENSATING")
        await upsert(conn, moved | dict.fromkeys(list(new)[25:30], "RUNNING") | {uuid.uuid4(): "RUNNING"})
        await check()
        await sagas.fold_counts()
        await check()
        # by hand: an UPDATE of the status, one that leaves it, a DELETE, a write rolled back
        await conn.execute("UPDATE sagas SET status = 'FAILED' WHERE saga_id = ANY($1)", list(new)[20:25])
        changes = await conn.fetchval("SELECT COUNT(*) FROM saga_count_changes")
        await conn.execute("UPDATE sagas SET status = status, current_step = 'done' WHERE status = 'RUNNING'")
        assert await conn.fetchval("SELECT COUNT(*) FROM saga_count_changes") == changes  # nothing to count
        await conn.execute("DELETE FROM sagas WHERE saga_id = ANY($1)", list(new)[:3])
        await check()
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("UPDATE sagas SET status = 'COMPENSATED' WHERE status = 'FAILED'")
                await conn.execute(INSERT, uuid.uuid4(), "RUNNING", uuid.uuid4())
                await conn.execute(INSERT, list(new)[40], "RUNNING", uuid.uuid4())
        await check()
        assert (await sagas.counts())["FAILED"] == HELD["FAILED"] + 5
        await sagas.fold_counts()
        await check()
        await conn.execute("TRUNCATE sagas CASCADE")
        assert await sagas.counts() == {}
        await conn.execute(INSERT, uuid.uuid4(), "RUNNING", uuid.uuid4())
        assert await sagas.counts() == {"RUNNING": 1}


async def test_a_truncate_that_names_the_counts_too_empties_them(pool: asyncpg.Pool, sagas: SagaStore) -> None:
    await pool.execute("TRUNCATE sagas, saga_steps, saga_counts, saga_count_changes")  # every table, as resets do
    assert await sagas.counts() == {}
    await pool.execute(INSERT, uuid.uuid4(), "FAILED", uuid.uuid4())
    assert await sagas.counts() == {"FAILED": 1}


async def test_a_recount_waits_at_most_5_s_for_the_sagas_and_changes_nothing_if_they_stay_locked(
        pool: asyncpg.Pool, sagas: SagaStore) -> None:
    """Writers of sagas queue behind a recount waiting for its lock: while a vacuum of them holds it off, the
    recount gives up after 5 s rather than hold every writer meanwhile."""
    await sagas.fold_counts()
    await pool.execute("UPDATE saga_counts SET n = n + 1")  # wrong, for the recount to put right
    async with pool.acquire() as vacuum, vacuum.transaction():
        await vacuum.execute("LOCK TABLE sagas IN SHARE UPDATE EXCLUSIVE MODE")  # the lock a VACUUM takes
        with pytest.raises(asyncpg.LockNotAvailableError):
            await asyncio.wait_for(sagas.recount(), 30)
        assert await sagas.counts() != HELD
        await pool.execute(INSERT, uuid.uuid4(), "RUNNING", uuid.uuid4())  # writers go on
    await sagas.recount()
    assert await sagas.counts() == HELD | {"RUNNING": 2} == await truth(pool)


async def test_writers_and_folders_side_by_side_leave_the_counts_exact(pool: asyncpg.Pool, sagas: SagaStore) -> None:
    """Six writers move sagas between statuses in transactions of several sagas (some rolled back), while two
    folders fold the changes as fast as they can: every count read meanwhile is the sagas' own in the same
    snapshot, and the counts at the end are the sagas'."""
    ids = [uuid.uuid4() for _ in range(60)]
    async with pool.acquire() as conn:
        await upsert(conn, dict.fromkeys(ids, "RUNNING"), version=1)
    total = sum(HELD.values()) + len(ids)
    done = asyncio.Event()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(40):
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        await upsert(conn, {i: rng.choice(STATUSES) for i in sorted(rng.sample(ids, 5))})  # rows in one order
                        if n % 7 == 0:
                            raise RuntimeError("rolled back")
                except RuntimeError:
                    pass

    async def folder() -> int:
        folded = 0
        while not done.is_set():
            folded += await sagas.fold_counts()
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                counted = {r["status"]: r["n"] for r in await conn.fetch(COUNTS)}
                assert counted == await truth(conn) and sum(counted.values()) == total
        return folded

    folders = [asyncio.create_task(folder()) for _ in range(2)]
    try:
        await asyncio.gather(*[writer(seed) for seed in range(6)])
    finally:
        done.set()
    await asyncio.gather(*folders)
    assert await sagas.counts() == await truth(pool)
    await sagas.fold_counts()
    assert await sagas.counts() == await truth(pool)
    assert await pool.fetchval("SELECT COUNT(*) FROM saga_count_changes") == 0


async def test_the_counts_are_read_without_reading_the_sagas(pool: asyncpg.Pool, sagas: SagaStore) -> None:
    """With another session holding every lock on ``sagas`` (no row of it can be read), the counts and their
    fold still answer: what they read is as small as the number of statuses and of changes not yet folded."""
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE")
        assert await asyncio.wait_for(sagas.counts(), 30) == HELD
        assert await asyncio.wait_for(sagas.fold_counts(), 30) == sum(HELD.values())
        assert await asyncio.wait_for(sagas.counts(), 30) == HELD


async def test_the_space_of_folded_changes_is_used_again(pool: asyncpg.Pool, sagas: SagaStore) -> None:
    """Folded and vacuumed in turns, as the projector does, the changes' table stays the size of one turn's
    changes however many turns pass, with or without autovacuum."""
    ids = [uuid.uuid4() for _ in range(300)]
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE saga_count_changes SET (autovacuum_enabled = false)")  # ours alone
        await upsert(conn, dict.fromkeys(ids, "RUNNING"), version=1)
        sizes = []
        for turn in range(7):
            for i in ids:  # a row each, as sagas finish one by one
                await conn.execute("UPDATE sagas SET status = $2 WHERE saga_id = $1", i, STATUSES[turn % 5])
            assert await sagas.fold_counts() >= len(ids)
            await sagas.vacuum_count_changes()
            sizes.append(await conn.fetchval("SELECT pg_relation_size('saga_count_changes')"))
    assert sizes[-1] <= sizes[1] > 0, sizes  # kept (a vacuum that gave them back would wait) and used again
    assert await sagas.counts() == await truth(pool)


async def test_a_backlog_of_changes_is_folded_a_batch_at_a_time_and_whole(pool: asyncpg.Pool,
                                                                        sagas: SagaStore) -> None:
    """Changes left while the projector was down fold in statements of at most FOLD_BATCH changes each: as many
    statements as asked for, or all of the changes."""
    await pool.execute("INSERT INTO saga_count_changes (status, n) SELECT 'RUNNING', (i % 2) * 2 - 1 "
                       "FROM generate_series(1, $1::int) i", 3 * FOLD_BATCH + 10)  # +1 and -1 in turns: no change
    assert await sagas.counts() == HELD
    assert await pool.fetchval(FOLD_COUNTS) == FOLD_BATCH  # a statement folds a batch
    assert await sagas.fold_counts(batches=1) == FOLD_BATCH  # as many as asked for
    assert await sagas.counts() == HELD
    assert await sagas.fold_counts() == FOLD_BATCH + 10 + sum(HELD.values())
    assert await pool.fetchval("SELECT COUNT(*) FROM saga_count_changes") == 0
    assert await sagas.counts() == HELD


@pytest.mark.parametrize("first", ["fold", "truncate"])
async def test_a_truncate_of_the_sagas_and_a_fold_under_way_leave_no_count_behind(
        pool: asyncpg.Pool, sagas: SagaStore, first: str) -> None:
    """Whichever of the two holds its locks first, the other waits for it, and no count is left once ``sagas``
    is empty (nor does either wait on the other for good)."""
    async with pool.acquire() as holder, pool.acquire() as other:
        held = holder.transaction()
        await held.start()
        if first == "fold":
            await holder.fetchval(FOLD_COUNTS)
            waiting = asyncio.create_task(other.execute("TRUNCATE sagas CASCADE"))
        else:
            await holder.execute("TRUNCATE sagas CASCADE")
            waiting = asyncio.create_task(other.fetchval(FOLD_COUNTS))
        backend = other.get_server_pid()
        await eventually(lambda: holder.fetchval(  # the other waits for a lock on one of the counts' tables
            "SELECT COUNT(*) FROM pg_locks WHERE pid = $1 AND NOT granted"
            " AND relation IN ('saga_counts'::regclass, 'saga_count_changes'::regclass)", backend), lambda n: n > 0)
        await held.commit()
        await asyncio.wait_for(waiting, 30)
    assert await truth(pool) == {}
    assert await sagas.counts() == {}
    await pool.execute(INSERT, uuid.uuid4(), "RUNNING", uuid.uuid4())
    assert await sagas.counts() == {"RUNNING": 1}


async def test_the_sagas_of_a_database_from_before_the_counts_are_counted(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_saga_counts_upgrade")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await migrated_to(conn, 14)
        for status, n in HELD.items():
            await conn.executemany(INSERT, [(uuid.uuid4(), status, uuid.uuid4()) for _ in range(n)])
        assert 15 in await migrate(conn)
        await conn.execute(INSERT, uuid.uuid4(), "RUNNING", uuid.uuid4())
        pool = await create_pool(dsn, 1)
        try:
            assert await SagaStore(PostgresEventStore(pool)).counts() == HELD | {"RUNNING": 2}
        finally:
            await pool.close()
    finally:
        await conn.close()
        await drop_database(servers.database_url, dsn)


async def test_the_questions_about_unfinished_or_failed_sagas_use_the_status_index_whatever_plan_is_kept(
        servers: Servers) -> None:
    """After five executions on a connection, PostgreSQL may run a statement with the plan it made for any
    parameter (its generic plan; ``force_generic_plan`` makes it do so at once). With many finished sagas older
    than the unfinished ones, each statement the store prepared for /health, /metrics, the shards' rescans and
    the console's list of FAILED sagas must find its sagas through the status index, never by walking the
    sagas in creation order or reading the whole table."""
    dsn = await create_database(servers.database_url, "commerce_saga_plans")
    pool = await generic_plans_over(dsn, "sagas", """
        INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version, created_at)
        SELECT gen_random_uuid(), 'order_fulfilment', 'done', '{}'::jsonb,
               CASE WHEN i <= 3 THEN 'RUNNING' WHEN i = 4 THEN 'FAILED' WHEN i % 50 = 0 THEN 'COMPENSATED'
                    ELSE 'COMPLETED' END,
               gen_random_uuid(), 1, NOW() - make_interval(secs => i)
        FROM generate_series(1, 200000) i""")
    try:
        sagas = SagaStore(PostgresEventStore(pool))
        assert await sagas.counts() == {"RUNNING": 3, "FAILED": 1, "COMPENSATED": 4000, "COMPLETED": 195996}
        assert 0 < await sagas.oldest_unfinished_age() < 60
        assert len(await sagas.unfinished(include_failed=True)) == 4
        assert len(await sagas.unfinished(include_failed=False)) == 3
        assert [s["status"] for s in await sagas.list(status="FAILED", order_id=None, limit=50, cursor=None)] == [
            "FAILED"]
        async with pool.acquire() as conn:
            prepared = await prepared_on(conn, "sagas")
            assert len(prepared) == 4, [p["statement"] for p in prepared]  # oldest, two rescans, the list
            for statement in prepared:
                await assert_reads_through(conn, statement, {
                    "character varying[]": "'{RUNNING,COMPENSATING,FAILED}'", "character varying": "'FAILED'",
                    "text": "'FAILED'", "bigint": "50", "integer": "50", "uuid": "NULL",
                    "timestamp with time zone": "NULL", "double precision": "NULL"}, "sagas_status", "sagas_created")
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)
