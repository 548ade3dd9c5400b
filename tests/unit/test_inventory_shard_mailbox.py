"""A SKU command whose caller gave up (cancelled, or its SKU failed to load) never runs later, when the
next command takes the SKU's mailbox. Driven in-process over the in-memory event store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import pytest

from actors.inventory_shard import InventoryShard
from commerce.http import error_response, is_final
from commerce.settings import Settings
from domain import inventory as inv
from domain import order as o
from store.event_store import CommandContext, StreamAppend
from store.memory import InMemoryEventStore

PID = uuid.uuid4()
SOON = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)


async def shard_over_memory() -> InventoryShard:
    settings = Settings(database_url="unused", redis_url="unused", server_secret="s")
    shard = InventoryShard(settings, 0)
    shard.use(InMemoryEventStore())
    shard._started = asyncio.get_running_loop().create_future()  # already started: no PostgreSQL here
    shard._started.set_result(None)
    await shard.set_stock(PID, 10, "1.00", "Mug")
    return shard


async def reserved(shard: InventoryShard) -> int:
    return (await shard.get_stock(PID)).reserved


async def queued_behind_the_mailbox(shard: InventoryShard, call: Callable[[], Awaitable[object]]) -> asyncio.Task[object]:
    task: asyncio.Task[object] = asyncio.ensure_future(call())
    while not shard.batches.queues.get(PID):
        await asyncio.sleep(0)
    return task


async def test_a_cancelled_reserve_does_not_run_with_the_next_command() -> None:
    shard = await shard_over_memory()
    async with shard.host.entity(PID):  # someone holds the SKU's mailbox
        task = await queued_behind_the_mailbox(shard, lambda: shard.reserve(PID, uuid.uuid4(), 4, SOON, "service:a"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (await shard.reserve(PID, uuid.uuid4(), 1, SOON, "service:b"))
    assert await reserved(shard) == 1


async def test_a_reserve_whose_sku_failed_to_load_does_not_run_with_the_next_command() -> None:
    shard = await shard_over_memory()
    shard.host._entities.clear()  # passivated: the next command loads the SKU
    real_load = shard.host._load
    failures = iter([OSError("connection reset")])

    async def flaky(pid: uuid.UUID) -> object:
        for e in failures:
            raise e
        return await real_load(pid)

    shard.host._load = flaky  # type: ignore[assignment]
    with pytest.raises(OSError):
        await shard.reserve(PID, uuid.uuid4(), 4, SOON, "service:a")
    (await shard.reserve(PID, uuid.uuid4(), 1, SOON, "service:b"))
    assert await reserved(shard) == 1


class _StoreThatHangsAfterCommitting(InMemoryEventStore):
    """Appends, then does not answer while ``hang`` is set: an append committed whose answer is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = False
        self.committed = asyncio.Event()

    async def append(self, appends: object, ctx: object) -> object:  # type: ignore[override]
        records = await super().append(appends, ctx)  # type: ignore[arg-type]
        if self.hang:
            self.committed.set()
            await asyncio.Event().wait()  # until cancelled
        return records


async def test_a_command_cancelled_while_its_append_committed_leaves_the_sku_to_be_read_again() -> None:
    shard = await shard_over_memory()
    store = _StoreThatHangsAfterCommitting()
    shard.use(store)
    await shard.set_stock(PID, 10, "1.00", "Mug")
    store.hang = True
    task = asyncio.ensure_future(shard.reserve(PID, uuid.uuid4(), 4, SOON, "service:a"))
    await store.committed.wait()
    task.cancel()  # the caller gives up: the leader still finishes its batch...
    await asyncio.sleep(0)
    task.cancel()  # ...unless it is cancelled again (a withdrawal and a cancel of its Ray task)
    with pytest.raises(asyncio.CancelledError):
        await task
    store.hang = False
    assert await reserved(shard) == 4  # what the store holds, read again, not the state from before
    (await shard.reserve(PID, uuid.uuid4(), 6, SOON, "service:b"))
    assert (await shard.get_stock(PID)).available == 0


async def test_stock_set_under_an_order_s_id_is_refused_for_good_after_one_conflict() -> None:
    shard = await shard_over_memory()
    store = shard.store
    order_id = uuid.uuid4()
    await store.append([StreamAppend(order_id, o.AGGREGATE_TYPE, 0, [o.OrderConfirmed()])],
                       CommandContext.new(order_id, SOON))
    before = (await shard.stats())["conflicts"]
    with pytest.raises(inv.ProductIdTaken) as refused:
        await shard.set_stock(order_id, 5, "1.00", "Mug")
    assert (await shard.stats())["conflicts"] == before + 1  # one conflict, not a retry per attempt
    assert [r.aggregate_type for r in await store.load_stream(order_id)] == [o.AGGREGATE_TYPE]  # nothing added
    answer = error_response(refused.value)
    assert answer.status_code == 409 and b"product-id-conflict" in answer.body
    assert is_final(answer)  # not "retry later": a repeated request is answered the same


async def test_a_resent_reserve_that_a_later_command_of_its_batch_forgets_is_closed_not_an_error() -> None:
    """A reserve sent again for a reservation long closed changes nothing; should a command after it in the same
    batch forget that reservation (closed reservations are forgotten as commands close others), the answer is
    still that it is closed (409 reservation-closed), not a 500."""
    shard = await shard_over_memory()
    old, other = uuid.uuid4(), uuid.uuid4()
    month_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    await shard.reserve(PID, old, 1, month_ago, "service:a")
    await shard.release(PID, old, "service:a")
    await shard.reserve(PID, other, 1, SOON, "service:a")
    async with shard.host.entity(PID) as ent:  # an hour later for the SKU: the next close forgets what is past retention
        assert ent.state is not None and ent.state.forgotten_at is not None
        ent.state = dataclasses.replace(ent.state, forgotten_at=ent.state.forgotten_at - inv.FORGET_EVERY)
        again = await queued_behind_the_mailbox(shard, lambda: shard.reserve(PID, old, 1, month_ago, "service:a"))
        closing = asyncio.ensure_future(shard.release(PID, other, "service:a"))
    with pytest.raises(inv.ReservationNotActive) as refused:
        await again
    assert refused.value.outcome == "closed" and is_final(error_response(refused.value))
    assert error_response(refused.value).status_code == 409
    assert (await closing).reserved == 0
    assert old not in (await shard.host.read(PID)).reservations  # forgotten by the release, in the same batch


async def test_the_sku_in_memory_knows_its_earliest_expiry_after_each_batch() -> None:
    """Each batch and the expiry loop ask for a SKU's earliest expiry; found once, it is carried from state to
    state, so a SKU with many reservations is not looked through on every command."""
    shard = await shard_over_memory()
    for i in range(3):
        await shard.reserve(PID, uuid.uuid4(), 1, SOON + dt.timedelta(seconds=i), "service:a")
        state = await shard.host.read(PID)
        assert state is not None and state.reservations._due_known  # type: ignore[attr-defined]
        assert inv.next_expiry(state) == SOON
