"""Sagas counted by status, as /metrics and an admin's /health show them (every saga), and as the checks of
everyone else's /health need them (only the sagas not finished, however many have)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from store.event_store import PostgresEventStore, create_pool
from store.migrations import migrate
from store.sagas import SagaStore
from tests.integration.plans import assert_reads_through, generic_plans_over, prepared_on
from tests.support import Servers, create_database, drop_database

HELD = {"COMPLETED": 3, "COMPENSATED": 2, "RUNNING": 1, "COMPENSATING": 1, "FAILED": 2}


@pytest.fixture
async def sagas(servers: Servers) -> AsyncIterator[SagaStore]:
    dsn = await create_database(servers.database_url, "commerce_saga_counts")
    pool = await create_pool(dsn, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            for status, n in HELD.items():
                await conn.executemany(
                    """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version)
                       VALUES ($1, 'order_fulfilment', 'reserve_inventory', '{}'::jsonb, $2, $3, 1)""",
                    [(uuid.uuid4(), status, uuid.uuid4()) for _ in range(n)])
        yield SagaStore(PostgresEventStore(pool))
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


async def test_every_saga_is_counted_by_status(sagas: SagaStore) -> None:
    assert await sagas.counts() == HELD


async def test_only_the_unfinished_sagas_are_counted_when_those_are_all_that_is_asked(sagas: SagaStore) -> None:
    assert await sagas.counts(unfinished_only=True) == {"RUNNING": 1, "COMPENSATING": 1, "FAILED": 2}


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
        assert await sagas.counts(unfinished_only=True) == {"RUNNING": 3, "FAILED": 1}
        assert 0 < await sagas.oldest_unfinished_age() < 60
        assert len(await sagas.unfinished(include_failed=True)) == 4
        assert len(await sagas.unfinished(include_failed=False)) == 3
        assert [s["status"] for s in await sagas.list(status="FAILED", order_id=None, limit=50, cursor=None)] == [
            "FAILED"]
        async with pool.acquire() as conn:
            prepared = await prepared_on(conn, "sagas")
            assert len(prepared) == 5, [p["statement"] for p in prepared]  # counts, oldest, two rescans, the list
            for statement in prepared:
                await assert_reads_through(conn, statement, {
                    "character varying[]": "'{RUNNING,COMPENSATING,FAILED}'", "character varying": "'FAILED'",
                    "text": "'FAILED'", "bigint": "50", "integer": "50", "uuid": "NULL",
                    "timestamp with time zone": "NULL", "double precision": "NULL"}, "sagas_status", "sagas_created")
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)
