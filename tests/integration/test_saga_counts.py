"""Sagas counted by status, as /metrics and an admin's /health show them (every saga), and as the checks of
everyone else's /health need them (only the sagas not finished, however many have)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from store.event_store import SERVICE, PostgresEventStore, create_pool
from store.migrations import migrate
from store.sagas import SagaStore
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
    pool = await create_pool(dsn, 1, SERVICE)  # one session, not reset between uses, as the service's
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute(
                """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, version,
                                      created_at)
                   SELECT gen_random_uuid(), 'order_fulfilment', 'done', '{}'::jsonb,
                          CASE WHEN i <= 3 THEN 'RUNNING' WHEN i = 4 THEN 'FAILED' WHEN i % 50 = 0 THEN 'COMPENSATED'
                               ELSE 'COMPLETED' END,
                          gen_random_uuid(), 1, NOW() - make_interval(secs => i)
                   FROM generate_series(1, 200000) i""")
            await conn.execute("ANALYZE sagas")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        sagas = SagaStore(PostgresEventStore(pool))
        assert await sagas.counts(unfinished_only=True) == {"RUNNING": 3, "FAILED": 1}
        assert 0 < await sagas.oldest_unfinished_age() < 60
        assert len(await sagas.unfinished(include_failed=True)) == 4
        assert len(await sagas.unfinished(include_failed=False)) == 3
        assert [s["status"] for s in await sagas.list(status="FAILED", order_id=None, limit=50, cursor=None)] == [
            "FAILED"]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"  # kept by the session
            prepared = await conn.fetch(
                """SELECT name, statement, parameter_types::text[] AS types FROM pg_prepared_statements
                   WHERE statement LIKE '%FROM sagas%' AND name LIKE '__asyncpg%'
                     AND statement NOT LIKE '%pg_prepared_statements%'""")
            assert len(prepared) == 5, [p["statement"] for p in prepared]  # counts, oldest, two rescans, the list
            for statement in prepared:
                scans = await scans_of(conn, statement, {
                    "character varying[]": "'{RUNNING,COMPENSATING,FAILED}'", "character varying": "'FAILED'",
                    "text": "'FAILED'", "bigint": "50", "integer": "50", "uuid": "NULL",
                    "timestamp with time zone": "NULL", "double precision": "NULL"})
                assert {s for s in scans if s[1] == "sagas_status"}, (statement["statement"], scans)
                assert not {s for s in scans if s[0] == "Seq Scan" or s[1] == "sagas_created"}, (
                    statement["statement"], scans)
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


async def scans_of(conn: asyncpg.Connection, statement: asyncpg.Record, values: dict[str, str]) -> set[tuple[Any, Any]]:
    """The scans (node type, index) of the plan the session keeps for a statement it prepared (a row of
    pg_prepared_statements), executed with ``values`` by parameter type."""
    arguments = f"({', '.join(values[t] for t in statement['types'])})" if statement["types"] else ""
    plan = await conn.fetchval(f'EXPLAIN (FORMAT JSON) EXECUTE "{statement["name"]}"{arguments}')
    plan = json.loads(plan) if isinstance(plan, str) else plan  # the service's pools decode JSON themselves
    return {(node.get("Node Type"), node.get("Index Name")) for node in nodes(plan[0]["Plan"])}


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)
