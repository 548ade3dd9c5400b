"""``commerce events verify`` and ``commerce projections rebuild`` against a database of their own."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from domain import order as o
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from store.projections import OrderViews, ProjectionRunner, all_projections
from store.verify import verify
from tests.support import Servers, create_database, drop_database, free_port, with_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")


@pytest.fixture
async def fresh(servers: Servers) -> AsyncIterator[tuple[str, PostgresEventStore]]:
    dsn = await create_database(servers.database_url, "commerce_verify")
    pool = await create_pool(dsn, 4)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield dsn, PostgresEventStore(pool)
    await pool.close()
    await drop_database(servers.database_url, dsn)


async def three_orders(store: PostgresEventStore) -> list[uuid.UUID]:
    ids = []
    for _ in range(3):
        order_id = uuid.uuid4()
        line = o.OrderLine(uuid.uuid4(), 1, Decimal("3.00"))
        events = [o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("3.00"), uuid.uuid4(), ADDRESS, "tok"),
                  o.InventoryReserved(()), o.OrderCompensationStarted("x"), o.OrderCancelled("x")]
        await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, events)], CommandContext.new(order_id, NOW))
        ids.append(order_id)
    for projection in all_projections():
        await ProjectionRunner(store, projection).catch_up()
    return ids


async def tool(env: dict[str, str], *args: str, stdout: Any = asyncio.subprocess.PIPE,
               stderr: Any = asyncio.subprocess.PIPE) -> tuple[int, str, str]:
    """The command run as an operator's script runs it (no Ray cluster named, none of libpq's PG* variables):
    its exit code, stdout and stderr."""
    env = {k: v for k, v in {**os.environ, **env}.items() if k != "RAY_ADDRESS" and not k.startswith("PG")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "commerce.cli", *args, env=env,
                                                stdout=stdout, stderr=stderr)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, (out or b"").decode(), (err or b"").decode()


async def cli(dsn: str, *args: str) -> tuple[int, str]:
    """A tool on ``dsn``: its exit code and its output, stdout and stderr together."""
    code, out, _ = await tool({"COMMERCE_DATABASE_URL": dsn}, *args, stderr=asyncio.subprocess.STDOUT)
    return code, out


async def test_a_consistent_store_verifies_clean(fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    await three_orders(store)
    assert await verify(store.pool) == []
    code, out = await cli(dsn, "events", "verify")
    assert code == 0, out


async def test_verify_reports_a_missing_version_and_an_unknown_event_type(
        fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    first, second, _ = await three_orders(store)
    await store.pool.execute("DELETE FROM events WHERE aggregate_id = $1 AND version = 2", first)
    await store.pool.execute("UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 3",
                             second)
    problems = await verify(store.pool)
    assert any(str(first) in p and "not contiguous" in p for p in problems)
    assert any("OrderTeleported" in p for p in problems)
    code, out = await cli(dsn, "events", "verify")
    assert code == 1 and "not contiguous" in out and "OrderTeleported" in out


async def test_verify_reports_a_read_model_that_differs_from_a_replay(fresh: tuple[str, PostgresEventStore]) -> None:
    _, store = fresh
    order_id, *_ = await three_orders(store)
    await store.pool.execute("UPDATE order_views SET status = 'CONFIRMED' WHERE order_id = $1", order_id)
    assert any(str(order_id) in p and "order_views" in p for p in await verify(store.pool))


async def test_projections_rebuild_restores_a_damaged_read_model(fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    ids = await three_orders(store)
    await store.pool.execute("DELETE FROM order_views")
    code, out = await cli(dsn, "projections", "rebuild")
    assert code == 0 and "order_views" in out
    assert await store.pool.fetchval("SELECT COUNT(*) FROM order_views WHERE order_id = ANY($1::uuid[])", ids) == 3
    assert await verify(store.pool) == []


async def test_a_bad_setting_fails_at_start_naming_it(fresh: tuple[str, PostgresEventStore]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "commerce.cli", "migrate", env={**os.environ, "COMMERCE_SAGA_RETRY_ATTEMPTS": "many"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 2 and b"COMMERCE_SAGA_RETRY_ATTEMPTS" in out


@pytest.mark.parametrize("args", [("migrate",), ("events", "verify"), ("events", "repair", "--apply"),
                                  ("projections", "rebuild"), ("serve",)])
async def test_a_database_that_cannot_be_reached_is_named_with_an_exit_code_of_its_own(
        args: tuple[str, ...], tmp_path: Path) -> None:
    """Not 1, which verify and repair exit with when they find problems, and not a traceback: a script that
    checks the store must tell an outage from an inconsistent store."""
    code, out, err = await tool({"COMMERCE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
                                 "COMMERCE_DATA_DIR": str(tmp_path)}, *args)
    assert code == os.EX_UNAVAILABLE
    assert f"commerce: {' '.join(a for a in args if not a.startswith('-'))}: PostgreSQL unavailable:" in err
    assert "Traceback" not in err and "verified" not in out and "applied" not in out


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/test", "postgresql://postgres@127.0.0.1:port/test",
                                 "postgresql://postgres:pa55/word@127.0.0.1/test"])  # a "/" not percent-encoded
@pytest.mark.parametrize("args", [("events", "verify"), ("serve",)])
async def test_a_database_url_that_cannot_be_read_is_a_configuration_error_that_repeats_no_password(
        url: str, args: tuple[str, ...], tmp_path: Path) -> None:
    code, _, err = await tool({"COMMERCE_DATABASE_URL": url, "COMMERCE_DATA_DIR": str(tmp_path)}, *args)
    assert code == 2 and "configuration error: COMMERCE_DATABASE_URL (or a PG* variable)" in err
    assert "Traceback" not in err and "pa55" not in err


@pytest.mark.parametrize("args", [("events", "verify"), ("serve",)])
async def test_a_database_the_server_does_not_have_is_a_configuration_error(
        servers: Servers, args: tuple[str, ...], tmp_path: Path) -> None:
    missing = with_database(servers.database_url, f"commerce_missing_{uuid.uuid4().hex[:8]}")
    code, _, err = await tool({"COMMERCE_DATABASE_URL": missing, "COMMERCE_DATA_DIR": str(tmp_path)}, *args)
    assert code == 2 and "configuration error: COMMERCE_DATABASE_URL:" in err and "does not exist" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [("migrate",), ("events", "verify")])
async def test_a_read_only_database_whose_schema_is_current_is_verified_as_it_is(
        fresh: tuple[str, PostgresEventStore], args: tuple[str, ...]) -> None:
    """As a hot standby is: the tools migrate first, and a current schema needs no write."""
    dsn, store = fresh
    await three_orders(store)
    await read_only(dsn)
    conn = await asyncpg.connect(dsn)  # a new session: read-only now
    try:
        with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    finally:
        await conn.close()
    code, out, err = await tool({"COMMERCE_DATABASE_URL": dsn}, *args)
    assert code == 0, err
    assert ("event store verified" if args[0] == "events" else "schema is current") in out


async def read_only(dsn: str, behind: bool = False) -> None:
    """Set the database read-only for new sessions; with ``behind``, its schema short of the last migration."""
    conn = await asyncpg.connect(dsn)
    try:
        if behind:
            await conn.execute("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)")
        await conn.execute(f'ALTER DATABASE "{urlsplit(dsn).path.lstrip("/")}" SET default_transaction_read_only = on')
    finally:
        await conn.close()


async def test_a_read_only_database_whose_schema_is_behind_is_not_taken_for_current(
        fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, _ = fresh
    await read_only(dsn, behind=True)
    code, out, err = await tool({"COMMERCE_DATABASE_URL": dsn}, "events", "verify")
    assert code == os.EX_UNAVAILABLE and "read-only transaction" in err and "verified" not in out


@pytest.mark.parametrize("args", [("events", "repair", "--apply"), ("projections", "rebuild")])
async def test_the_tools_that_write_refuse_a_read_only_database(
        fresh: tuple[str, PostgresEventStore], args: tuple[str, ...]) -> None:
    dsn, store = fresh
    await three_orders(store)
    await read_only(dsn)
    code, out, err = await tool({"COMMERCE_DATABASE_URL": dsn}, *args)
    assert code == 2 and "the database is read-only" in err and out == ""


@pytest.mark.parametrize("args", [("events", "verify"), ("projections", "rebuild")])
async def test_output_that_cannot_be_written_is_not_taken_for_an_outage(
        fresh: tuple[str, PostgresEventStore], args: tuple[str, ...]) -> None:
    dsn, store = fresh
    await three_orders(store)
    read, write = os.pipe()
    os.close(read)  # as `| head` does once it has what it wants: every write is EPIPE
    try:
        code, _, err = await tool({"COMMERCE_DATABASE_URL": dsn}, *args, stdout=write)
    finally:
        os.close(write)
    assert code == os.EX_IOERR
    assert f"commerce: {' '.join(args)}: its output could not be written:" in err and "unavailable" not in err


async def a_saga_with_history(store: PostgresEventStore) -> uuid.UUID:
    from domain import saga as sg
    from store.sagas import SagaStore

    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    policy = sg.SagaPolicy()
    sagas = SagaStore(store)
    saga, _ = await sagas.record(CommandContext.new(order_id, NOW), None, saga_id,
                                 sg.decide_start(order_id, NOW, policy))
    action = sg.next_action(saga, NOW, policy)
    assert isinstance(action, sg.RunStep)
    saga, _ = await sagas.record(CommandContext.new(order_id, NOW), saga, saga_id, sg.decide_attempt(action))
    await sagas.record(CommandContext.new(order_id, NOW), saga, saga_id,
                       sg.decide_outcome(saga, action, sg.StepResult(True), NOW, policy))
    return saga_id


@pytest.mark.parametrize("damage", [
    "UPDATE sagas SET status = 'COMPLETED' WHERE saga_id = $1",
    "DELETE FROM saga_steps WHERE saga_id = $1 AND seq = (SELECT MAX(seq) FROM saga_steps WHERE saga_id = $1)",
])
async def test_verify_reports_sagas_rows_that_disagree_with_their_events(
        fresh: tuple[str, PostgresEventStore], damage: str) -> None:
    _, store = fresh
    saga_id = await a_saga_with_history(store)
    assert await verify(store.pool) == []
    await store.pool.execute(damage, saga_id)
    problems = await verify(store.pool)
    assert len(problems) == 1 and str(saga_id) in problems[0] and "sagas row" in problems[0]


async def test_verify_reports_a_saga_whose_row_is_gone(fresh: tuple[str, PostgresEventStore]) -> None:
    from domain import saga as sg
    from store.sagas import SagaStore

    _, store = fresh
    saga_id, order_id = uuid.uuid4(), uuid.uuid4()
    await SagaStore(store).record(CommandContext.new(order_id, NOW), None, saga_id,
                                  sg.decide_start(order_id, NOW, sg.SagaPolicy()))  # no step yet: no history rows
    assert await verify(store.pool) == []
    await store.pool.execute("DELETE FROM sagas WHERE saga_id = $1", saga_id)
    problems = await verify(store.pool)
    assert len(problems) == 1 and f"sagas row of {saga_id} is None" in problems[0]


async def events_of(store: PostgresEventStore) -> int:
    return int(await store.pool.fetchval("SELECT COUNT(*) FROM events"))


@pytest.mark.parametrize("damage", [
    "UPDATE order_views SET status = 'CONFIRMED' WHERE order_id = $1",
    "DELETE FROM order_views WHERE order_id = $1",
    "UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 4",
    "UPDATE events SET event_data = '[]' WHERE aggregate_id = $1 AND version = 4",
    "UPDATE projection_checkpoints SET position = position + 1000000 WHERE $1::uuid IS NOT NULL",
])
async def test_repair_fixes_what_it_safely_can_and_verify_is_clean_afterwards(
        fresh: tuple[str, PostgresEventStore], damage: str) -> None:
    dsn, store = fresh
    order_id, *_ = await three_orders(store)
    await store.pool.execute(damage, order_id)
    assert await verify(store.pool) != []
    before = await events_of(store)
    code, out = await cli(dsn, "events", "repair")  # a dry run first: it says what it would do
    assert code == 1 and "dry run" in out and "cannot fix" not in out
    assert await verify(store.pool) != [] and await events_of(store) == before
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 0 and "verifies clean" in out, out
    assert await verify(store.pool) == []


async def test_repair_rederives_the_sagas_tables_from_the_events(fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    saga_id = await a_saga_with_history(store)
    history = await store.pool.fetchval("SELECT COUNT(*) FROM saga_steps WHERE saga_id = $1", saga_id)
    await store.pool.execute("UPDATE sagas SET status = 'COMPLETED', current_step = 'done' WHERE saga_id = $1", saga_id)
    await store.pool.execute("DELETE FROM saga_steps WHERE saga_id = $1", saga_id)
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 0, out
    assert await verify(store.pool) == []
    assert await store.pool.fetchval("SELECT COUNT(*) FROM saga_steps WHERE saga_id = $1", saga_id) == history > 0


async def test_an_unreadable_event_is_set_aside_only_when_nothing_follows_it(
        fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    last, middle, _ = await three_orders(store)
    await store.pool.execute("UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 4",
                             last)
    await store.pool.execute("UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 2",
                             middle)
    views = await store.pool.fetchval("SELECT COUNT(*) FROM order_views")
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 1 and "cannot fix" in out and str(middle) in out and "cannot rebuild" in out
    quarantined = await store.pool.fetch("SELECT aggregate_id, version FROM events_quarantine")
    assert [(r["aggregate_id"], r["version"]) for r in quarantined] == [(last, 4)]
    remaining = await verify(store.pool)
    assert len(remaining) == 2 and "OrderTeleported" in remaining[0] and str(last) in remaining[1]
    assert await store.pool.fetchval("SELECT COUNT(*) FROM events WHERE aggregate_id = $1", middle) == 4
    assert await store.pool.fetchval("SELECT COUNT(*) FROM order_views") == views  # not emptied by a rebuild


async def test_a_gap_in_a_stream_is_reported_as_beyond_repair_and_nothing_changes(
        fresh: tuple[str, PostgresEventStore]) -> None:
    dsn, store = fresh
    order_id, *_ = await three_orders(store)
    await store.pool.execute("DELETE FROM events WHERE aggregate_id = $1 AND version = 2", order_id)
    before = await events_of(store)
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 1 and "cannot fix" in out and "backup" in out
    assert await events_of(store) == before


async def test_repair_sets_nothing_aside_while_the_service_runs(fresh: tuple[str, PostgresEventStore]) -> None:
    from store.event_store import SERVICE

    dsn, store = fresh
    order_id, *_ = await three_orders(store)
    await store.pool.execute("UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 4",
                             order_id)
    service = await create_pool(dsn, 1, SERVICE)  # a connection of the running service
    try:
        code, out = await cli(dsn, "events", "repair", "--apply")
    finally:
        await service.close()
    assert code == 1 and "while the service runs" in out
    assert await store.pool.fetchval("SELECT COUNT(*) FROM events_quarantine") == 0
    assert await store.pool.fetchval("SELECT COUNT(*) FROM events WHERE aggregate_id = $1", order_id) == 4


async def test_repair_sets_nothing_aside_that_a_newer_release_may_have_written(
        fresh: tuple[str, PostgresEventStore]) -> None:
    """An older release's repair, run on a database that a newer release migrated: an event it cannot read is
    the newer release's, not damage, and setting it aside would free its version for the next append."""
    from store.migrations import LATEST

    dsn, store = fresh
    order_id, *_ = await three_orders(store)
    await store.pool.execute("UPDATE events SET event_type = 'OrderTeleported' WHERE aggregate_id = $1 AND version = 4",
                             order_id)
    await store.pool.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, 'a newer release')", LATEST + 1)
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 1 and "a newer release migrated this database" in out
    assert await store.pool.fetchval("SELECT COUNT(*) FROM events_quarantine") == 0
    assert await store.pool.fetchval("SELECT COUNT(*) FROM events WHERE aggregate_id = $1", order_id) == 4


