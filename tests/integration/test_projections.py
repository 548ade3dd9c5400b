"""Read models: re-delivery changes nothing, rebuild equals incremental, a failure leaves neither, a
failing event parks its projection by name, and a rebuild beside the running projector loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from domain import events as ev
from domain import inventory as inv
from domain import order as o
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, create_pool
from store.migrations import migrate
from store.projections import (
    IDLE_INTERVAL,
    POLL_INTERVAL,
    REBUILD_LOCK,
    InventoryViews,
    NewEvents,
    OrderViews,
    Projection,
    ProjectionRunner,
    RebuildInProgress,
    all_projections,
    projection_lock,
    rebuild,
    retry_delay,
    tail,
)
from tests.integration.ray_support import eventually
from tests.support import Servers, create_database, drop_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")


async def an_order(store: PostgresEventStore, *more: ev.DomainEvent, conn: asyncpg.Connection | None = None) -> uuid.UUID:
    """A new order's events, in a transaction of their own or in ``conn``'s."""
    order_id = uuid.uuid4()
    line = o.OrderLine(uuid.uuid4(), 2, Decimal("5.00"))
    created = o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("10.00"), uuid.uuid4(), ADDRESS, "tok_visa")
    await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [created, *more])],
                       CommandContext.new(order_id, NOW), conn)
    return order_id


@contextlib.asynccontextmanager
async def a_later_transaction_left_open(store: PostgresEventStore) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    """An order of an earlier transaction at a higher position than an order of a later one: yields (early,
    late) once the earlier has committed, the later still open, and commits it on leaving (rolls it back on
    an error)."""
    async with store.pool.acquire() as first, store.pool.acquire() as second:
        late = second.transaction()
        async with first.transaction():
            await first.fetchval("SELECT pg_current_xact_id()")  # the earlier transaction id
            await late.start()
            await second.fetchval("SELECT pg_current_xact_id()")
            late_order = await an_order(store, conn=second)  # a lower position, in the later transaction
            early_order = await an_order(store, conn=first)  # a higher position, in the earlier one
            assert await first.fetchval("SELECT position FROM events WHERE aggregate_id = $1", early_order) > \
                await second.fetchval("SELECT position FROM events WHERE aggregate_id = $1", late_order)
        try:
            yield early_order, late_order
        except BaseException:
            await late.rollback()
            raise
        await late.commit()


async def view(store: PostgresEventStore, order_id: uuid.UUID) -> dict[str, Any] | None:
    row = await store.pool.fetchrow("SELECT * FROM order_views WHERE order_id = $1", order_id)
    return dict(row) if row else None


async def all_views(store: PostgresEventStore) -> list[dict[str, Any]]:
    return [dict(r) for r in await store.pool.fetch("SELECT * FROM order_views ORDER BY order_id")]


async def test_delivering_the_same_events_again_changes_nothing(event_store: PostgresEventStore) -> None:
    order_id = await an_order(event_store, o.InventoryReserved(()), o.OrderCompensationStarted("x"),
                              o.OrderCancelled("declined"))
    records = await event_store.load_stream(order_id)
    projection = OrderViews()
    async with event_store.pool.acquire() as conn:
        for r in records:
            await projection.apply(conn, r)
        once = await view(event_store, order_id)
        for r in records:
            await projection.apply(conn, r)
    assert await view(event_store, order_id) == once
    assert once is not None and (once["status"], once["reason"], once["version"]) == ("CANCELLED", "declined", 4)


async def test_a_rebuild_from_zero_equals_the_incremental_result(event_store: PostgresEventStore) -> None:
    runner = ProjectionRunner(event_store, OrderViews())
    await an_order(event_store, o.InventoryReserved(()))
    await runner.catch_up()
    await an_order(event_store, o.OrderConfirmed())
    await runner.catch_up()
    incremental = await all_views(event_store)
    await runner.reset()
    assert await all_views(event_store) == []
    await runner.catch_up()
    assert await all_views(event_store) == incremental
    assert await runner.backlog() == (0, 0.0)


async def test_a_failure_between_view_write_and_checkpoint_leaves_neither(event_store: PostgresEventStore) -> None:
    runner = ProjectionRunner(event_store, OrderViews())
    await runner.catch_up()
    before = await runner.checkpoint()

    async def crash() -> None:
        raise RuntimeError("injected failure before the checkpoint")

    failing = ProjectionRunner(event_store, OrderViews(), before_checkpoint=crash)
    order_id = await an_order(event_store)
    with pytest.raises(RuntimeError):
        await failing.run_once()
    assert await view(event_store, order_id) is None
    assert await runner.checkpoint() == before
    await runner.catch_up()
    assert (await view(event_store, order_id) or {}).get("status") == "PENDING"


def test_retries_wait_one_second_doubling_up_to_a_minute() -> None:
    assert [retry_delay(n) for n in range(9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert retry_delay(10_000) == 60.0


class FailsOn:
    """A projection that raises on one event, until the fix is "deployed" (``bad`` set to None)."""

    tables: tuple[str, ...] = ()
    aggregate_types: tuple[str, ...] = (o.AGGREGATE_TYPE,)

    def __init__(self) -> None:
        self.name = f"fails_on_{uuid.uuid4().hex[:8]}"
        self.bad: uuid.UUID | None = None

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        if record.metadata.event_id == self.bad:
            raise ValueError("cannot project this")


class Seen(FailsOn):
    """A projection of its own name that remembers the orders it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[uuid.UUID] = []

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        self.orders.append(record.aggregate_id)


