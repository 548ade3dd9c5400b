"""Reservations expire without a projection: each append to a SKU's stream records the SKU's next deadline
with its events, and a shard's expiry pass finds due SKUs there, in memory or not. Driven in-process over
the in-memory event store, which keeps deadlines as the PostgreSQL one does."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from actors.inventory_shard import EXPIRY_INTERVAL, EXPIRY_RESCAN, InventoryShard
from commerce.settings import Settings
from domain import inventory as inv
from store.memory import InMemoryEventStore

NOW = dt.datetime.now(dt.UTC)


async def shard_over(store: InMemoryEventStore) -> InventoryShard:
    shard = InventoryShard(Settings(database_url="unused", redis_url="unused", server_secret="s", inventory_shards=1), 0)
    shard.use(store)
    shard._started = asyncio.get_running_loop().create_future()  # already started: no PostgreSQL here
    shard._started.set_result(None)
    return shard


async def test_a_reservation_records_the_skus_next_deadline_and_its_end_clears_it() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    later, sooner = NOW + dt.timedelta(minutes=10), NOW + dt.timedelta(minutes=5)
    first, second = uuid.uuid4(), uuid.uuid4()
    await shard.reserve(pid, first, 1, later, "service:a")
    await shard.reserve(pid, second, 1, sooner, "service:a")
    assert await store.due(inv.AGGREGATE_TYPE, sooner) == [pid]
    assert await store.due(inv.AGGREGATE_TYPE, sooner - dt.timedelta(seconds=1)) == []
    await shard.release(pid, second, "service:a")
    assert await store.due(inv.AGGREGATE_TYPE, sooner) == []  # the next one is the later reservation
    await shard.release(pid, first, "service:a")
    assert await store.due(inv.AGGREGATE_TYPE, later + dt.timedelta(days=1)) == []


async def test_a_due_reservation_of_a_sku_not_in_memory_expires() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    await shard.reserve(pid, uuid.uuid4(), 4, NOW - dt.timedelta(seconds=1), "service:a")  # due at once
    await shard.host.passivate_idle(0)
    assert not shard.host.is_active(pid)
    assert await shard.expire_due() == 1
    stock = await shard.get_stock(pid)
    assert (stock.reserved, stock.available) == (0, 10)
    assert await store.due(inv.AGGREGATE_TYPE, NOW + dt.timedelta(days=1)) == []


async def test_a_stale_deadline_is_set_right_and_not_acted_on_again() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    await store.schedule(pid, inv.AGGREGATE_TYPE, NOW - dt.timedelta(hours=1), 0)  # as an upgrade fills them in
    assert await shard.expire_due() == 0
    assert await store.due(inv.AGGREGATE_TYPE, NOW + dt.timedelta(days=1)) == []
    assert (await shard.get_stock(pid)).available == 10


async def test_an_older_version_never_overwrites_a_newer_deadline() -> None:
    store, pid = InMemoryEventStore(), uuid.uuid4()
    await store.schedule(pid, inv.AGGREGATE_TYPE, NOW, 5)
    await store.schedule(pid, inv.AGGREGATE_TYPE, None, 4)  # a stale writer's "nothing due"
    assert await store.due(inv.AGGREGATE_TYPE, NOW) == [pid]
    await store.schedule(pid, inv.AGGREGATE_TYPE, None, 6)
    assert await store.due(inv.AGGREGATE_TYPE, NOW) == []


async def test_a_sku_whose_state_in_memory_is_behind_the_store_is_read_again_before_expiry() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    other = await shard_over(store)  # another live instance of the SKU's shard writes a reservation
    await other.reserve(pid, uuid.uuid4(), 3, NOW - dt.timedelta(seconds=1), "service:b")
    assert (await shard.get_stock(pid)).reserved == 0  # this instance has not seen it
    assert await shard.expire_due() == 1
    stream = await store.load_stream(pid)
    assert [type(r.event) for r in stream][-1] is inv.ReservationExpired and len(stream) == 3
    assert (await shard.get_stock(pid)).reserved == 0


async def test_the_next_pass_is_due_at_the_earliest_deadline_within_its_bounds() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    assert await shard.next_pass() == EXPIRY_RESCAN  # nothing held: a rescan now and then, no more
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), "service:a")
    assert await shard.next_pass() == EXPIRY_RESCAN
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5), "service:a")
    assert EXPIRY_INTERVAL < await shard.next_pass() <= 5
    other = uuid.uuid4()  # a deadline another instance stored, of a SKU not in this one's memory
    await store.schedule(other, inv.AGGREGATE_TYPE, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1), 1)
    assert await shard.next_pass() == EXPIRY_INTERVAL


async def test_a_command_that_stores_an_earlier_deadline_wakes_the_expiry_loop_and_a_later_one_does_not() -> None:
    store = InMemoryEventStore()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), "service:a")
    shard._expiry_wake.clear()  # as the loop does before its pass
    assert await shard.next_pass() == EXPIRY_RESCAN
    sleeping = asyncio.ensure_future(shard._sleep_until_due(EXPIRY_RESCAN))
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10), "service:a")
    assert not shard._expiry_wake.is_set() and not sleeping.done()  # later than the planned pass: no wake
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1), "service:a")
    await asyncio.wait_for(sleeping, EXPIRY_RESCAN / 2)  # due at once: the loop goes to its pass now
    assert await shard.expire_due() == 1


class SlowDeadlines(InMemoryEventStore):
    """Its earliest deadline answers only once released: a command can land while a pass plans."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.release = asyncio.Event(), asyncio.Event()

    async def next_due(self, aggregate_type: str, shard: tuple[int, int] | None = None) -> dt.datetime | None:
        found = await super().next_due(aggregate_type, shard)  # read before the command below commits
        self.asked.set()
        await self.release.wait()
        return found


async def test_a_deadline_stored_while_the_pass_plans_is_not_lost() -> None:
    store = SlowDeadlines()
    shard, pid = await shard_over(store), uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")
    await shard.reserve(pid, uuid.uuid4(), 1, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), "service:a")
    await shard.host.passivate_idle(0)  # not in memory: the plan rests on what the store answered
    shard._expiry_wake.clear()
    planning = asyncio.ensure_future(shard.next_pass())
    await store.asked.wait()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    await shard.reserve(pid, uuid.uuid4(), 1, soon, "service:a")  # lands while the pass plans
    await shard.host.passivate_idle(0)  # and leaves memory again: only the wake remembers its deadline
    store.release.set()
    assert await planning <= 3 and shard._next_expiry == soon
