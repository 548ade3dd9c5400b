"""Entity actors hosted inside a shard: one mailbox per entity, activation and passivation.

A shard is one Ray actor holding many entities (orders, sagas, SKUs). Commands to one entity run one
at a time under its lock; different entities run concurrently. At most ``max_active`` entities are in
memory: activating one more first passivates the least recently used idle entity, or waits until one
becomes idle. Passivation writes nothing: an entity's snapshots come with its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from actors.watch import Watch, being_cancelled

T = TypeVar("T")
MAX_SNAPSHOT_INTERVAL = 10_000  # events: bounds what a load of a big entity replays


class Entity(Generic[T]):
    __slots__ = ("id", "state", "lock", "last_used", "snapshot_version", "retry_at", "stale", "snapshotting")

    def __init__(self, entity_id: uuid.UUID, state: T, snapshot_version: int) -> None:
        self.id = entity_id
        self.state = state
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.snapshot_version = snapshot_version  # of the snapshot in the store
        self.retry_at = 0  # after a failed snapshot write, the version at which to try again
        self.stale = False  # the store may be ahead of ``state``: read it again before the next command
        self.snapshotting = False  # a snapshot of it is being written


class EntityHost(Generic[T]):
    """The entities of one shard.

    ``load`` builds an entity's state from the store, and says the version of the stored snapshot it
    started from (0: none); ``snapshot`` persists it; ``version`` reads an entity's version (to decide
    whether a snapshot is due); ``size`` says how big its state is; ``exists`` whether the state holds
    anything. A state that holds nothing (an id never stored, which any caller may name) leaves memory as
    soon as nobody works on it: ids that name nothing do not pile up and fill the shard (at the cap, one
    still makes room for itself while it is read, as any id not in memory does). A snapshot is due once the
    events since the stored one reach ``snapshot_every``, or for a big state its size (at most
    MAX_SNAPSHOT_INTERVAL): writing a snapshot costs its size, so a state that grows (a busy SKU's
    reservations) costs O(1) per event in snapshots (one entry's encoding), and a load replays at most as
    many events as the snapshot holds entries, also after a restart. Passivation writes no snapshot: the
    rule above already bounds what the next load replays (an order's whole history, a few dozen events,
    loads in one statement), and a snapshot per eviction cost a commit for every entity that left memory,
    under load one per order.
    """

    def __init__(self, load: Callable[[uuid.UUID], Awaitable[tuple[T, int]]], snapshot: Callable[[T], Awaitable[None]],
                 version: Callable[[T], int], max_active: int, snapshot_every: int,
                 size: Callable[[T], int] = lambda state: 1, exists: Callable[[T], bool] = lambda state: True) -> None:
        self._load = load
        self._exists = exists
        self._snapshot = snapshot
        self._version = version
        self._size = size
        self.max_active = max_active
        self.snapshot_every = snapshot_every
        self._entities: OrderedDict[uuid.UUID, Entity[T]] = OrderedDict()
        self._loading: dict[uuid.UUID, asyncio.Future[Entity[T]]] = {}
        self._changed = asyncio.Condition()
        self.peak_active = 0
        self.activations = 0
        self.waiting = 0
        self.watch = Watch("entities")  # commands waiting for an entity's mailbox (the shard's mailbox depth)

    @property
    def active(self) -> int:
        return len(self._entities) + len(self._loading)

    def is_active(self, entity_id: uuid.UUID) -> bool:
        return entity_id in self._entities

    def states(self) -> list[tuple[uuid.UUID, T]]:
        return [(e.id, e.state) for e in self._entities.values()]

    async def read(self, entity_id: uuid.UUID) -> T:
        """The entity's state now, without waiting for its mailbox: a state is replaced whole, never changed
        in place, so a read sees one command's outcome or the next's (a price to quote, not a decision).
        A stale entity is read again from the store first (under its mailbox); while the store cannot be
        read, the state in memory answers."""
        ent = await self._activate(entity_id)
        if ent.stale:
            fresh: list[T] = []

            async def read_again() -> None:
                async with self.entity(entity_id) as again:
                    fresh.append(again.state)

            if await self.watch.run("reading stale entities again", read_again):
                return fresh[0]
        if entity_id in self._entities:
            self._entities.move_to_end(entity_id)
        ent.last_used = time.monotonic()
        state = ent.state
        await self._forget_if_empty(ent)
        return state

    @contextlib.asynccontextmanager
    async def entity(self, entity_id: uuid.UUID, new: T | None = None) -> AsyncIterator[Entity[T]]:
        """The entity with its mailbox held: the caller is the only one working on it. A stale entity is
        read again from the store first. ``new`` is its state when the caller knows that it was never
        stored (an id it has just made at random): if it is not in memory, it starts from that state
        without a read. Should it exist after all, its first append conflicts, and it is read again."""
        while True:
            ent = await self._activate(entity_id, new)
            self.waiting += 1
            try:
                await ent.lock.acquire()
            finally:
                self.waiting -= 1
            if self._entities.get(entity_id) is ent:
                break
            ent.lock.release()  # passivated while we waited for it: activate afresh
        try:
            self._entities.move_to_end(entity_id)
            if ent.stale:
                ent.state, ent.snapshot_version = await self._load(entity_id)
                ent.stale = False
            yield ent
        finally:
            ent.last_used = time.monotonic()
            ent.lock.release()
            await self._maybe_snapshot(ent)
            await self._forget_if_empty(ent)
            await self._signal()

    async def _activate(self, entity_id: uuid.UUID, new: T | None = None) -> Entity[T]:
        while True:
            ent = self._entities.get(entity_id)
            if ent is not None:
                return ent
            pending = self._loading.get(entity_id)
            if pending is not None:
                try:
                    return await asyncio.shield(pending)
                except asyncio.CancelledError:
                    if pending.cancelled() and not being_cancelled():
                        continue  # the caller that loaded it gave up, not this one: load it again
                    raise
            if self.active < self.max_active:
                break
            await self._make_room()
        if new is not None:
            return self._add(Entity(entity_id, new, 0))
        future: asyncio.Future[Entity[T]] = asyncio.get_running_loop().create_future()
        self._loading[entity_id] = future
        try:
            state, stored = await self._load(entity_id)
            ent = self._add(Entity(entity_id, state, stored))
            future.set_result(ent)
            return ent
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # mark retrieved; waiters get it through their await
            raise
        finally:
            del self._loading[entity_id]
            await self._signal()  # loaded (now evictable when idle) or failed (a slot is free)

    def _add(self, ent: Entity[T]) -> Entity[T]:
        self._entities[ent.id] = ent
        self.activations += 1
        self.peak_active = max(self.peak_active, len(self._entities))
        return ent

    async def _signal(self) -> None:
        """Wake whoever waits for room: an entity became idle, or a slot came free."""
        async with self._changed:
            self._changed.notify_all()

    def mark_stale(self, entity_id: uuid.UUID) -> None:
        """The entity's state may be behind the store (a write whose outcome is unknown): the next command, and
        the next read (:meth:`read`), read it again first. One not in memory is read when it is next used."""
        ent = self._entities.get(entity_id)
        if ent is not None:
            ent.stale = True

    async def _make_room(self) -> None:
        """Passivate idle entities until there is room, or wait until one is idle."""
        while self.active >= self.max_active:
            victim = next((e for e in self._entities.values() if not e.lock.locked()), None)
            if victim is not None:
                self._passivate(victim)
                continue
            async with self._changed:  # checked again under the lock that every signal takes: none is lost
                if self.active >= self.max_active and all(e.lock.locked() for e in self._entities.values()):
                    await self._changed.wait()

    async def _forget_if_empty(self, ent: Entity[T]) -> None:
        """Passivate an entity that holds nothing, unless someone works on it (a command that waits for its
        mailbox finds it gone, and activates it afresh)."""
        if not self._exists(ent.state) and not ent.lock.locked() and self._entities.get(ent.id) is ent:
            self._passivate(ent)
            await self._signal()

    def _passivate(self, ent: Entity[T]) -> None:
        del self._entities[ent.id]  # its events are in the store: the next load replays them

    async def _maybe_snapshot(self, ent: Entity[T]) -> None:
        due = min(max(self.snapshot_every, self._size(ent.state)), MAX_SNAPSHOT_INTERVAL)
        version = self._version(ent.state)
        if version - ent.snapshot_version < due or version < ent.retry_at or ent.stale or ent.snapshotting:
            return  # one write at a time: the commands that end meanwhile would each encode the state again
        state, ent.snapshotting = ent.state, True
        try:
            if await self.watch.run("writing snapshots", lambda: self._snapshot(state)):
                ent.snapshot_version = max(ent.snapshot_version, version)
            else:  # tried again after snapshot_every more events, not on every command
                ent.retry_at = version + self.snapshot_every
        finally:
            ent.snapshotting = False

    async def passivate_idle(self, idle_for: float) -> int:
        """Passivate every entity idle for ``idle_for`` seconds; returns how many."""
        cutoff = time.monotonic() - idle_for
        idle = [e for e in self._entities.values() if not e.lock.locked() and e.last_used < cutoff]
        for ent in idle:  # nothing is awaited in between: each is still in memory, and still idle
            self._passivate(ent)
        if idle:
            await self._signal()
        return len(idle)