async def test_a_replay_stops_where_the_log_stood_when_it_began_and_the_live_runner_goes_on(
        event_store: PostgresEventStore) -> None:
    projection = Seen()
    before = await an_order(event_store)
    end = str(await event_store.pool.fetchval("SELECT pg_current_xact_id()::text"))  # between the two orders
    after = await an_order(event_store)  # a transaction after the replay's bound, as a busy service writes
    replay = ProjectionRunner(event_store, projection, batch_size=1, yield_to_rebuild=False, before_transaction=end)
    await replay.catch_up()
    assert before in projection.orders and after not in projection.orders
    await ProjectionRunner(event_store, projection).catch_up()  # the live runner, from the replay's checkpoint
    assert projection.orders.count(before) == 1 and projection.orders.count(after) == 1


async def test_a_failing_event_parks_the_projection_naming_it_and_retries_back_off(
        event_store: PostgresEventStore) -> None:
    projection = FailsOn()
    runner = ProjectionRunner(event_store, projection)
    await runner.catch_up()
    before = await runner.checkpoint()
    order_id = await an_order(event_store, o.InventoryReserved(()), o.OrderConfirmed())
    created, bad, confirmed = await event_store.load_stream(order_id)
    projection.bad = bad.metadata.event_id

    assert [await runner.step() for _ in range(3)] == [1.0, 2.0, 4.0]  # parked, not spinning
    assert runner.failed_event == {"event_id": str(bad.metadata.event_id), "position": bad.position,
                                   "event_type": "InventoryReserved"}
    assert runner.error and str(bad.metadata.event_id) in runner.error and "ValueError" in runner.error
    status = await runner.status()
    assert status["failed_event_id"] == str(bad.metadata.event_id)
    assert (status["position"], status["lag_events"]) == (before, 3)  # the batch before it is not half-applied

    projection.bad = None
    assert await runner.step() == POLL_INTERVAL
    status = await runner.status()
    assert (status["error"], status["failed_event_id"], status["position"]) == (None, None, confirmed.position)
    assert runner.failures == 0 and await runner.step() == IDLE_INTERVAL


