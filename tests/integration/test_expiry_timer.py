"""The inventory shard's expiry timer over the PostgreSQL event store, which keeps "nothing due" as a
deadline of 'infinity': a SKU stocked and holding nothing neither breaks the timer's planning nor the
commands after it, and a reservation made then wakes the timer for its own deadline."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from actors.inventory_shard import EXPIRY_INTERVAL, EXPIRY_RESCAN, InventoryShard
from commerce.settings import Settings
from domain import inventory as inv
from store.event_store import PostgresEventStore


async def test_a_sku_with_nothing_due_leaves_the_timer_and_the_commands_working(
        event_store: PostgresEventStore) -> None:
    shard = InventoryShard(Settings(database_url="unused", redis_url="unused", server_secret="s",
                                    inventory_shards=1), 0)
    shard.use(event_store)
    shard._started = asyncio.get_running_loop().create_future()  # started: the pool is the fixture's
    shard._started.set_result(None)
    pid = uuid.uuid4()
    await shard.set_stock(pid, 10, "1.00", "Mug")  # its deadline row says 'infinity'
    wait = await shard.next_pass()  # other tests' SKUs share the database: any wait within the bounds
    assert EXPIRY_INTERVAL <= wait <= EXPIRY_RESCAN
    due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    reserved = await shard.reserve(pid, uuid.uuid4(), 3, due, "service:a")
    assert reserved.quantity == 3 and shard._expiry_wake.is_set()  # due at once: the timer is woken
    assert await shard.expire_due() >= 1
    assert (await shard.get_stock(pid)).reserved == 0
    soonest = await event_store.next_due(inv.AGGREGATE_TYPE)
    assert soonest is None or soonest.tzinfo is not None  # never the naive year 9999 that 'infinity' reads as