async def test_verify_does_not_count_what_the_projector_has_not_reached_yet(
        fresh: tuple[str, PostgresEventStore]) -> None:
    _, store = fresh
    await three_orders(store)  # projected
    order_id = uuid.uuid4()
    line = o.OrderLine(uuid.uuid4(), 1, Decimal("3.00"))
    created = o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("3.00"), uuid.uuid4(), ADDRESS, "tok")
    await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [created])], CommandContext.new(order_id, NOW))
    assert await verify(store.pool) == []  # not projected yet: lag, not damage


class ServiceBetweenReads:
    """A pool whose first read naming ``table`` on one of its connections is followed, once, by what the running
    service does (``after``): what a verify on a running service meets when the service moves on while it reads.
    A read of the table through the pool itself never triggers it, and the tests see that ``after`` did not run."""

    def __init__(self, pool: asyncpg.Pool, table: str, after: Callable[[], Awaitable[None]]) -> None:
        self.pool = pool
        self.table = table
        self.after: Callable[[], Awaitable[None]] | None = after

    async def _moved_on(self, query: str) -> None:
        if f"FROM {self.table}" in query and self.after is not None:
            after, self.after = self.after, None
            await after()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        outer = self

        async with self.pool.acquire() as conn:
            class Conn:
                def __getattr__(self, name: str) -> Any:
                    return getattr(conn, name)

                async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
                    rows = await conn.fetch(query, *args)
                    await outer._moved_on(query)
                    return rows

            yield Conn()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