async def test_a_projection_moves_past_other_streams_events_without_decoding_them(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_projection_skip")
    pool = await create_pool(dsn, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = PostgresEventStore(pool)
        saga_id = uuid.uuid4()
        await store.append([StreamAppend(saga_id, "Saga", 0, [o.OrderConfirmed()])], CommandContext.new(saga_id, NOW))
        await pool.execute("UPDATE events SET event_type = 'NoSuchEvent' WHERE aggregate_id = $1", saga_id)
        order_id = await an_order(store)  # after the undecodable event

        orders = ProjectionRunner(store, OrderViews())  # reads Order streams only
        assert await orders.catch_up() == 2 and orders.error is None
        assert (await view(store, order_id) or {}).get("status") == "PENDING"
        assert (await orders.status())["lag_events"] == 0

        sagas = FailsOn()
        sagas.aggregate_types = ("Saga",)  # a projection that reads the saga's stream decodes its events
        runner = ProjectionRunner(store, sagas)
        assert await runner.step() == 1.0 and runner.failed_event is not None
        assert runner.failed_event["event_type"] == "NoSuchEvent"
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)


async def test_a_live_runner_applies_nothing_while_a_rebuild_holds_its_lock(event_store: PostgresEventStore) -> None:
    runner = ProjectionRunner(event_store, OrderViews())
    await runner.catch_up()
    order_id = await an_order(event_store)
    async with event_store.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", projection_lock("order_views"))
        try:
            assert await runner.step() == IDLE_INTERVAL and runner.paused
            assert await view(event_store, order_id) is None
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", projection_lock("order_views"))
    assert await runner.step() == POLL_INTERVAL and not runner.paused
    assert (await view(event_store, order_id) or {}).get("status") == "PENDING"


async def pending_is(news: NewEvents, names: set[str]) -> None:
    """The question names these projections, once the transactions in progress anywhere on the server when
    the events were written are over (the horizon is the server's, and other tests' actors write there)."""
    await eventually(news.pending, lambda found: found == names, timeout=30, interval=0.01)


async def test_caught_up_runners_are_told_exactly_when_their_next_batch_would_read_an_event(
        event_store: PostgresEventStore) -> None:
    runners = [ProjectionRunner(event_store, p) for p in all_projections()]
    orders, stock = (r.projection.name for r in runners)
    news = NewEvents(event_store.pool, [orders, stock], interval=0.01)
    for r in runners:
        await r.catch_up()
    assert [await r.step() for r in runners] == [IDLE_INTERVAL] * 2 and all(r.caught_up for r in runners)
    assert await news.pending() == set()

    order_id = await an_order(event_store)
    await pending_is(news, {orders, stock})
    await asyncio.wait_for(news.wait(stock), 30)
    await runners[0].catch_up()  # the order views apply it; the inventory views have yet to move past it
    assert await news.pending() == {stock}
    with pytest.raises(TimeoutError):  # only the runner with something to read is woken
        await asyncio.wait_for(news.wait(orders), 0.2)
    await runners[1].catch_up()
    assert await news.pending() == set() and (await view(event_store, order_id) or {}).get("status") == "PENDING"

    # An event committed after a transaction that is still open is not read yet, by the runners nor by the
    # question; once that transaction ends, it is.
    async with event_store.pool.acquire() as open_one:
        async with open_one.transaction():
            await open_one.fetchval("SELECT pg_current_xact_id()")
            later = await an_order(event_store)
            assert await news.pending() == set()
            assert [await r.run_once() for r in runners] == [0, 0]
        await pending_is(news, {orders, stock})
    assert [await r.step() for r in runners] == [POLL_INTERVAL] * 2 and not any(r.caught_up for r in runners)
    assert (await view(event_store, later) or {}).get("status") == "PENDING" and await news.pending() == set()

    # The log is read in (transaction_id, position) order, not by position: an event of an earlier transaction
    # that took its position after a later transaction's event comes before it, and the later one's after it.
    async with a_later_transaction_left_open(event_store) as (early_order, late_order):
        await pending_is(news, {orders, stock})  # the earlier transaction has committed, the later one not
        assert [await r.catch_up() for r in runners] == [1, 1]  # the checkpoint passes the later one's position
        assert await news.pending() == set()
    await pending_is(news, {orders, stock})  # its event sorts after the checkpoint, at a lower position
    assert [await r.catch_up() for r in runners] == [1, 1]
    assert {(await view(event_store, oid) or {}).get("status") for oid in (early_order, late_order)} == {"PENDING"}
    assert await news.pending() == set()

    # A projection with no checkpoint (a new one, or one a rebuild has reset) reads from the start.
    await runners[1].reset()
    assert await news.pending() == {stock} and await runners[1].run_once() > 0


async def test_the_question_follows_the_index_of_the_logs_order(event_store: PostgresEventStore) -> None:
    """Asked every quarter second at rest, over a log that only grows: it must not scan the table."""
    async with event_store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a small table would be scanned whatever the query
        [plan] = await conn.fetchval("EXPLAIN (FORMAT JSON) " + NewEvents.PENDING,  # json, decoded by the pool
                                     [p.name for p in all_projections()])

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    scans = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") == "events"]
    assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan", "Index Scan Backward") for n in scans)
    next_event = [n for n in scans if n.get("Index Name") == "events_transaction_position"]
    assert next_event and "ROW(transaction_id, \"position\") >" in next_event[0]["Index Cond"]
    assert "pg_snapshot_xmin" in next_event[0]["Index Cond"]


async def test_a_second_rebuild_is_refused_while_one_runs(event_store: PostgresEventStore) -> None:
    async with event_store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK)  # "the first rebuild"
        try:
            with pytest.raises(RebuildInProgress, match="another projections rebuild is running"):
                await rebuild(event_store.pool)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)


