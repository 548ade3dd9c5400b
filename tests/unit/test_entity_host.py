"""The entities of a shard (actors/entities.py): one load per activation, one command at a time per
entity, a cap on entities in memory with passivation (which writes nothing: snapshots come with events)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from actors.entities import MAX_SNAPSHOT_INTERVAL, EntityHost


@dataclasses.dataclass
class Counter:
    entity_id: uuid.UUID
    version: int = 0


class Store:
    def __init__(self, fail_loads: int = 0) -> None:
        self.loads: list[uuid.UUID] = []
        self.snapshots: list[tuple[uuid.UUID, int]] = []
        self.fail_loads = fail_loads
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self, entity_id: uuid.UUID) -> tuple[Counter, int]:
        self.loads.append(entity_id)
        await self.gate.wait()
        if self.fail_loads:
            self.fail_loads -= 1
            raise ConnectionError("the store is down")
        return Counter(entity_id), 0

    async def snapshot(self, state: Counter) -> None:
        self.snapshots.append((state.entity_id, state.version))


def host(store: Store, max_active: int = 10, snapshot_every: int = 100) -> EntityHost[Counter]:
    return EntityHost(store.load, store.snapshot, lambda c: c.version, max_active, snapshot_every)


async def test_callers_that_arrive_together_share_one_load() -> None:
    store = Store()
    store.gate.clear()
    h, a = host(store), uuid.uuid4()

    async def touch() -> None:
        async with h.entity(a) as ent:
            ent.state.version += 1

    callers = [asyncio.create_task(touch()) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*callers)
    assert store.loads == [a] and h.active == 1
    async with h.entity(a) as ent:
        assert ent.state.version == 5


async def test_commands_to_one_entity_run_one_at_a_time() -> None:
    h, a = host(Store()), uuid.uuid4()
    trace: list[str] = []

    async def command(name: str) -> None:
        async with h.entity(a):
            trace.append(f"{name} in")
            await asyncio.sleep(0)  # another command could slip in here if the mailbox let it
            trace.append(f"{name} out")

    await asyncio.gather(command("x"), command("y"), command("z"))
    assert all(trace[i].split()[0] == trace[i + 1].split()[0] for i in range(0, len(trace), 2))


async def test_the_cap_passivates_the_least_recently_used_idle_entity_writing_nothing() -> None:
    store = Store()
    h = host(store, max_active=2)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with h.entity(a) as ent:
        ent.state.version = 3  # moved on since it was loaded
    async with h.entity(b):
        pass
    async with h.entity(c):
        pass
    assert not h.is_active(a) and h.is_active(b) and h.is_active(c) and h.active == 2
    assert store.snapshots == []  # a moved on, and left without one: its events are in the store
    async with h.entity(a) as ent:  # loaded again (from its events, in a real shard)
        assert ent.state.version == 0
    assert store.loads == [a, b, c, a] and store.snapshots == []


async def test_when_every_entity_is_busy_an_activation_waits_for_one_to_be_free() -> None:
    h = host(Store(), max_active=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    release = asyncio.Event()

    async def busy() -> None:
        async with h.entity(a):
            await release.wait()

    holder = asyncio.create_task(busy())
    await asyncio.sleep(0)

    async def other() -> bool:
        async with h.entity(b):
            return h.is_active(a)

    waiting = asyncio.create_task(other())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done() and h.is_active(a)
    release.set()
    assert await waiting is False  # a was passivated to make room once it was free
    await holder


async def test_a_failed_load_reaches_every_caller_and_the_next_call_loads_again() -> None:
    store = Store(fail_loads=1)
    store.gate.clear()
    h, a = host(store), uuid.uuid4()

    async def touch() -> None:
        async with h.entity(a):
            pass

    callers = [asyncio.create_task(touch()) for _ in range(3)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and store.loads == [a]
    await touch()
    assert store.loads == [a, a] and h.is_active(a)


def held_loads() -> tuple[Store, EntityHost[Counter], uuid.UUID]:
    """A host whose store holds every load until its gate opens, and an entity's id."""
    store = Store()
    store.gate.clear()
    return store, host(store), uuid.uuid4()


