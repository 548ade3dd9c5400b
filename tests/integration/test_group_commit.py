"""The order shard's group commit on PostgreSQL: records queued together are written in one transaction,
all or nothing; a record the store refuses fails alone; nothing is acknowledged before its commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from actors.metrics import OrderMetrics
from actors.order_commits import GroupCommit
from actors.orders import OrderRecords
from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from store.errors import ConcurrencyConflict, DuplicateCommand, StoreUnavailable
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from store.sagas import SagaStore
from tests.support import Servers, create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")
POLICY = sg.SagaPolicy()

# A saga row for an order named in crash_on ends its session in the middle of the transaction: PostgreSQL
# drops the connection as it does when the server crashes or the network goes.
CRASH_ON = """
    CREATE TABLE crash_on (order_id UUID PRIMARY KEY);
    CREATE FUNCTION crash_on_saga_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM crash_on WHERE order_id = NEW.order_id) THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER crash_on_saga_row BEFORE INSERT ON sagas FOR EACH ROW EXECUTE FUNCTION crash_on_saga_row();
"""


@pytest.fixture
async def store(servers: Servers) -> AsyncIterator[PostgresEventStore]:
    """A database of the test's own, whose sessions can be made to die in the middle of a transaction."""
    dsn = await create_database(servers.database_url, "commerce_group_commit")
    pool = await create_pool(dsn, 4)
    async with pool.acquire() as conn:
        await migrate(conn)
        await conn.execute(CRASH_ON)
    try:
        yield PostgresEventStore(pool)
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


class Placement:
    """What placing an order records: the saga's start and the order's creation, two streams, one command."""

    def __init__(self, order_id: uuid.UUID | None = None, command_id: uuid.UUID | None = None,
                 saga_id: uuid.UUID | None = None) -> None:
        self.order_id = order_id or uuid.uuid4()
        self.saga_id = saga_id or ff.saga_id_of(self.order_id)
        self.ctx = CommandContext.new(self.order_id, NOW, command_id=command_id)

    async def record(self, commits: GroupCommit, saga: sg.Saga | None = None, order_version: int = 0) -> sg.Saga:
        created = o.decide_create(None, order_id=self.order_id, customer_id=uuid.uuid4(),
                                  lines=(o.OrderLine(uuid.uuid4(), 1, Decimal("9.99")),), saga_id=self.saga_id,
                                  shipping_address=ADDRESS, payment_token="tok_visa")
        order = StreamAppend(self.order_id, o.AGGREGATE_TYPE, order_version, created)
        after, _ = await commits.record(self.ctx, saga, self.saga_id, sg.decide_start(self.order_id, NOW, POLICY),
                                        [order])
        return after


async def stored(store: PostgresEventStore, p: Placement) -> tuple[int, int, bool]:
    """The events of the placement's order and saga, and whether its saga has a row."""
    return (len(await store.load_stream(p.order_id)), len(await store.load_stream(p.saga_id)),
            await store.pool.fetchval("SELECT EXISTS (SELECT 1 FROM sagas WHERE saga_id = $1)", p.saga_id))


async def outcomes(*records: asyncio.Future[sg.Saga] | object) -> list[object]:
    return await asyncio.gather(*records, return_exceptions=True)  # type: ignore[arg-type]


async def test_records_queued_together_commit_in_one_transaction(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store))
    batch = [Placement() for _ in range(5)]
    done = await outcomes(*(p.record(commits) for p in batch))
    assert all(isinstance(s, sg.Saga) for s in done), done
    assert list(commits.flushes) == [5]
    for p in batch:
        assert await stored(store, p) == (1, 1, True)
    ids = {p.order_id for p in batch} | {p.saga_id for p in batch}
    transactions = await store.pool.fetch(
        "SELECT DISTINCT transaction_id::text FROM events WHERE aggregate_id = ANY($1::uuid[])", list(ids))
    assert len(transactions) == 1


async def test_a_conflict_inside_a_batch_fails_only_its_own_record(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store))
    placed = Placement()
    await placed.record(commits)
    again = Placement(placed.order_id)  # another command deciding on a stale state (version 0) of the same order
    first, second = Placement(), Placement()
    done = await outcomes(first.record(commits), again.record(commits), second.record(commits))
    assert isinstance(done[0], sg.Saga) and isinstance(done[2], sg.Saga)
    assert isinstance(done[1], ConcurrencyConflict)
    assert list(commits.flushes) == [1, 3, 1, 2, 1, 1] and commits.split == 2  # refused, split in halves
    assert await stored(store, first) == await stored(store, second) == (1, 1, True)
    assert await stored(store, placed) == (1, 1, True)  # the stale command wrote nothing


async def test_a_record_the_driver_cannot_encode_fails_alone_and_is_not_taken_for_an_outage(
        store: PostgresEventStore) -> None:
    """An argument asyncpg cannot encode (a version beyond PostgreSQL's integer) is the record's own fault, as a
    value PostgreSQL refuses is: it fails alone, with the driver's DataError, and the records flushed with it
    commit. Taken for an outage, it would fail them all, and every flush it joined on each retry."""
    commits = GroupCommit(store, SagaStore(store))
    first, poisoned, second = Placement(), Placement(), Placement()
    done = await outcomes(first.record(commits), poisoned.record(commits, order_version=2 ** 31),
                          second.record(commits))
    assert isinstance(done[0], sg.Saga) and isinstance(done[2], sg.Saga), done
    assert isinstance(done[1], asyncpg.DataError), done
    assert commits.split == 2
    assert await stored(store, first) == await stored(store, second) == (1, 1, True)
    assert await stored(store, poisoned) == (0, 0, False)


