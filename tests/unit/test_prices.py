"""The prices an order shard remembers (actors/prices.py): used for PRICE_TTL, replaced by a newer version
only, never brought back to an older one by a read that was under way while the price changed; read again
in the background while in use, so that orders do not wait for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from actors.prices import Prices
from actors.views import StockView
from domain import inventory as inv

PID = uuid.uuid4()


class Catalog:
    def __init__(self, price: str, version: int) -> None:
        self.price, self.version = Decimal(price), version
        self.reads: list[list[uuid.UUID]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None  # what every read raises (an inventory shard down)
        self.failed = 0  # reads that raised it

    async def read(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, StockView]:
        self.reads.append(product_ids)
        price, version = self.price, self.version  # what the SKU says when the read reaches it
        await self.gate.wait()
        if self.error is not None:
            self.failed += 1
            raise self.error
        for pid in product_ids:
            if pid != PID:
                raise inv.UnknownProduct(pid)
        return {PID: StockView(PID, "Mug", price, 10, 0, 10, version)}


async def read_held(catalog: Catalog, prices: Prices) -> asyncio.Future[dict[uuid.UUID, Decimal]]:
    """A read of PID that has reached the catalog and waits there for its answer (``catalog.gate``)."""
    catalog.gate.clear()
    reading = asyncio.ensure_future(prices.of([PID]))
    await reads_made(catalog, len(catalog.reads) + 1)
    return reading


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def until(holds: Callable[[], bool], what: str) -> None:
    """Until ``holds()``: a read in the background reaches the catalog, or comes back, a turn or two later."""
    for _ in range(100):
        if holds():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def reads_made(catalog: Catalog, n: int) -> None:
    await until(lambda: len(catalog.reads) >= n, f"{n} reads of the catalog (made {len(catalog.reads)})")


def asked_at_once(prices: Prices) -> dict[uuid.UUID, Decimal]:
    """The price of PID if ``of`` answers without waiting for a read (the catalog holds every read)."""
    asking = prices.of([PID]).__await__()
    try:
        asking.send(None)
    except StopIteration as done:
        return dict(done.value)
    asking.close()
    raise AssertionError("the order waited for a read of the catalog")


async def test_a_price_is_read_once_then_remembered_until_it_is_ttl_old() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, clock=clock, refresh=1.0)  # no reading again in the background
    assert await prices.of([PID, PID]) == {PID: Decimal("2.50")}
    catalog.price = Decimal("3.00")  # changed without a word to this shard: it keeps the price it knows...
    clock.now += 0.9
    assert await prices.of([PID]) == {PID: Decimal("2.50")}
    clock.now += 0.2  # ...for no longer than the ttl
    assert await prices.of([PID]) == {PID: Decimal("3.00")}
    assert catalog.reads == [[PID], [PID]]


async def test_a_price_told_replaces_the_one_known_at_once_and_an_older_one_never_does() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=60.0, clock=clock)
    await prices.of([PID])
    prices.learn(PID, Decimal("4.00"), 7)
    assert await prices.of([PID]) == {PID: Decimal("4.00")}
    prices.learn(PID, Decimal("1.00"), 5)  # a message that arrived late
    assert await prices.of([PID]) == {PID: Decimal("4.00")}
    assert len(catalog.reads) == 1


async def test_a_read_under_way_while_the_price_changes_does_not_bring_the_old_price_back() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=60.0, clock=clock)
    reading = await read_held(catalog, prices)
    prices.learn(PID, Decimal("4.00"), 4)  # the change is told before the read's answer comes back
    catalog.gate.set()
    assert await reading == {PID: Decimal("4.00")}
    assert await prices.of([PID]) == {PID: Decimal("4.00")}


async def test_an_unknown_product_raises_and_is_not_remembered() -> None:
    catalog, other = Catalog("2.50", 3), uuid.uuid4()
    prices = Prices(catalog.read, clock=Clock())
    for _ in range(2):
        with pytest.raises(inv.UnknownProduct):
            await prices.of([PID, other])
    assert catalog.reads == [[PID, other], [PID, other]]


async def test_it_remembers_at_most_its_size_the_least_recently_used_going_first() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, size=2, clock=clock)
    a, b = uuid.uuid4(), uuid.uuid4()
    prices.learn(a, Decimal("1"), 1)
    prices.learn(b, Decimal("2"), 1)
    prices.learn(PID, Decimal("3"), 1)
    assert await prices.of([PID]) == {PID: Decimal("3")}
    assert catalog.reads == []
    with pytest.raises(inv.UnknownProduct):  # a was forgotten: it is read, and the catalog knows no such product
        await prices.of([a])


async def test_a_price_read_slowly_is_as_old_as_the_read_not_as_its_answer() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, clock=clock)
    reading = await read_held(catalog, prices)
    clock.now += 0.8  # the answer takes 0.8 s to come back
    catalog.gate.set()
    assert await reading == {PID: Decimal("2.50")}
    clock.now += 0.3  # 1.1 s after the read was sent: read again
    await prices.of([PID])
    assert len(catalog.reads) == 2


async def test_a_price_in_use_is_read_again_in_the_background_and_no_order_waits_for_it() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=0.8, clock=clock)
    await prices.of([PID])
    catalog.price, catalog.version = Decimal("3.00"), 4  # changed without a word to this shard
    catalog.gate.clear()  # every read waits from now on
    clock.now += 0.85
    assert asked_at_once(prices) == {PID: Decimal("2.50")}
    await reads_made(catalog, 2)
    assert asked_at_once(prices) == {PID: Decimal("2.50")}
    assert len(catalog.reads) == 2  # one read at a time
    catalog.gate.set()
    await until(lambda: asked_at_once(prices) == {PID: Decimal("3.00")}, "the read's price in use")


async def test_each_price_read_in_the_background_is_read_again_once_it_ages_in_turn() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=0.8, clock=clock)
    await prices.of([PID])
    for n in (2, 3):
        clock.now += 0.85
        asked_at_once(prices)
        await reads_made(catalog, n)
        await until(lambda: not prices._reads, "the read in the background done")


async def test_a_price_read_in_the_background_is_as_old_as_its_read_not_as_its_answer() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=0.8, clock=clock)
    await prices.of([PID])
    catalog.gate.clear()
    clock.now += 0.85
    asked_at_once(prices)  # sends the read at 100.85
    await reads_made(catalog, 2)
    clock.now += 0.4  # its answer takes 0.4 s
    catalog.gate.set()
    await until(lambda: not prices._reads, "the read in the background done")
    clock.now += 0.65  # 1.05 s after that read was sent, 0.65 s after its answer: read again, in the order's time
    catalog.gate.clear()
    waiting = asyncio.ensure_future(prices.of([PID]))
    await reads_made(catalog, 3)
    catalog.gate.set()
    assert await waiting == {PID: Decimal("2.50")}


async def test_a_price_told_while_a_read_in_the_background_is_under_way_stays() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=0.8, clock=clock)
    await prices.of([PID])
    catalog.price, catalog.version = Decimal("3.00"), 4
    catalog.gate.clear()
    clock.now += 0.85
    asked_at_once(prices)
    await reads_made(catalog, 2)  # the read has what the SKU said at version 4
    prices.learn(PID, Decimal("5.00"), 5)  # then the price changed again, and this shard was told
    catalog.gate.set()
    await until(lambda: not prices._reads, "the read in the background done")
    assert asked_at_once(prices) == {PID: Decimal("5.00")}


async def test_a_slower_read_of_the_same_version_does_not_age_the_price() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=1.0, clock=clock)
    prices.learn(PID, Decimal("2.50"), 3, since=100.0)
    prices.learn(PID, Decimal("2.50"), 3, since=99.5)  # sent earlier, answered later
    clock.now = 100.9
    assert asked_at_once(prices) == {PID: Decimal("2.50")}


async def test_a_failed_read_in_the_background_is_not_made_again_and_the_order_at_the_ttl_sees_the_error() -> None:
    catalog, clock = Catalog("2.50", 3), Clock()
    prices = Prices(catalog.read, ttl=1.0, refresh=0.8, clock=clock)
    await prices.of([PID])
    catalog.error = inv.UnknownProduct(PID)  # the product was removed
    clock.now += 0.85
    assert asked_at_once(prices) == {PID: Decimal("2.50")}
    await until(lambda: catalog.failed == 1, "the read in the background failed")
    clock.now += 0.1
    assert asked_at_once(prices) == {PID: Decimal("2.50")}  # not asked again before the ttl
    assert len(catalog.reads) == 2
    clock.now += 0.1  # 1.05 s after the read that brought the price
    with pytest.raises(inv.UnknownProduct):
        await prices.of([PID])


async def test_a_price_set_while_an_order_shard_cannot_be_told_is_answered_once_old_prices_aged_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The call telling an order shard fails at once (not after its wait): the price that shard remembers,
    read just before the change, is not used for an order placed after the change was answered."""
    from actors import inventory_shard
    from actors.calls import ActorRef, ServiceUnavailable
    from commerce.settings import Settings
    from store.memory import InMemoryEventStore

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise ServiceUnavailable("the order shard is unreachable")

    shard = inventory_shard.InventoryShard(Settings(database_url="unused", redis_url="unused", server_secret="s"), 0)
    shard.use(InMemoryEventStore())
    shard._started = asyncio.get_running_loop().create_future()  # started: no PostgreSQL here
    shard._started.set_result(None)
    await shard.set_stock(PID, 10, "1.00", "Mug")
    shard._order_shards = [ActorRef("order-shard-0", "test")]
    monkeypatch.setattr(inventory_shard, "call", unreachable)
    prices = Prices(shard.catalog)  # the order shard's, with the real clock and PRICE_TTL
    assert await prices.of([PID]) == {PID: Decimal("1.00")}
    await shard.set_stock(PID, 10, "2.00", "Mug")
    assert await prices.of([PID]) == {PID: Decimal("2.00")}
    assert shard.watch.failures["telling order-shard-0 a price"] == 1
