"""Loading aggregates: the latest snapshot, then the events after it, folded with ``evolve``."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from domain import events as ev
from domain import inventory as inv
from domain import order as o
from domain import saga as sg
from domain.codec import from_primitive, to_primitive
from store.event_store import EventStore, Snapshot


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


S = TypeVar("S", bound=Versioned)


@dataclasses.dataclass(frozen=True, slots=True)
class Kind(Generic[S]):
    aggregate_type: str
    state_type: type[S]
    evolve: Callable[[S | None, ev.Recorded], S | None]


ORDER: Kind[o.Order] = Kind(o.AGGREGATE_TYPE, o.Order, o.evolve)
SAGA: Kind[sg.Saga] = Kind(sg.AGGREGATE_TYPE, sg.Saga, sg.evolve)
SKU: Kind[inv.Sku] = Kind(inv.AGGREGATE_TYPE, inv.Sku, inv.evolve)


async def load(store: EventStore, kind: Kind[S], aggregate_id: uuid.UUID, use_snapshot: bool = True) -> tuple[S | None, int]:
    """The aggregate's state and version (0 when it has no events). An id that names an aggregate of
    another kind (a product's id asked for as an order's) is no aggregate of this kind: (None, 0)."""
    state, version, _ = await load_based(store, kind, aggregate_id, use_snapshot)
    return state, version


async def load_based(store: EventStore, kind: Kind[S], aggregate_id: uuid.UUID,
                     use_snapshot: bool = True) -> tuple[S | None, int, int]:
    """As :func:`load`, and the version of the snapshot the state was built from (0: none)."""
    snap = await store.load_snapshot(aggregate_id) if use_snapshot else None
    return state_of(kind, snap, await store.load_stream(aggregate_id, snap.version if snap else 0))


def state_of(kind: Kind[S], snap: Snapshot | None, records: list[ev.Recorded]) -> tuple[S | None, int, int]:
    """A stream's state from its snapshot and the events after it; its version; the snapshot's version. A
    stream of another kind of aggregate is none of this kind's: (None, 0, 0)."""
    state: S | None = None
    version = 0
    if snap is not None:
        if snap.aggregate_type != kind.aggregate_type:
            return None, 0, 0
        state = from_primitive(kind.state_type, snap.state)
        version = snap.version
    base = version
    for record in records:
        if record.aggregate_type != kind.aggregate_type:
            return None, 0, 0
        state = kind.evolve(state, record)
        version = record.version
    return state, version, base


def fold(kind: Kind[S], state: S | None, records: list[ev.Recorded]) -> S | None:
    for record in records:
        if record.aggregate_type == kind.aggregate_type:
            state = kind.evolve(state, record)
    return state


def snapshot_of(kind: Kind[S], aggregate_id: uuid.UUID, state: S) -> Snapshot:
    data: dict[str, Any] = to_primitive(state)
    return Snapshot(aggregate_id, kind.aggregate_type, state.version, data)