async def test_a_duplicate_command_inside_a_batch_applies_once(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store))
    command = uuid.uuid4()
    original, delivered_twice, other = Placement(command_id=command), Placement(command_id=command), Placement()
    delivered_twice.order_id, delivered_twice.saga_id = original.order_id, original.saga_id
    done = await outcomes(original.record(commits), delivered_twice.record(commits), other.record(commits))
    assert isinstance(done[0], sg.Saga) and isinstance(done[2], sg.Saga)
    assert isinstance(done[1], (DuplicateCommand, ConcurrencyConflict))
    assert list(commits.flushes)[0] == 3
    assert await stored(store, original) == await stored(store, other) == (1, 1, True)


async def test_a_batch_spanning_several_orders_commits_all_or_none(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store))
    batch = [Placement() for _ in range(3)]
    # The last saga row ends the session: every event of the batch and the saga rows before it were written.
    await store.pool.execute("INSERT INTO crash_on VALUES ($1)", batch[-1].order_id)
    done = await outcomes(*(p.record(commits) for p in batch))
    assert all(isinstance(e, StoreUnavailable) for e in done), done
    assert list(commits.flushes) == [3]
    for p in batch:
        assert await stored(store, p) == (0, 0, False)

    await store.pool.execute("DELETE FROM crash_on")
    done = await outcomes(*(p.record(commits) for p in batch))  # the callers retry
    assert all(isinstance(s, sg.Saga) for s in done), done
    for p in batch:
        assert await stored(store, p) == (1, 1, True)


async def test_a_crash_in_the_middle_of_a_flush_loses_no_acknowledged_record(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store), max_batch=4)  # 12 records queued at once: three flushes at once
    placements = [Placement() for _ in range(12)]
    await store.pool.execute("INSERT INTO crash_on VALUES ($1)", placements[5].order_id)  # in the second flush
    done = await outcomes(*(p.record(commits) for p in placements))
    assert list(commits.flushes) == [4, 4, 4]
    acknowledged = [p for p, d in zip(placements, done, strict=True) if isinstance(d, sg.Saga)]
    failed = [p for p, d in zip(placements, done, strict=True) if isinstance(d, StoreUnavailable)]
    assert acknowledged == placements[:4] + placements[8:] and failed == placements[4:8], done
    for p in acknowledged:  # every acknowledged record is there: the other flushes went on
        assert await stored(store, p) == (1, 1, True)
    for p in failed:  # none of the crashed flush's records is there, not even in part
        assert await stored(store, p) == (0, 0, False)

    await store.pool.execute("DELETE FROM crash_on")
    assert all(isinstance(s, sg.Saga) for s in await outcomes(*(p.record(commits) for p in failed)))
    for p in placements:
        assert await stored(store, p) == (1, 1, True)


async def test_a_record_whose_caller_gave_up_before_its_flush_is_never_written(store: PostgresEventStore) -> None:
    commits = GroupCommit(store, SagaStore(store), max_flushes=1)
    first, abandoned = Placement(), Placement()
    writing = asyncio.create_task(first.record(commits))
    while not commits.flushes:  # the first record's flush has begun (turns of the event loop, no clock)
        await asyncio.sleep(0)
    gave_up = asyncio.create_task(abandoned.record(commits))
    await asyncio.sleep(0)  # queued behind the flush in flight
    gave_up.cancel()
    assert isinstance(await writing, sg.Saga)
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert list(commits.flushes) == [1]
    assert await stored(store, first) == (1, 1, True) and await stored(store, abandoned) == (0, 0, False)


async def test_an_order_whose_saga_id_was_not_derived_from_its_own_records_its_steps_on_that_saga(
        store: PostgresEventStore) -> None:
    """An order placed with a saga id of another making (an earlier scheme) has its saga under that id: its
    steps are recorded there, not on a stream of the id derived now, which would refuse them forever."""
    records = OrderRecords(store, OrderMetrics())
    placed = Placement(saga_id=uuid.uuid4())
    await placed.record(records.commits)
    entity = await records.load(placed.order_id)
    assert entity.saga is not None and entity.saga.saga_id == placed.saga_id

    action = sg.next_action(entity.saga, NOW, POLICY)
    assert isinstance(action, sg.RunStep)
    after = await records.record(placed.order_id, entity, sg.decide_attempt(action), [])

    assert after is not None and after.saga is not None and after.saga.in_flight
    assert [type(r.event) for r in await store.load_stream(placed.saga_id)] == [sg.SagaStarted, sg.StepAttempted]
    assert await store.load_stream(ff.saga_id_of(placed.order_id)) == []
    assert (await records.load(placed.order_id)).saga == after.saga
    row = await store.pool.fetchrow("SELECT version, (SELECT COUNT(*) FROM saga_steps s WHERE s.saga_id = $1) AS steps "
                                    "FROM sagas WHERE saga_id = $1", placed.saga_id)
    assert (row["version"], row["steps"]) == (2, 1)  # the saga's row and its step's row follow the same saga