async def test_verify_reads_the_views_and_the_projectors_checkpoint_as_of_one_moment(
        fresh: tuple[str, PostgresEventStore]) -> None:
    _, store = fresh
    await three_orders(store)
    order_id = uuid.uuid4()
    line = o.OrderLine(uuid.uuid4(), 1, Decimal("3.00"))
    created = o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("3.00"), uuid.uuid4(), ADDRESS, "tok")
    await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [created])], CommandContext.new(order_id, NOW))
    await ProjectionRunner(store, OrderViews()).catch_up()

    async def the_order_moves_on_and_is_projected() -> None:
        await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 1, [o.InventoryReserved(())])],
                           CommandContext.new(order_id, NOW))
        assert await ProjectionRunner(store, OrderViews()).catch_up() == 1

    between = ServiceBetweenReads(store.pool, "order_views", the_order_moves_on_and_is_projected)
    assert await verify(between) == []  # type: ignore[arg-type]
    assert between.after is None  # the projector did move on between the reads
    assert await verify(store.pool) == []  # and once it has moved on, the views agree with the events


async def test_a_saga_started_while_verify_reads_is_not_a_saga_without_its_row(
        fresh: tuple[str, PostgresEventStore]) -> None:
    _, store = fresh
    await a_saga_with_history(store)
    started: list[uuid.UUID] = []

    async def a_saga_starts() -> None:
        started.append(await a_saga_with_history(store))

    between = ServiceBetweenReads(store.pool, "sagas", a_saga_starts)
    assert await verify(between) == []  # type: ignore[arg-type]
    assert between.after is None and len(started) == 1
    assert await verify(store.pool) == []


