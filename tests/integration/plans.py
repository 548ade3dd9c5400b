"""The plans PostgreSQL keeps for the statements the store prepared, as the server may run them from their sixth
execution on a connection (its generic plan; ``force_generic_plan`` makes it so at once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from store.event_store import SERVICE, create_pool
from store.migrations import migrate


async def generic_plans_over(dsn: str, table: str, rows: str, *arguments: object) -> asyncpg.Pool:
    """A pool of one session, not reset between uses (as the service's), over a migrated database whose
    ``table`` holds ``rows`` (an INSERT), analysed, the session running every statement with its generic plan."""
    pool = await create_pool(dsn, 1, SERVICE)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute(rows, *arguments)
            await conn.execute(f"ANALYZE {table}")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
    except BaseException:
        await pool.close()
        raise
    return pool


async def prepared_on(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    """The statements the store prepared on the session that read ``table``, the session still running each
    with its generic plan."""
    assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"  # kept by the session
    return list(await conn.fetch(
        f"""SELECT name, statement, parameter_types::text[] AS types FROM pg_prepared_statements
            WHERE statement LIKE '%FROM {table}%' AND name LIKE '__asyncpg%'
              AND statement NOT LIKE '%pg_prepared_statements%'"""))


async def assert_reads_through(conn: asyncpg.Connection, statement: asyncpg.Record, values: dict[str, str],
                               index: str, not_through: str) -> None:
    """The plan of ``statement`` (executed with ``values`` by parameter type) uses ``index``, and neither a
    sequential scan nor ``not_through``."""
    scans = await scans_of(conn, statement, values)
    assert {s for s in scans if s[1] == index}, (statement["statement"], scans)
    assert not {s for s in scans if s[0] == "Seq Scan" or s[1] == not_through}, (statement["statement"], scans)


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
