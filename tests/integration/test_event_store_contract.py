"""One contract, run against the in-memory and the PostgreSQL event store."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest

from actors.routing import shard_of
from domain import inventory as inv
from store.errors import ConcurrencyConflict, DuplicateCommand
from store.event_store import CommandContext, Deadline, PostgresEventStore, Snapshot, StreamAppend
from store.memory import InMemoryEventStore

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> object:
    if request.param == "memory":
        return InMemoryEventStore()
    return request.getfixturevalue("event_store")


def stock(pid: uuid.UUID, on_hand: int = 5) -> inv.StockSet:
    return inv.StockSet(pid, on_hand, Decimal("1.00"), "thing")


def ctx() -> CommandContext:
    return CommandContext.new(uuid.uuid4(), NOW)


async def test_appended_events_load_in_version_order(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid, 1), stock(pid, 2)])], ctx())
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 2, [stock(pid, 3)])], ctx())
    loaded = await store.load_stream(pid)
    assert [r.version for r in loaded] == [1, 2, 3]
    assert [r.event.on_hand for r in loaded] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [r.version for r in await store.load_stream(pid, after_version=2)] == [3]


async def test_an_append_returns_what_a_load_reads_back_positions_included(store: PostgresEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append([StreamAppend(a, inv.AGGREGATE_TYPE, 0, [stock(a, 1)])], ctx())
    written = await store.append([StreamAppend(a, inv.AGGREGATE_TYPE, 1, [stock(a, 2), stock(a, 3)]),
                                  StreamAppend(b, inv.AGGREGATE_TYPE, 0, [stock(b, 4)])], ctx())
    assert written == [*(await store.load_stream(a))[1:], *await store.load_stream(b)]
    assert all(r.position for r in written) and len({r.position for r in written}) == 3


async def test_stale_expected_version_is_a_conflict(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)])], ctx())
    with pytest.raises(ConcurrencyConflict):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)])], ctx())
    with pytest.raises(ConcurrencyConflict):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 3, [stock(pid)])], ctx())
    assert [r.version for r in await store.load_stream(pid)] == [1]


async def test_a_command_applied_twice_is_a_duplicate(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    c = ctx()
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)])], c)
    with pytest.raises(DuplicateCommand):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 1, [stock(pid)])], c)
    assert len(await store.load_stream(pid)) == 1


async def test_multi_stream_append_is_all_or_nothing(store: PostgresEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append([StreamAppend(b, inv.AGGREGATE_TYPE, 0, [stock(b)])], ctx())
    with pytest.raises(ConcurrencyConflict):
        await store.append([StreamAppend(a, inv.AGGREGATE_TYPE, 0, [stock(a)]),
                            StreamAppend(b, inv.AGGREGATE_TYPE, 0, [stock(b)])], ctx())
    assert await store.load_stream(a) == []


async def test_a_stale_stream_next_to_a_fresh_one_writes_neither(store: PostgresEventStore) -> None:
    fresh, moved = uuid.uuid4(), uuid.uuid4()
    await store.append([StreamAppend(moved, inv.AGGREGATE_TYPE, 0, [stock(moved), stock(moved)])], ctx())
    with pytest.raises(ConcurrencyConflict):  # the append expects ``moved`` at 1; it is at 2
        await store.append([StreamAppend(fresh, inv.AGGREGATE_TYPE, 0, [stock(fresh)]),
                            StreamAppend(moved, inv.AGGREGATE_TYPE, 1, [stock(moved, 9)])], ctx())
    assert await store.load_stream(fresh) == [] and len(await store.load_stream(moved)) == 2


async def test_an_append_records_its_streams_deadline_with_it_and_a_stale_one_does_not(
        store: PostgresEventStore) -> None:
    pid, due = uuid.uuid4(), NOW + dt.timedelta(minutes=5)
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)], deadline=Deadline(due))], ctx())
    assert await store.due(inv.AGGREGATE_TYPE, due) == [pid]
    with pytest.raises(ConcurrencyConflict):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)], deadline=Deadline(None))], ctx())
    assert await store.due(inv.AGGREGATE_TYPE, due) == [pid]  # nothing of the stale append was written
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 1, [stock(pid)], deadline=Deadline(None))], ctx())
    assert await store.due(inv.AGGREGATE_TYPE, due + dt.timedelta(days=1)) == []
    await store.schedule(pid, inv.AGGREGATE_TYPE, due, 1)  # an older version's deadline does not come back
    assert await store.due(inv.AGGREGATE_TYPE, due) == []


async def test_the_next_deadline_is_the_earliest_and_a_stream_with_nothing_due_counts_for_none(
        store: PostgresEventStore) -> None:
    kind = f"Sku{uuid.uuid4().hex[:8]}"  # streams of this test only: the database is shared
    idle, held, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await store.next_due(kind) is None
    await store.append([StreamAppend(idle, kind, 0, [stock(idle)], deadline=Deadline(None))], ctx())
    assert await store.next_due(kind) is None  # nothing due (PostgreSQL keeps it as 'infinity')
    due = NOW + dt.timedelta(minutes=5)
    await store.append([StreamAppend(later, kind, 0, [stock(later)], deadline=Deadline(due + dt.timedelta(hours=1)))],
                       ctx())
    await store.append([StreamAppend(held, kind, 0, [stock(held)], deadline=Deadline(due))], ctx())
    assert await store.next_due(kind) == due


async def test_two_concurrent_appends_at_one_version_exactly_one_wins(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)])], ctx())
    results = await asyncio.gather(
        *[store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 1, [stock(pid, n)])], ctx()) for n in (7, 8)],
        return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["ConcurrencyConflict", "list"]
    assert [r.version for r in await store.load_stream(pid)] == [1, 2]


async def test_read_all_returns_each_event_once_in_order(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    start = await _last_position(store)
    for n in range(3):
        await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, n, [stock(pid, n)])], ctx())
    seen = []
    after = start
    while batch := await store.read_all(after, limit=2):
        seen.extend(r for r in batch if r.aggregate_id == pid)
        after = batch[-1].position or 0
    assert [r.version for r in seen] == [1, 2, 3]


async def test_query_filters_by_stream_and_type(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [
        stock(pid), inv.StockReserved(uuid.uuid4(), 1, NOW, "test")])], ctx())
    found = await store.query(aggregate_id=pid, event_type="StockReserved")
    assert [r.event_type for r in found] == ["StockReserved"]


async def test_snapshots_keep_the_newest_version(store: PostgresEventStore) -> None:
    pid = uuid.uuid4()
    await store.save_snapshot(Snapshot(pid, inv.AGGREGATE_TYPE, 5, {"n": 5}))
    await store.save_snapshot(Snapshot(pid, inv.AGGREGATE_TYPE, 3, {"n": 3}))
    snap = await store.load_snapshot(pid)
    assert snap is not None and snap.version == 5 and snap.state == {"n": 5}


async def _last_position(store: PostgresEventStore) -> int:
    after = 0
    while batch := await store.read_all(after, limit=1000):
        after = batch[-1].position or after
    return after


async def test_contains_tells_whether_a_command_left_its_events(store: PostgresEventStore) -> None:
    from store.event_store import event_id

    pid, c = uuid.uuid4(), ctx()
    assert not await store.contains(event_id(c.command_id, pid, 0))
    await store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, 0, [stock(pid)])], c)
    assert await store.contains(event_id(c.command_id, pid, 0))


async def test_streams_load_together_each_from_its_snapshot(event_store: PostgresEventStore) -> None:
    snapshotted, plain, missing, other_kind = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for n in range(5):  # the two streams' appends alternate: their events' positions interleave
        await event_store.append([StreamAppend(snapshotted, inv.AGGREGATE_TYPE, n, [stock(snapshotted, n + 1)])],
                                 ctx())
        await event_store.append([StreamAppend(plain, inv.AGGREGATE_TYPE, n, [stock(plain, 10 + n)])], ctx())
    await event_store.save_snapshot(Snapshot(snapshotted, inv.AGGREGATE_TYPE, 2, {"n": 2}))
    await event_store.save_snapshot(Snapshot(other_kind, "Order", 1, {"order": 1}))
    loaded = await event_store.load_streams([plain, snapshotted, missing, other_kind])
    snap = loaded[snapshotted].snapshot
    assert snap is not None and (snap.version, snap.state, snap.aggregate_type) == (2, {"n": 2}, inv.AGGREGATE_TYPE)
    assert [(r.version, r.event.on_hand) for r in loaded[snapshotted].records] == [(3, 3), (4, 4), (5, 5)]  # type: ignore[attr-defined]
    assert loaded[plain].snapshot is None
    assert loaded[plain].records == await event_store.load_stream(plain)  # ids, metadata, positions and all
    assert loaded[missing].snapshot is None and loaded[missing].records == []
    kept = loaded[other_kind].snapshot
    assert kept is not None and kept.aggregate_type == "Order" and loaded[other_kind].records == []
    assert await event_store.load_streams([]) == {}


async def test_the_streams_due_of_one_shard_are_found_whatever_is_due_before_them_elsewhere(store: object) -> None:
    """As ``actors.routing.shard_of`` routes them (the id's integer modulo the count): a shard down with a
    backlog due earlier must not fill another shard's page."""
    assert isinstance(store, (InMemoryEventStore, PostgresEventStore))
    kind = f"probe-{uuid.uuid4().hex[:8]}"  # streams of a kind of their own: nobody else's deadlines
    ids = [uuid.uuid4() for _ in range(40)]
    for i, pid in enumerate(ids):
        due = NOW + dt.timedelta(seconds=i)
        await store.append([StreamAppend(pid, kind, 0, [stock(pid)], deadline=Deadline(due))], ctx())
    later = NOW + dt.timedelta(minutes=1)
    assert await store.due(kind, later) == ids
    for count in (1, 2, 3, 4, 7):
        for index in range(count):
            assert await store.due(kind, later, shard=(index, count)) == [p for p in ids if shard_of(p, count) == index]
    last = [p for p in ids if shard_of(p, 4) == 3]
    assert await store.due(kind, later, limit=2, shard=(3, 4)) == last[:2]
    for count in (1, 4, 7):  # and the earliest of one shard's deadlines, not of everyone's
        for index in range(count):
            first = next((i for i, p in enumerate(ids) if shard_of(p, count) == index), None)
            assert await store.next_due(kind, (index, count)) == (None if first is None else
                                                                  NOW + dt.timedelta(seconds=first))