async def test_verify_does_not_count_a_later_transactions_event_below_the_checkpoints_position(
        fresh: tuple[str, PostgresEventStore]) -> None:
    """The projector reads in (transaction, position) order: an event that took a lower position than its
    checkpoint's, in a transaction that committed later, is lag too, not a read model gone wrong."""
    from tests.integration.test_projections import a_later_transaction_left_open

    _, store = fresh
    await three_orders(store)
    async with a_later_transaction_left_open(store):
        for projection in all_projections():  # the checkpoint passes the later transaction's position
            await ProjectionRunner(store, projection).catch_up()
    assert await verify(store.pool) == []


@pytest.mark.parametrize("damage", [
    "INSERT INTO saga_count_changes (status, n) VALUES ('FAILED', 1)",  # as a write with the triggers off leaves
    "UPDATE saga_counts SET n = n - 1",  # after a fold
])
async def test_counts_of_the_sagas_gone_wrong_are_found_and_counted_again(
        fresh: tuple[str, PostgresEventStore], damage: str) -> None:
    from store.sagas import SagaStore

    dsn, store = fresh
    sagas = SagaStore(store)
    await a_saga_with_history(store)
    await sagas.fold_counts()
    right = await sagas.counts()
    assert await verify(store.pool) == [] and sum(right.values()) == 1
    await store.pool.execute(damage)
    problems = await verify(store.pool)
    assert len(problems) == 1 and "counted by status" in problems[0], problems
    code, out = await cli(dsn, "events", "repair", "--apply")
    assert code == 0 and "count the sagas by status again" in out, out
    assert await verify(store.pool) == [] and await sagas.counts() == right
