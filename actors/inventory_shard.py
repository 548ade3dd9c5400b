"""The inventory shard: a Ray actor hosting many SKU entities.

Each SKU command runs under the SKU's mailbox: decide on the current state, append with the state's
version as the expected one. A ConcurrencyConflict (another instance of the entity wrote first)
reloads the SKU and decides again. A timer expires reservations whose time has come: it sleeps until
the earliest deadline (at most EXPIRY_RESCAN), and a command that stores an earlier one wakes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

from actors import metrics as m
from actors.base import Shard
from actors.calls import ActorRef, call
from actors.client import BATCHED_COMMANDS
from actors.entities import EntityHost
from actors.prices import PRICE_TTL
from actors.routing import order_shard_name
from actors.sku_batches import Decide, Outcome, SkuBatches
from actors.views import ReservationView, StockView
from commerce.settings import ResolvedSettings, Settings
from domain import inventory as inv
from store import repository as repo
from store.event_store import SERVICE, CommandContext, EventStore, PostgresEventStore, create_pool

EXPIRY_INTERVAL = 1.0  # seconds at least between two expiry passes (after a failure: the next one)
EXPIRY_RESCAN = 10.0  # seconds at most: by then a pass finds the deadlines another instance stored
DUE_PER_PASS = 10_000  # due SKUs read per pass, of every shard (each keeps its own)
ANNOUNCE_WAIT = 2.0  # seconds a price change waits for each order shard to hear of it (actors/prices.py)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InventoryShard(Shard):
    KIND = "sku"
    KIND_NAME = "inventory"
    BATCHED = frozenset({*BATCHED_COMMANDS, "catalog"})  # the sagas' SKU commands and catalog reads

    def __init__(self, settings: ResolvedSettings, index: int) -> None:
        self.metrics = m.InventoryMetrics()
        self._next_expiry: dt.datetime | None = None  # when the expiry loop wakes next, at the latest
        self._expiry_wake = asyncio.Event()
        self._order_shards: list[ActorRef] = []  # told of each price set (none until started: tests in-process)
        super().__init__(settings, index)

    async def _start(self) -> None:
        pool = await create_pool(self.settings.database_url, self.settings.database_pool_size, SERVICE)
        self.use(PostgresEventStore(pool))
        self._order_shards = [ActorRef(order_shard_name(i), self.settings.namespace)
                              for i in range(self.settings.order_shards)]
        self._tasks = [asyncio.create_task(self._expiry_loop()), asyncio.create_task(self._passivation_loop())]

    def use(self, store: EventStore) -> None:
        """Host the SKUs over ``store``."""
        self.store = store
        self.host = repo_host(store, self.settings)
        self.batches = SkuBatches(store, self.host, self.metrics.conflicts.inc, self.metrics.count, self._deadline_stored)

    async def ping(self) -> dict[str, Any]:
        await self.start()
        return {"shard": self.index, "active": self.host.active, "failing": self.failing()}

    async def _decide(self, product_id: uuid.UUID, decide: Decide, ctx: CommandContext) -> Outcome:
        await self.start()
        return await self.batches.run(product_id, decide, ctx)

    async def set_stock(self, product_id: uuid.UUID, on_hand: int, price: str, name: str | None,
                        expected_version: int | None = None, command_id: uuid.UUID | None = None) -> StockView:
        # The change's id is in its event's data, not its event ids: those follow from the batch it lands in.
        ctx = CommandContext.new(product_id, now())
        sku, _ = await self._decide(product_id, lambda s: inv.decide_set_stock(
            s, product_id, on_hand, Decimal(price), name, expected_version, command_id), ctx)
        view = StockView.of(inv.require(sku, product_id))
        await self._announce(view)
        return view

    async def _announce(self, view: StockView) -> None:
        """Tell every order shard the SKU's price and version before the change is answered, so that orders
        placed after it have the new price. An order shard that was not told reads the catalog again once the
        price it remembers is PRICE_TTL old: when one was not (it took ANNOUNCE_WAIT, or its call failed at
        once), the answer waits until PRICE_TTL after the change, when any price read before it has aged out."""
        async def tell(ref: ActorRef) -> None:
            await call(ref, "price_changed", view.product_id, view.price, view.version, timeout=ANNOUNCE_WAIT,
                       attempts=1)

        changed = time.monotonic()
        told = await asyncio.gather(*[self.watch.run(f"telling {ref.name} a price", lambda ref=ref: tell(ref))
                                      for ref in self._order_shards])
        if not all(told):
            await asyncio.sleep(PRICE_TTL - (time.monotonic() - changed))

    async def get_stock(self, product_id: uuid.UUID) -> StockView:
        await self.start()
        return StockView.of(inv.require(await self.host.read(product_id), product_id))

    async def catalog(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, StockView]:
        """The products' stock and prices, read without queueing behind a hot SKU's commands."""
        await self.start()
        return {pid: StockView.of(inv.require(await self.host.read(pid), pid)) for pid in product_ids}

    async def reserve(self, product_id: uuid.UUID, reservation_id: uuid.UUID, quantity: int, expires_at: dt.datetime,
                      owner: str, expected_version: int | None = None,
                      correlation_id: uuid.UUID | None = None, held_before: bool = False) -> ReservationView:
        ctx = CommandContext.new(correlation_id or reservation_id, now())
        sku, _ = await self._decide(product_id, lambda s: inv.decide_reserve(
            s, product_id, reservation_id, quantity, expires_at, owner, expected_version, held_before), ctx)
        sku = inv.require(sku, product_id)
        if reservation_id not in sku.reservations:  # closed long ago, and forgotten by a later command of its batch
            raise inv.ReservationNotActive(reservation_id, "closed")
        return ReservationView.of(sku, reservation_id)

    async def release(self, product_id: uuid.UUID, reservation_id: uuid.UUID, caller: str, admin: bool = False,
                      correlation_id: uuid.UUID | None = None) -> StockView:
        """A direct release by an API caller (see ``inv.decide_release``)."""
        return await self._change(product_id, reservation_id, correlation_id,
                                  lambda s: inv.decide_release(s, product_id, reservation_id, caller, admin=admin))

    async def undo(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                   correlation_id: uuid.UUID | None = None, void: bool = False) -> StockView:
        """An order's compensation gives back what it holds (see ``inv.decide_undo``)."""
        return await self._change(product_id, reservation_id, correlation_id,
                                  lambda s: inv.decide_undo(s, product_id, reservation_id, owner, void))

    async def commit(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                     correlation_id: uuid.UUID | None = None) -> StockView:
        return await self._change(product_id, reservation_id, correlation_id,
                                  lambda s: inv.decide_commit(s, product_id, reservation_id, owner))

    async def _change(self, product_id: uuid.UUID, reservation_id: uuid.UUID, correlation_id: uuid.UUID | None,
                      decide: Decide) -> StockView:
        sku, _ = await self._decide(product_id, decide, CommandContext.new(correlation_id or reservation_id, now()))
        return StockView.of(inv.require(sku, product_id))

    async def expire_due(self) -> int:
        """Expire the due reservations of this shard's SKUs, in memory or not (the store keeps each SKU's
        next deadline with its events); returns how many SKUs changed. Every due SKU is tried; a failure
        is raised after the pass, so that the watch counts it."""
        await self.start()
        at = now()
        in_memory = {pid for pid, sku in self.host.states() if (t := inv.next_expiry(sku)) and t <= at}
        stored = set(await self.store.due(inv.AGGREGATE_TYPE, at, DUE_PER_PASS,
                                          (self.index, self.settings.inventory_shards))) - in_memory
        changed, failures = 0, []
        for pid in [*in_memory, *stored]:
            try:
                # Due in the store but not in memory: the state in memory may be behind (an answer lost).
                changed += await self._expire(pid, at, fresh=pid in stored and self.host.is_active(pid))
            except Exception as e:  # raised below, once every SKU was tried
                failures.append(e)
        if failures:
            raise failures[0]
        return changed

    async def _expire(self, product_id: uuid.UUID, at: dt.datetime, fresh: bool) -> bool:
        sku, records = await self.batches.run(product_id, lambda s: inv.decide_expire(s, at),
                                              CommandContext.new(product_id, at), fresh)
        if not records:  # nothing was due after all (a deadline filled in from before): set it right
            await self.store.schedule(product_id, inv.AGGREGATE_TYPE, inv.next_expiry(sku), sku.version if sku else 0)
        return bool(records)

    async def next_pass(self) -> float:
        """Seconds until the next expiry pass is due: this shard's earliest deadline, in memory or stored,
        within EXPIRY_INTERVAL and EXPIRY_RESCAN."""
        stored = await self.store.next_due(inv.AGGREGATE_TYPE, (self.index, self.settings.inventory_shards))
        found = [t for _, sku in self.host.states() if (t := inv.next_expiry(sku))]
        if self._expiry_wake.is_set() and self._next_expiry is not None:  # a command's, stored during this pass
            found.append(self._next_expiry)
        self._next_expiry = min((*found, *([stored] if stored else [])), default=None)
        return self._until_planned()

    def _until_planned(self) -> float:
        wait = (self._next_expiry - now()).total_seconds() if self._next_expiry else EXPIRY_RESCAN
        return min(max(wait, EXPIRY_INTERVAL), EXPIRY_RESCAN)

    def _deadline_stored(self, due: dt.datetime | None) -> None:
        """A commit stored a SKU's next deadline: the loop wakes for it if it comes before the planned pass."""
        if due is not None and (self._next_expiry is None or due < self._next_expiry):
            self._next_expiry = due
            self._expiry_wake.set()

    async def _expiry_loop(self) -> None:
        while True:
            # Cleared before the pass reads the deadlines: a command that lands during the pass wakes the wait.
            self._expiry_wake.clear()
            planned = await self.watch.run("expiring reservations", self._expiry_pass)
            await self._sleep_until_due(self._until_planned() if planned else EXPIRY_INTERVAL)

    async def _expiry_pass(self) -> None:
        await self.expire_due()
        await self.next_pass()

    async def _sleep_until_due(self, seconds: float) -> None:
        """``seconds``, or less: until the earliest deadline that a command stored meanwhile."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._expiry_wake.wait(), left)
            except TimeoutError:
                return
            self._expiry_wake.clear()
            if self._next_expiry is not None:
                until = min(until, loop.time() + (self._next_expiry - now()).total_seconds())

    async def stats(self) -> dict[str, Any]:
        return {**await super().stats(), "conflicts": self.metrics.conflicts._value.get()}

    async def workload(self) -> dict[str, int]:
        return {"sagas_running": 0, "conflicts": int(self.metrics.conflicts._value.get())}


def repo_host(store: EventStore, settings: Settings) -> EntityHost[inv.Sku | None]:
    async def load(pid: uuid.UUID) -> tuple[inv.Sku | None, int]:
        state, _, stored = await repo.load_based(store, repo.SKU, pid)
        return state, stored

    async def snapshot(state: inv.Sku | None) -> None:
        if state is not None:
            await store.save_snapshot(repo.snapshot_of(repo.SKU, state.product_id, state))

    return EntityHost(load, snapshot, lambda s: s.version if s else 0, settings.max_active_entities,
                      settings.snapshot_every, lambda s: len(s.reservations) if s else 0, lambda s: s is not None)