async def increment(h: EntityHost[Counter], a: uuid.UUID) -> int:
    async with h.entity(a) as ent:
        ent.state.version += 1
        return ent.state.version


async def test_callers_sharing_a_load_whose_caller_gave_up_load_it_again_and_are_not_cancelled() -> None:
    store, h, a = held_loads()
    loader = asyncio.create_task(increment(h, a))
    await asyncio.sleep(0)  # the first caller's load is under way
    others = [asyncio.create_task(increment(h, a)), asyncio.create_task(h.read(a))]
    await asyncio.sleep(0)  # the others wait for that load
    assert store.loads == [a]
    loader.cancel()  # its caller gives up (a withdrawn call, a client gone)
    await asyncio.sleep(0)
    store.gate.set()
    touched, read = await asyncio.gather(*others)
    assert loader.cancelled()
    assert touched == 1 and read.entity_id == a  # loaded again, for them; the cancelled caller changed nothing
    assert store.loads == [a, a] and h.is_active(a)


async def test_a_caller_given_up_with_the_one_whose_load_it_shared_stays_given_up() -> None:
    store, h, a = held_loads()
    loader = asyncio.create_task(increment(h, a))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(increment(h, a))
    await asyncio.sleep(0)
    loader.cancel()  # both withdrawn at once, as the calls of one batch are
    waiter.cancel()
    store.gate.set()  # a load started after this would end
    results = await asyncio.gather(loader, waiter, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert store.loads == [a] and not h.is_active(a)  # no second load for a caller nobody waits for


async def test_idle_entities_are_passivated_and_a_snapshot_is_written_every_n_versions() -> None:
    store = Store()
    h = host(store, snapshot_every=2)
    a, b = uuid.uuid4(), uuid.uuid4()
    for _ in range(3):
        async with h.entity(a) as ent:
            ent.state.version += 1
    assert store.snapshots == [(a, 2)]  # every second version
    async with h.entity(b):
        pass
    assert await h.passivate_idle(0.0) == 2 and h.active == 0
    assert store.snapshots == [(a, 2)]  # none on the way out: the next one comes with a's events


@pytest.mark.parametrize("cap", [1, 3])
async def test_the_cap_is_never_exceeded(cap: int) -> None:
    h = host(Store(), max_active=cap)

    async def touch(entity_id: uuid.UUID) -> None:
        async with h.entity(entity_id):
            assert h.active <= cap
            await asyncio.sleep(0)

    await asyncio.gather(*(touch(uuid.uuid4()) for _ in range(20)))
    assert h.active <= cap and h.peak_active <= cap


async def test_a_read_does_not_wait_for_the_mailbox_and_sees_the_last_state_put_in_place() -> None:
    store = Store()
    h, a = host(store), uuid.uuid4()
    async with h.entity(a) as ent:  # a command holds the mailbox while the read comes
        ent.state = Counter(a, 1)
        seen = await asyncio.wait_for(h.read(a), timeout=1)
        assert seen.version == 1
    assert (await h.read(uuid.uuid4())).version == 0 and len(store.loads) == 2  # an inactive entity loads


async def test_callers_waiting_for_room_behind_loading_reads_get_in_when_the_loads_end() -> None:
    store = Store()
    store.gate.clear()  # the store answers only when told
    h = host(store, max_active=2)
    loading = [asyncio.create_task(h.read(uuid.uuid4())) for _ in range(2)]  # two cold reads fill the cap

    async def command() -> int:
        async with h.entity(uuid.uuid4()) as ent:
            return ent.state.version

    waiting = [asyncio.create_task(h.read(uuid.uuid4())), asyncio.create_task(command())]
    await asyncio.sleep(0)
    store.gate.set()  # the loads end: their entities are idle, so room can be made
    await asyncio.wait_for(asyncio.gather(*loading, *waiting), timeout=5)
    assert h.active <= 2


async def test_a_big_state_is_snapshotted_once_the_events_since_are_as_many_as_its_size() -> None:
    store = Store()
    h = EntityHost(store.load, store.snapshot, lambda c: c.version, 10, 2, size=lambda c: 40)
    a = uuid.uuid4()
    for _ in range(90):
        async with h.entity(a) as ent:
            ent.state.version += 1
    assert store.snapshots == [(a, 40), (a, 80)]  # every 40 events (its size), not every 2


class Restarted(Store):
    """A store holding 30 events of each entity and no snapshot yet, whose snapshot writes fail at first."""

    def __init__(self, failing_snapshots: int = 0) -> None:
        super().__init__()
        self.failing_snapshots = failing_snapshots

    async def load(self, entity_id: uuid.UUID) -> tuple[Counter, int]:
        self.loads.append(entity_id)
        return Counter(entity_id, 30), 0

    async def snapshot(self, state: Counter) -> None:
        if self.failing_snapshots:
            self.failing_snapshots -= 1
            raise ConnectionError("the store is down")
        await super().snapshot(state)


async def test_a_reloaded_entity_counts_the_events_since_its_stored_snapshot_not_since_its_load() -> None:
    store = Restarted()
    h = EntityHost(store.load, store.snapshot, lambda c: c.version, 10, 20)
    a = uuid.uuid4()
    async with h.entity(a) as ent:
        ent.state.version += 1
    assert store.snapshots == [(a, 31)]  # 31 events since no snapshot: due at once, not 20 events later


async def test_a_stale_entity_is_read_again_by_the_next_command_and_reads_answer_from_memory_only_when_the_store_cannot() -> None:
    store = Store()
    h = host(store)
    a = uuid.uuid4()
    async with h.entity(a) as ent:
        ent.state = Counter(a, 7)  # what memory holds while a write's outcome is unknown
        h.mark_stale(a)
    store.fail_loads = 1
    assert (await h.read(a)).version == 7  # the store cannot be read: memory answers
    async with h.entity(a) as ent:
        assert ent.state.version == 0  # what the store holds, not what memory guessed
    assert store.loads == [a, a, a]
    async with h.entity(a) as ent:
        ent.state = Counter(a, 7)
        h.mark_stale(a)
    assert (await h.read(a)).version == 0 and store.loads == [a, a, a, a]  # the store answers: read again


async def test_a_stale_entity_whose_reload_fails_stays_stale_and_its_mailbox_is_free() -> None:
    store = Store()
    h = host(store)
    a = uuid.uuid4()
    async with h.entity(a):
        h.mark_stale(a)
    store.fail_loads = 1
    with pytest.raises(ConnectionError):
        async with h.entity(a):
            pass
    async with h.entity(a) as ent:  # not left locked; read again now that the store answers
        assert ent.state.version == 0
    assert store.loads == [a, a, a]


async def test_a_failed_snapshot_write_is_tried_again_after_snapshot_every_more_events() -> None:
    store = Restarted(failing_snapshots=1)
    h = EntityHost(store.load, store.snapshot, lambda c: c.version, 10, 20)
    a = uuid.uuid4()
    async with h.entity(a) as ent:
        ent.state.version += 1  # 31 events since no snapshot: due, and the write fails
    for _ in range(19):
        async with h.entity(a) as ent:
            ent.state.version += 1
    assert store.snapshots == [] and h.watch.failures["writing snapshots"] == 1  # not tried on each command
    async with h.entity(a) as ent:
        ent.state.version += 1
    assert store.snapshots == [(a, 51)]


async def test_an_entity_passivated_writes_no_snapshot_changed_or_not() -> None:
    store = Restarted()
    h = EntityHost(store.load, store.snapshot, lambda c: c.version, 10, 100)
    a, b = uuid.uuid4(), uuid.uuid4()
    await h.read(a)  # 30 events since no snapshot, nothing changed in memory
    async with h.entity(b) as ent:
        ent.state.version += 1
    assert await h.passivate_idle(0.0) == 2 and store.snapshots == []


async def test_a_snapshot_comes_at_the_latest_after_max_snapshot_interval_events_whatever_the_setting() -> None:
    store = Store()
    h, a = host(store, snapshot_every=MAX_SNAPSHOT_INTERVAL * 2), uuid.uuid4()  # passivation writes none now
    for _ in range(MAX_SNAPSHOT_INTERVAL):
        async with h.entity(a) as ent:
            ent.state.version += 1
    assert store.snapshots == [(a, MAX_SNAPSHOT_INTERVAL)]


async def test_a_new_entity_starts_from_the_state_given_without_a_read() -> None:
    store = Store(fail_loads=1)  # a read would fail: a new entity does not need one
    h, a = host(store), uuid.uuid4()
    async with h.entity(a, Counter(a, version=0)) as ent:
        ent.state = Counter(a, version=1)
    async with h.entity(a, Counter(a, version=0)) as ent:  # in memory now: the state given is not used again
        assert ent.state.version == 1
    assert store.loads == []
    b = uuid.uuid4()
    with pytest.raises(ConnectionError):  # an entity that may exist is read
        async with h.entity(b):
            pass
    assert store.loads == [b]


async def test_commands_that_end_while_a_snapshot_is_written_start_no_other_snapshot_of_it() -> None:
    store = Store()
    written = asyncio.Event()
    started: list[int] = []

    async def slow_snapshot(state: Counter) -> None:  # a big state's write: commands go on meanwhile
        started.append(state.version)
        await written.wait()
        store.snapshots.append((state.entity_id, state.version))

    h, a = EntityHost(store.load, slow_snapshot, lambda c: c.version, 10, 3), uuid.uuid4()

    async def command() -> None:
        async with h.entity(a) as ent:
            ent.state = Counter(a, ent.state.version + 1)  # a new value: the one being written stays as it was

    await command()
    await command()
    first = asyncio.create_task(command())  # the third event makes a snapshot due; its caller waits for the write
    later = [asyncio.create_task(command()) for _ in range(5)]
    await asyncio.wait(later, timeout=1)  # each ends while the write is under way
    assert all(t.done() for t in later) and not first.done()
    assert started == [3]  # one write of an entity at a time: no second encoding of a state as big
    written.set()
    await first
    assert store.snapshots == [(a, 3)]
    await command()  # due again: 9 events, 6 since the one stored
    assert started == [3, 9] and store.snapshots == [(a, 3), (a, 9)]


async def test_ids_that_name_nothing_take_no_room_from_the_entities_in_use() -> None:
    """A caller naming ids never stored (reads, or commands refused for want of the entity) leaves nothing in
    memory: they do not pile up and push the stored entities out."""
    stored: dict[uuid.UUID, int] = {}
    loads: list[uuid.UUID] = []

    async def load(entity_id: uuid.UUID) -> tuple[Counter, int]:
        loads.append(entity_id)
        return Counter(entity_id, stored.get(entity_id, 0)), 0

    async def noop(state: Counter) -> None:
        return None

    h = EntityHost(load, noop, lambda c: c.version, 2, 100, exists=lambda c: c.version > 0)

    async def make(entity_id: uuid.UUID) -> None:
        async with h.entity(entity_id) as ent:
            ent.state = Counter(entity_id, 1)
            stored[entity_id] = 1  # as a command's append would

    made = uuid.uuid4()
    await make(made)
    for _ in range(10):
        nobody = uuid.uuid4()
        assert (await h.read(nobody)).version == 0
        assert not h.is_active(nobody)
        async with h.entity(nobody) as ent:  # a command that finds nothing and changes nothing
            assert ent.state.version == 0
        assert not h.is_active(nobody)
    assert h.is_active(made) and h.active == 1
    assert loads.count(made) == 1  # never passivated, so never read again

    gone = uuid.uuid4()
    async with h.entity(gone) as ent:
        await h.read(gone)  # read while a command holds it: left in memory for the command, which stores it
        assert h.is_active(gone)
        ent.state = Counter(gone, 1)
    assert h.is_active(gone) and loads.count(gone) == 1