@dataclasses.dataclass
class Stock:
    """What a SKU's events say, which ``inventory_views`` must show."""

    version: int = 0
    on_hand: int = 0
    reserved: int = 0
    sold: int = 0
    open: list[tuple[uuid.UUID, int]] = dataclasses.field(default_factory=list)

    def next_event(self, product_id: uuid.UUID) -> ev.DomainEvent:
        """Stock the SKU, then reserve, commit and release in turn."""
        self.version += 1
        if self.version == 1:
            self.on_hand = 1000
            return inv.StockSet(product_id, 1000, Decimal("2.50"), "widget")
        if self.open and self.version % 3 == 0:
            rid, q = self.open.pop(0)
            self.on_hand, self.reserved, self.sold = self.on_hand - q, self.reserved - q, self.sold + q
            return inv.ReservationCommitted(rid, q)
        if self.open and self.version % 3 == 1:
            rid, q = self.open.pop(0)
            self.reserved -= q
            return inv.ReservationReleased(rid, q)
        rid, q = uuid.uuid4(), 1 + self.version % 4
        self.reserved += q
        self.open.append((rid, q))
        return inv.StockReserved(rid, q, NOW + dt.timedelta(hours=1), "test")


class Shop:
    """Appends orders and stock movements, remembering what the read models must end up showing."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store
        self.stock: dict[uuid.UUID, Stock] = {}
        self.orders: list[uuid.UUID] = []

    async def order(self) -> None:
        self.orders.append(await an_order(self.store, o.InventoryReserved(())))

    async def move(self, product_id: uuid.UUID) -> int:
        """Append the SKU's next stock event; returns its position."""
        stock = self.stock.setdefault(product_id, Stock())
        expected = stock.version
        event = stock.next_event(product_id)
        [recorded] = await self.store.append([StreamAppend(product_id, inv.AGGREGATE_TYPE, expected, [event])],
                                             CommandContext.new(product_id, NOW))
        return recorded.position or 0

    async def keep_going(self, products: list[uuid.UUID], stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.order()
            await self.move(products[len(self.orders) % len(products)])


class HeldBatch:
    """The live projection; once armed, its next batch stops before its first event until released.

    That is a live batch in flight when a rebuild starts, with a checkpoint read before the reset.
    """

    def __init__(self, inner: Projection) -> None:
        self.inner, self.name, self.tables = inner, inner.name, inner.tables
        self.aggregate_types = inner.aggregate_types
        self.armed = False
        self.holding, self.released = asyncio.Event(), asyncio.Event()

    async def apply(self, conn: asyncpg.Connection, record: ev.Recorded) -> None:
        if self.armed:
            self.armed = False
            self.holding.set()
            await self.released.wait()
        await self.inner.apply(conn, record)


async def live(runner: ProjectionRunner, news: NewEvents, stop: asyncio.Event) -> None:
    """The projector actor's loop (``tail``) until ``stop``, with its delays and its question's cut to 10 ms."""
    task = asyncio.create_task(tail(runner, news, longest=0.01))
    try:
        await stop.wait()
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.wait([task]), 30)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def running(*loops: Any) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop(stop)) for loop in loops]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def release_when_the_rebuild_waits(pool: asyncpg.Pool, held: HeldBatch) -> None:
    """With the lock, the rebuild waits for the held batch to commit: let the batch go once it does."""
    key = projection_lock(held.name)
    while not held.released.is_set():
        if await pool.fetchval(
                """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND classid = $1::bigint::text::oid AND objid = $2::bigint::text::oid AND objsubid = 1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))""",
                (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF):
            held.released.set()
        await asyncio.sleep(0.01)


async def caught_up(runners: list[ProjectionRunner]) -> None:
    for runner in runners:
        while (await runner.backlog())[0]:
            await asyncio.sleep(0.01)


async def read_models(store: PostgresEventStore) -> dict[str, list[dict[str, Any]]]:
    keys = {"order_views": "order_id", "inventory_views": "product_id", "inventory_reservations": "reservation_id"}
    return {table: [dict(r) for r in await store.pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
            for table, key in keys.items()}


async def test_a_rebuild_while_the_projector_runs_loses_no_event(event_store: PostgresEventStore) -> None:
    """``projections rebuild`` beside live runners (the projector's loop) while events are appended: the read models
    end up equal to a replay of every event. A live inventory batch is in flight when the rebuild
    starts; without the lock it would go on once the rebuild has replayed part of the SKU it moves,
    and lift that SKU's version past the events the rebuild has still to replay."""
    shop, sku = Shop(event_store), uuid.uuid4()
    positions = []
    for _ in range(40):  # the SKU's events spread over the log, between orders
        await shop.order()
        positions.append(await shop.move(sku))
    held = HeldBatch(InventoryViews())
    runners = [ProjectionRunner(event_store, OrderViews()), ProjectionRunner(event_store, held)]
    for runner in runners:
        await runner.catch_up()
    replayed_a_little = await event_store.pool.fetchval("SELECT COUNT(*) FROM events WHERE position <= $1",
                                                        positions[1])
    done: dict[str, int] = {}

    def progress(name: str, n: int) -> None:
        done[name] = done.get(name, 0) + n
        if name == held.name and done[name] >= replayed_a_little:
            held.released.set()

    await shop.move(sku)  # the held batch starts with the SKU's next event
    held.armed = True
    news = NewEvents(event_store.pool, [r.projection.name for r in runners], interval=0.01)
    async with running(*(lambda stop, r=r: live(r, news, stop) for r in runners)):
        try:
            async with running(lambda stop: shop.keep_going([uuid.uuid4() for _ in range(3)], stop)):
                await asyncio.wait_for(held.holding.wait(), 10)
                waiter = asyncio.create_task(release_when_the_rebuild_waits(event_store.pool, held))
                await asyncio.wait_for(rebuild(event_store.pool, progress, batch_size=10), 60)
                await waiter
        finally:
            held.released.set()
        await asyncio.wait_for(caught_up(runners), 30)

    assert [r.error for r in runners] == [None, None]
    stock = await event_store.pool.fetch(
        "SELECT product_id, on_hand, reserved, units_sold FROM inventory_views WHERE product_id = ANY($1::uuid[])",
        list(shop.stock))
    assert {r["product_id"]: (r["on_hand"], r["reserved"], r["units_sold"]) for r in stock} == {
        pid: (s.on_hand, s.reserved, s.sold) for pid, s in shop.stock.items()}
    assert await event_store.pool.fetchval("SELECT COUNT(*) FROM order_views WHERE order_id = ANY($1::uuid[])",
                                           shop.orders) == len(shop.orders)
    incremental = await read_models(event_store)
    for projection in all_projections():
        fresh = ProjectionRunner(event_store, projection)
        await fresh.reset()
        await fresh.catch_up()
    assert await read_models(event_store) == incremental


STATUS_EVENTS = (o.InventoryReserved, o.PaymentProcessed, o.ShipmentCreated, o.OrderConfirmed,
                 o.OrderCompensationStarted, o.OrderCancelled)  # the events that change a view's status
LIVES: list[list[ev.DomainEvent]] = [  # orders' events after their creation, as sagas leave them
    [o.InventoryReserved(()), o.PaymentProcessed("pay_1", Decimal("10.00")), o.ShipmentCreated("shp_1"),
     o.OrderConfirmed()],
    [o.InventoryReserved(()), o.OrderCompensationStarted("card declined"), o.InventoryReleased(()),
     o.OrderCancelled("card declined")],
    [o.OrderCompensationStarted("customer asked"), o.InventoryReleased(()), o.OrderCancelled("customer asked")],
    [o.OrderCompensationStarted("operator"), o.InventoryReserved(())],  # a reason, then a status without one
    [o.InventoryReserved(())],
    [],
]


async def interleaved(store: PostgresEventStore, lives: list[list[ev.DomainEvent]]) -> list[uuid.UUID]:
    """One order per life, created first, then the lives' events one round at a time across the orders, each
    append a second later than the one before: positions interleave and every event has a time of its own."""
    orders = [uuid.uuid4() for _ in lives]
    at = NOW
    line = o.OrderLine(uuid.uuid4(), 2, Decimal("5.00"))
    for order_id in orders:
        created = o.OrderCreated(order_id, uuid.uuid4(), (line,), Decimal("10.00"), uuid.uuid4(), ADDRESS, "tok_visa")
        await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [created])], CommandContext.new(order_id, at))
        at += dt.timedelta(seconds=1)
    for step in range(max(map(len, lives))):
        for order_id, life in zip(orders, lives, strict=True):
            if step < len(life):
                await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, step + 1, [life[step]])],
                                   CommandContext.new(order_id, at))
                at += dt.timedelta(seconds=1)
    return orders


async def batches_match_one_at_a_time(conn: asyncpg.Connection, projection: Any, stream: list[ev.Recorded],
                                      split: int, rows: Callable[[], Awaitable[Any]],
                                      forget: Callable[[], Awaitable[None]]) -> Any:
    """The rows that ``stream`` applied one event at a time leaves, after checking that batches of ``split``
    leave the same, also when delivered again from an earlier point over rows part or all of whose events were
    applied."""
    for r in stream:
        await projection.apply(conn, r)
    one_by_one = await rows()
    half = len(stream) // 2
    for applied_first, delivered_from in ((0, 0), (half, half // 2), (len(stream), 0)):
        await forget()
        for r in stream[:applied_first]:
            await projection.apply(conn, r)
        rest = stream[delivered_from:]
        for start in range(0, len(rest), split):
            await projection.apply_many(conn, rest[start:start + split])
        assert await rows() == one_by_one, (applied_first, delivered_from)
    return one_by_one


@pytest.mark.parametrize("split", [2, 3, 7, 500], ids=lambda n: f"batches of {n}")
async def test_a_batch_applied_at_once_leaves_the_rows_that_one_event_at_a_time_leaves(
        event_store: PostgresEventStore, split: int) -> None:
    orders = await interleaved(event_store, LIVES)
    stream = sorted([r for order_id in orders for r in await event_store.load_stream(order_id)],
                    key=lambda r: r.position or 0)
    projection = OrderViews()

    async def rows() -> list[dict[str, Any]]:
        found = await event_store.pool.fetch("SELECT * FROM order_views WHERE order_id = ANY($1) ORDER BY order_id",
                                             orders)
        return [dict(r) for r in found]

    async def forget() -> None:
        await conn.execute("DELETE FROM order_views WHERE order_id = ANY($1)", orders)

    async with event_store.pool.acquire() as conn:
        one_by_one = await batches_match_one_at_a_time(conn, projection, stream, split, rows, forget)
    by_order = {r["order_id"]: r for r in one_by_one}
    assert [by_order[order_id]["status"] for order_id in orders] == [
        "CONFIRMED", "CANCELLED", "CANCELLED", "INVENTORY_RESERVED", "INVENTORY_RESERVED", "PENDING"]
    assert by_order[orders[3]]["reason"] == "operator"  # kept: the later status has no reason of its own
    last_at = {r.aggregate_id: r.at for r in stream if type(r.event) in STATUS_EVENTS}
    for order_id in orders:  # each row's time is that of its own last change of status (none: its creation)
        created = next(r.at for r in stream if r.aggregate_id == order_id)
        assert by_order[order_id]["updated_at"] == last_at.get(order_id, created)


def sku_lives(products: list[uuid.UUID]) -> list[list[ev.DomainEvent]]:
    """SKUs' events as the inventory shards leave them, including a reservation made and given up in one
    batch, a stock change between reservations, sales kept and a sale returned, a SKU with no stock set (the
    view skips its events), and an id reserved again on another SKU while still open (its first row stays);
    each list starts at version 1."""
    r = [uuid.uuid4() for _ in range(9)]
    later = NOW + dt.timedelta(minutes=10)
    return [
        [inv.StockSet(products[0], 10, Decimal("5.00"), "a"), inv.StockReserved(r[0], 2, later, "o"),
         inv.ReservationCommitted(r[0], 2), inv.StockReserved(r[1], 3, later, "o"), inv.SaleReturned(r[0], 2),
         inv.StockReserved(r[5], 1, later, "o")],
        [inv.StockSet(products[1], 4, Decimal("1.00"), "b"), inv.StockReserved(r[2], 1, later, "o"),
         inv.StockSet(products[1], 9, Decimal("2.00"), "b2"), inv.ReservationReleased(r[2], 1),
         inv.StockReserved(r[3], 4, later, "o"), inv.ReservationExpired(r[3], 4), inv.StockReserved(r[6], 2, later, "o"),
         inv.ReservationCommitted(r[6], 2)],
        [inv.StockReserved(r[4], 1, later, "o"), inv.ReservationCommitted(r[4], 1), inv.StockReserved(r[7], 1, later, "o")],
        [inv.StockSet(products[3], 7, Decimal("3.00"), "c"), inv.StockReserved(r[5], 7, later, "o"),
         inv.StockReserved(r[8], 1, later, "o"), inv.ReservationCommitted(r[8], 1)],
    ]


@pytest.mark.parametrize("split", [2, 3, 7, 500], ids=lambda n: f"batches of {n}")
async def test_a_batch_of_stock_events_applied_at_once_leaves_the_rows_that_one_event_at_a_time_leaves(
        event_store: PostgresEventStore, split: int) -> None:
    products, at = [uuid.uuid4() for _ in range(4)], NOW
    lives = sku_lives(products)
    for step in range(max(map(len, lives))):
        for pid, life in zip(products, lives, strict=True):
            if step < len(life):
                await event_store.append([StreamAppend(pid, inv.AGGREGATE_TYPE, step, [life[step]])],
                                         CommandContext.new(pid, at))
                at += dt.timedelta(seconds=1)
    stream = sorted([r for pid in products for r in await event_store.load_stream(pid)], key=lambda r: r.position or 0)
    projection = InventoryViews()

    async def rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        skus = await event_store.pool.fetch(
            "SELECT * FROM inventory_views WHERE product_id = ANY($1) ORDER BY product_id", products)
        held = await event_store.pool.fetch(
            "SELECT * FROM inventory_reservations WHERE product_id = ANY($1) ORDER BY reservation_id", products)
        return [dict(x) for x in skus], [dict(x) for x in held]

    async def forget() -> None:
        await conn.execute("DELETE FROM inventory_views WHERE product_id = ANY($1)", products)
        await conn.execute("DELETE FROM inventory_reservations WHERE product_id = ANY($1)", products)

    async with event_store.pool.acquire() as conn:
        skus, held = await batches_match_one_at_a_time(conn, projection, stream, split, rows, forget)
    by_product = {x["product_id"]: x for x in skus}
    assert [(by_product[p]["name"], by_product[p]["on_hand"], by_product[p]["reserved"], by_product[p]["units_sold"])
            for p in products if p in by_product] == [("a", 10, 4, 0), ("b2", 7, 0, 2), ("c", 6, 7, 1)]
    assert products[2] not in by_product  # no stock set: its events changed nothing
    assert sorted((x["product_id"], x["quantity"]) for x in held) == sorted([(products[0], 3), (products[3], 7)])


async def test_a_stock_batch_raced_on_a_new_sku_by_a_later_batch_is_applied_one_event_at_a_time(
        event_store: PostgresEventStore) -> None:
    """Two projectors' batches on a SKU with no row yet, the first reading fewer events than the second, which
    commits first: the first may not write what its events made of the row (the reservation the second saw
    released would stay open for good). Its runner applies the batch one event at a time instead, in the same
    transaction, and the batch's other SKU is written as well."""
    raced, other, reservation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    later = NOW + dt.timedelta(minutes=10)
    lives: dict[uuid.UUID, list[ev.DomainEvent]] = {
        raced: [inv.StockSet(raced, 5, Decimal("1.00"), "x"), inv.StockReserved(reservation, 2, later, "o"),
                inv.ReservationReleased(reservation, 2)],
        other: [inv.StockSet(other, 3, Decimal("2.00"), "y"), inv.StockReserved(uuid.uuid4(), 1, later, "o")],
    }
    for product, life in lives.items():
        for version, e in enumerate(life):
            await event_store.append([StreamAppend(product, inv.AGGREGATE_TYPE, version, [e])],
                                     CommandContext.new(product, NOW))
    raced_stream, other_stream = await event_store.load_stream(raced), await event_store.load_stream(other)
    projection = InventoryViews()
    runner = ProjectionRunner(event_store, projection)
    async with event_store.pool.acquire() as first, event_store.pool.acquire() as second:
        whole = second.transaction()
        await whole.start()
        await projection.apply_many(second, raced_stream)  # the whole life, committed once the first waits
        pid = first.get_server_pid()
        async with first.transaction():
            batch = raced_stream[:2] + other_stream
            applying = asyncio.create_task(runner._apply_many(first, batch))
            await eventually(lambda: event_store.pool.fetchval(  # waiting on the second's row
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid), lambda waits: waits == "Lock",
                timeout=10)
            await whole.commit()
            assert await applying is False and runner.fallbacks == 1  # raced: rolled back to its savepoint
            for r in batch:  # what the runner does next, in the same transaction
                await projection.apply(first, r)
    rows = await event_store.pool.fetch(
        "SELECT product_id, on_hand, reserved, version FROM inventory_views WHERE product_id = ANY($1::uuid[])",
        [raced, other])
    assert {r["product_id"]: (r["on_hand"], r["reserved"], r["version"]) for r in rows} == {
        raced: (5, 0, 3), other: (3, 1, 2)}
    held = await event_store.pool.fetch("SELECT product_id FROM inventory_reservations WHERE product_id = ANY($1::uuid[])",
                                        [raced, other])
    assert [r["product_id"] for r in held] == [other]


class ManyFails(OrderViews):
    """Order views whose batch write fails (a value PostgreSQL refuses, say), as a statement fails mid-batch."""

    def __init__(self) -> None:
        self.name = f"many_fails_{uuid.uuid4().hex[:8]}"

    async def apply_many(self, conn: asyncpg.Connection, records: list[ev.Recorded]) -> None:
        await conn.execute("UPDATE order_views SET status = 'BROKEN' WHERE order_id = ANY($1)",
                           [r.aggregate_id for r in records])
        await conn.execute("SELECT 1 / 0")


class ManyTooSlow(OrderViews):
    """Order views whose batch write takes longer than the server lets a statement run: PostgreSQL cancels it."""

    def __init__(self) -> None:
        self.name = f"many_too_slow_{uuid.uuid4().hex[:8]}"

    async def apply_many(self, conn: asyncpg.Connection, records: list[ev.Recorded]) -> None:
        await conn.execute("SET LOCAL statement_timeout = 1")  # ms; undone with the batch's savepoint
        await conn.execute("SELECT pg_sleep(1)")


@pytest.mark.parametrize("projection", [ManyFails, ManyTooSlow])
async def test_a_batch_that_fails_at_once_is_applied_again_one_event_at_a_time(
        event_store: PostgresEventStore, projection: type[OrderViews]) -> None:
    orders = [await an_order(event_store, *life) for life in LIVES]
    runner = ProjectionRunner(event_store, projection(), batch_size=200)
    await runner.catch_up()
    views = {v["order_id"]: v for v in await all_views(event_store) if v["order_id"] in orders}
    assert [views[order_id]["status"] for order_id in orders] == [
        "CONFIRMED", "CANCELLED", "CANCELLED", "INVENTORY_RESERVED", "INVENTORY_RESERVED", "PENDING"]
    assert runner.fallbacks > 0  # the batches did fail at once, and were applied one event at a time
    assert runner.error is None and runner.failed_event is None


async def test_a_checkpoints_event_moved_to_quarantine_does_not_make_its_runner_skip_the_events_after_it(
        event_store: PostgresEventStore) -> None:
    """The runner's checkpoint is an earlier transaction's event at a higher position than a later one's that
    it has not read yet; ``commerce repair`` then moves the checkpoint's event aside. The row found below
    the checkpoint's position now belongs to the later transaction: resuming from it would skip its event."""
    from store.repair import _quarantine

    runner = ProjectionRunner(event_store, OrderViews())
    await runner.catch_up()
    async with a_later_transaction_left_open(event_store) as (early_order, late_order):
        assert await runner.catch_up() == 1  # the checkpoint: the earlier transaction's event
    early_id = await event_store.pool.fetchval("SELECT id FROM events WHERE aggregate_id = $1", early_order)
    assert await event_store.pool.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1",
                                           runner.projection.name) == \
        await event_store.pool.fetchval("SELECT position FROM events WHERE id = $1", early_id)
    await _quarantine(event_store.pool, early_id)
    assert await runner.catch_up() == 1
    assert (await view(event_store, late_order) or {}).get("status") == "PENDING"
