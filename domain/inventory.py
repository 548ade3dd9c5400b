"""The inventory SKU aggregate: stock on hand, price, and the reservations held against it.

``available = on_hand - reserved`` is never negative: every command that could break it is refused
with :class:`InsufficientStock`, and ``evolve`` only applies what ``decide_*`` allowed.

A busy SKU remembers many closed reservations, so its reservations are a persistent map
(:class:`Reservations`): an event adds or changes one entry in O(log n) and shares the rest with the
state before it, which stays valid (states are values, never changed in place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import struct
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal

from rpds import HashTrieMap

from domain.errors import DomainError, NotFound
from domain.events import DomainEvent, Recorded, event

AGGREGATE_TYPE = "InventorySku"


class InventoryError(DomainError):
    """Base of the inventory context's errors."""


class UnknownProduct(NotFound, InventoryError):
    """No stock was ever set for this product."""


class UnknownReservation(NotFound, InventoryError):
    """The reservation id was never reserved against this SKU."""


class InsufficientStock(InventoryError):
    def __init__(self, product_id: uuid.UUID, requested: int, available: int) -> None:
        super().__init__(f"product {product_id}: {requested} requested, {available} available")
        self.product_id = product_id
        self.available = available


class VersionMismatch(InventoryError):
    def __init__(self, product_id: uuid.UUID, expected: int, current: int) -> None:
        super().__init__(f"product {product_id} is at version {current}, not {expected}")
        self.current_version = current


class ReservationNotActive(InventoryError):
    def __init__(self, reservation_id: uuid.UUID, outcome: str) -> None:
        super().__init__(f"reservation {reservation_id} is {outcome}")
        self.outcome = outcome


class ProductIdTaken(InventoryError):
    """The id names an aggregate of another kind (an order, a saga): no product can be made under it."""

    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(f"id {product_id} is taken by something other than a product")


class ReservationIdConflict(InventoryError):
    """The reservation id is taken: by another owner, or for another quantity."""

    def __init__(self, reservation_id: uuid.UUID) -> None:
        super().__init__(f"reservation id {reservation_id} is already in use for another reservation")


class ReservationAlreadyCommitted(InventoryError):
    """A committed reservation is a sale: it is returned by a stock change, never released."""

    def __init__(self, reservation_id: uuid.UUID) -> None:
        super().__init__(f"reservation {reservation_id} is committed (sold); it cannot be released")


class InvalidStock(InventoryError):
    """Stock, quantity or price out of range."""


class StockBelowReserved(InventoryError):
    """on_hand cannot be set below the units currently reserved."""


class Outcome(enum.StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    COMMITTED = "committed"
    RETURNED = "returned"


# Reservations made by an order's saga have an owner in this space; no API caller can hold one, so
# these reservations are out of reach of the API's reserve and release (DESIGN.md, identity and access).
ORDER_OWNER = "order:"


def order_owner(order_id: uuid.UUID) -> str:
    return f"{ORDER_OWNER}{order_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: uuid.UUID
    quantity: int
    expires_at: dt.datetime
    owner: str
    version: int
    outcome: Outcome = Outcome.ACTIVE


# --- events -----------------------------------------------------------------------------------


@event
@dataclasses.dataclass(frozen=True, slots=True)
class StockSet(DomainEvent):
    product_id: uuid.UUID
    on_hand: int
    price: Decimal
    name: str
    command_id: uuid.UUID | None = None  # the change's own id: the same change sent again applies once


@event
@dataclasses.dataclass(frozen=True, slots=True)
class StockReserved(DomainEvent):
    reservation_id: uuid.UUID
    quantity: int
    expires_at: dt.datetime
    owner: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ReservationReleased(DomainEvent):
    reservation_id: uuid.UUID
    quantity: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ReservationExpired(DomainEvent):
    reservation_id: uuid.UUID
    quantity: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ReservationCommitted(DomainEvent):
    """A reservation became a sale: the units leave on_hand."""

    reservation_id: uuid.UUID
    quantity: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SaleReturned(DomainEvent):
    """A committed sale was undone (its order was cancelled): the units come back on hand."""

    reservation_id: uuid.UUID
    quantity: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ReservationVoided(DomainEvent):
    """An order's compensation found no reservation under this id: the id is closed before any is made, so a
    reserve of that order arriving late (sent before the compensation, by another instance of its shard)
    holds nothing. No units move."""

    reservation_id: uuid.UUID
    owner: str


# --- state ------------------------------------------------------------------------------------


_OUTCOMES = tuple(Outcome)
_CLOSED = struct.Struct("<IqqBB")  # quantity, expires_at (µs since the epoch), version, outcome, owner's form
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_TEXT, _ORDER = 0, 1  # the owner's form: its text, or the id of an order (ORDER_OWNER and the id's 16 bytes)
_REMOVED = b""  # among the closed reservations changed since the last merge: one the merged map holds no more
# Closed reservations changed since the last merge: past an eighth of those merged (and MERGE_AT), a new merged
# map is made. At most a ninth of them are in the costlier hash trie, and a merge's O(n) copy is O(1) per put.
MERGE_AT = 256


def _pack(r: Reservation) -> bytes:
    """A closed reservation in a few dozen bytes: a busy SKU keeps its sales for SALE_RETENTION, most of its
    memory; an order's id as the owner (every sale's) takes 16 of them."""
    form, owner = _TEXT, r.owner.encode()
    if r.owner.startswith(ORDER_OWNER):
        with contextlib.suppress(ValueError):
            order_id = uuid.UUID(r.owner[len(ORDER_OWNER):])
            if order_owner(order_id) == r.owner:  # only the id's own spelling reads back the same
                form, owner = _ORDER, order_id.bytes
    return _CLOSED.pack(r.quantity, (r.expires_at - _EPOCH) // _MICROSECOND, r.version,
                        _OUTCOMES.index(r.outcome), form) + owner


def _unpack(key: bytes, packed: bytes) -> Reservation:
    quantity, expires, version, outcome, form = _CLOSED.unpack_from(packed)
    rest = packed[_CLOSED.size:]
    owner = order_owner(uuid.UUID(bytes=rest)) if form == _ORDER else rest.decode()
    return Reservation(uuid.UUID(bytes=key), quantity, _EPOCH + expires * _MICROSECOND, owner, version,
                       _OUTCOMES[outcome])


class Reservations(Mapping[uuid.UUID, Reservation]):
    """A SKU's reservations by id, closed ones too: the active ones as objects, the closed ones packed (they
    are only read again by a retry, a return or a look-up). A value that is never changed in place:
    :meth:`put` makes a new one in O(log n), sharing the rest; a reservation is in exactly one of the two.

    The active ones are a hash trie (``rpds``). The closed ones are a plain dict that is never changed once
    made (``_merged``), under a hash trie of those closed or removed since (``_recent``); past MERGE_AT of
    those (or an eighth of the dict), the next :meth:`put` merges them into a new dict. A hash trie's entry
    costs about as much again as the packed reservation it holds; a dict's, a third of it."""

    __slots__ = ("_active", "_merged", "_recent", "_closed", "_due", "_due_known")

    def __init__(self, entries: Mapping[uuid.UUID, Reservation] | None = None) -> None:
        entries = entries or {}
        self._active: HashTrieMap[uuid.UUID, Reservation] = HashTrieMap(
            {k: r for k, r in entries.items() if r.outcome is Outcome.ACTIVE})
        self._merged: dict[bytes, bytes] = {
            k.bytes: _pack(r) for k, r in entries.items() if r.outcome is not Outcome.ACTIVE}
        self._recent: HashTrieMap[bytes, bytes] = HashTrieMap()
        self._closed = len(self._merged)  # how many closed ones there are
        # The earliest expiry of the active ones (None: there are none), kept as reservations come and go and
        # found again by a look at every active one only when the earliest closes (see next_expiry).
        self._due: dt.datetime | None = None
        self._due_known = False

    @classmethod
    def _of(cls, active: HashTrieMap[uuid.UUID, Reservation], merged: dict[bytes, bytes],
            recent: HashTrieMap[bytes, bytes], closed: int, due: dt.datetime | None = None,
            due_known: bool = False) -> Reservations:
        if len(recent) > max(MERGE_AT, len(merged) // 8):
            merged = dict(merged)
            for key, packed in recent.items():
                if packed:
                    merged[key] = packed
                else:  # marked _REMOVED only while the merged map held it
                    del merged[key]
            recent = HashTrieMap()
        made = cls.__new__(cls)
        made._active, made._merged, made._recent, made._closed = active, merged, recent, closed
        made._due, made._due_known = due, due_known
        return made

    def _due_after(self, before: Reservation | None, after: Reservation | None) -> tuple[dt.datetime | None, bool]:
        """The earliest expiry once the active reservation ``before`` (None: none) is ``after`` (None: closed),
        and whether it is known without a look at every active one."""
        if not self._due_known:
            return None, False
        due = self._due
        if before is not None and before.expires_at == due:  # the earliest leaves (or moves): found again later
            return None, False
        if after is not None and (due is None or after.expires_at < due):
            due = after.expires_at
        return due, True

    def next_expiry(self) -> dt.datetime | None:
        """When the earliest active reservation expires (None: none is active). O(1) but after the earliest one
        closed, when it looks at every active one once."""
        if not self._due_known:
            self._due = min((r.expires_at for r in self._active.values()), default=None)
            self._due_known = True  # a value's cache: the reservations it describes never change
        return self._due

    def _packed(self, key: bytes) -> bytes | None:
        packed = self._recent.get(key)
        if packed is None:
            return self._merged.get(key)
        return packed or None

    def _closed_items(self) -> Iterator[tuple[bytes, bytes]]:
        recent = self._recent
        if not recent:
            yield from self._merged.items()
            return
        for key, packed in recent.items():
            if packed:
                yield key, packed
        for key, packed in self._merged.items():
            if key not in recent:
                yield key, packed

    def __getitem__(self, reservation_id: uuid.UUID) -> Reservation:
        r = self.get(reservation_id)
        if r is None:
            raise KeyError(reservation_id)
        return r

    def get(self, reservation_id: uuid.UUID, default: Reservation | None = None) -> Reservation | None:  # type: ignore[override]
        r = self._active.get(reservation_id)
        if r is not None:
            return r
        packed = self._packed(reservation_id.bytes) if isinstance(reservation_id, uuid.UUID) else None
        return default if packed is None else _unpack(reservation_id.bytes, packed)

    def __contains__(self, reservation_id: object) -> bool:
        return reservation_id in self._active or (
            isinstance(reservation_id, uuid.UUID) and self._packed(reservation_id.bytes) is not None)

    def __iter__(self) -> Iterator[uuid.UUID]:
        yield from self._active
        for key, _ in self._closed_items():
            yield uuid.UUID(bytes=key)

    def items(self) -> Iterator[tuple[uuid.UUID, Reservation]]:  # type: ignore[override]
        """Every reservation with its id, each closed one unpacked once (a snapshot encodes them all)."""
        yield from self._active.items()
        for key, packed in self._closed_items():
            r = _unpack(key, packed)
            yield r.reservation_id, r

    def values(self) -> Iterator[Reservation]:  # type: ignore[override]
        return (r for _, r in self.items())

    def __len__(self) -> int:
        return len(self._active) + self._closed

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reservations):
            return (self._active == other._active and self._closed == other._closed
                    and dict(self._closed_items()) == dict(other._closed_items()))
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Reservations({dict(self.items())!r})"

    def put(self, r: Reservation) -> Reservations:
        rid, key = r.reservation_id, r.reservation_id.bytes
        was_closed = self._packed(key) is not None
        before = self._active.get(rid)
        if r.outcome is Outcome.ACTIVE:
            due = self._due_after(before, r)
            if not was_closed:
                return Reservations._of(self._active.insert(rid, r), self._merged, self._recent, self._closed, *due)
            recent = self._recent.insert(key, _REMOVED) if key in self._merged else self._recent.discard(key)
            return Reservations._of(self._active.insert(rid, r), self._merged, recent, self._closed - 1, *due)
        return Reservations._of(self._active.discard(rid), self._merged, self._recent.insert(key, _pack(r)),
                                self._closed + (not was_closed), *self._due_after(before, None))

    def keep_closed(self, wanted: Callable[[Outcome, dt.datetime], bool]) -> Reservations:
        """The active reservations, and the closed ones whose outcome and expiry ``wanted`` keeps; looks at
        the head of every closed one. Keeping them all, it is this value itself."""
        def kept(packed: bytes) -> bool:
            _, expires, _, outcome, _ = _CLOSED.unpack_from(packed)
            return wanted(_OUTCOMES[outcome], _EPOCH + expires * _MICROSECOND)

        if all(kept(packed) for _, packed in self._closed_items()):
            return self
        merged = {key: packed for key, packed in self._closed_items() if kept(packed)}
        return Reservations._of(self._active, merged, HashTrieMap(), len(merged), self._due, self._due_known)

    def active(self) -> list[Reservation]:
        """The active reservations, oldest first (a hash trie has no order of its own)."""
        return sorted(self._active.values(), key=lambda r: r.version)


@dataclasses.dataclass(frozen=True, slots=True)
class Sku:
    """A product's stock. ``reservations`` keeps closed ones too, so retries stay idempotent."""

    product_id: uuid.UUID
    name: str
    price: Decimal
    on_hand: int
    version: int
    reservations: Mapping[uuid.UUID, Reservation] = dataclasses.field(default_factory=Reservations)
    reserved: int = 0
    forgotten_at: dt.datetime | None = None  # when closed reservations past their retention were last forgotten
    recent_sets: tuple[uuid.UUID, ...] = ()  # the command ids of its last RECENT_SETS stock changes

    def __post_init__(self) -> None:
        if not isinstance(self.reservations, Reservations):  # decoded from a snapshot, or built by hand
            object.__setattr__(self, "reservations", Reservations(self.reservations))

    @property
    def available(self) -> int:
        return max(self.on_hand - self.reserved, 0)

    def active(self) -> list[Reservation]:
        return _reservations(self).active()


MAX_QUANTITY = 10_000
MAX_ON_HAND = 1_000_000_000
RECENT_SETS = 16  # stock changes a SKU knows again when sent again (another change may have come between)


def decide_set_stock(state: Sku | None, product_id: uuid.UUID, on_hand: int, price: Decimal, name: str | None,
                     expected_version: int | None = None, command_id: uuid.UUID | None = None) -> list[DomainEvent]:
    """Set the stock on hand, the price and the name. ``expected_version`` (0: the product is new) makes the
    change conditional: an admin who read the stock before a sale does not put the sold units back. The
    same change sent again (``command_id``: a Ray retry after its shard was lost, with sales in between)
    changes nothing: a stock level is absolute, and setting it again would undo those sales."""
    if command_id is not None and state is not None and command_id in state.recent_sets:
        return []
    if expected_version is not None and expected_version != (state.version if state else 0):
        raise VersionMismatch(product_id, expected_version, state.version if state else 0)
    if not 0 <= on_hand <= MAX_ON_HAND:
        raise InvalidStock(f"on_hand must be between 0 and {MAX_ON_HAND}")
    if price < 0 or price != price.quantize(Decimal("0.01")):
        raise InvalidStock("price must be a non-negative amount with two decimal places")
    reserved = state.reserved if state else 0
    if on_hand < reserved:
        raise StockBelowReserved(f"product {product_id} has {reserved} units reserved; on_hand cannot go below")
    name = name if name is not None else (state.name if state else "")
    if state and (state.on_hand, state.price, state.name) == (on_hand, price, name) and command_id is None:
        return []  # (with an id it is recorded all the same: sent again after a sale, it must be known)
    return [StockSet(product_id, on_hand, price, name, command_id)]


def require(state: Sku | None, product_id: uuid.UUID) -> Sku:
    if state is None:
        raise UnknownProduct(f"unknown product {product_id}")
    return state


def decide_reserve(
    state: Sku | None,
    product_id: uuid.UUID,
    reservation_id: uuid.UUID,
    quantity: int,
    expires_at: dt.datetime,
    owner: str,
    expected_version: int | None = None,
    held_before: bool = False,
) -> list[DomainEvent]:
    """Reserve units. The same id again by the same owner for the same quantity is the same
    reservation (no event); any other reuse of the id is a :class:`ReservationIdConflict`. With
    ``held_before`` (the id's registry knows this SKU held it), an id the SKU no longer remembers is a
    reservation closed and forgotten, not a new one."""
    sku = require(state, product_id)
    existing = sku.reservations.get(reservation_id)
    if existing is not None:
        if (existing.owner, existing.quantity) == (owner, quantity):
            return []
        raise ReservationIdConflict(reservation_id)
    if held_before:
        raise ReservationNotActive(reservation_id, "closed")
    if expected_version is not None and expected_version != sku.version:
        raise VersionMismatch(product_id, expected_version, sku.version)
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidStock(f"quantity must be between 1 and {MAX_QUANTITY}")
    if quantity > sku.available:
        raise InsufficientStock(product_id, quantity, sku.available)
    return [StockReserved(reservation_id, quantity, expires_at, owner)]


def decide_release(state: Sku | None, product_id: uuid.UUID, reservation_id: uuid.UUID, caller: str,
                   *, admin: bool = False) -> list[DomainEvent]:
    """A direct release: the caller's own active reservation (an admin's: any direct one).

    An order's reservation, or another caller's, is unknown to the caller; a sale cannot be released
    (an admin, who may see orders' reservations, is told so). Releasing again is a no-op.
    """
    sku = require(state, product_id)
    r = sku.reservations.get(reservation_id)
    if r is not None and admin and r.outcome is Outcome.COMMITTED:
        raise ReservationAlreadyCommitted(reservation_id)  # an admin sees orders' reservations: a sale stays sold
    if r is None or r.owner.startswith(ORDER_OWNER) or not (admin or r.owner == caller):
        raise UnknownReservation(f"unknown reservation {reservation_id}")
    if r.outcome is Outcome.COMMITTED:
        raise ReservationAlreadyCommitted(reservation_id)
    if r.outcome is Outcome.ACTIVE:
        return [ReservationReleased(reservation_id, r.quantity)]
    return []


def decide_undo(state: Sku | None, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                void: bool = False) -> list[DomainEvent]:
    """An order's compensation: give back what the owner holds, a sale's units included. A reservation
    that someone else holds under this id is left alone; with ``void``, one never made is voided, so that it
    is never made later (:class:`ReservationVoided`). Idempotent."""
    sku = require(state, product_id)
    r = sku.reservations.get(reservation_id)
    if r is None:
        return [ReservationVoided(reservation_id, owner)] if void else []
    if r.owner != owner:
        return []
    if r.outcome is Outcome.ACTIVE:
        return [ReservationReleased(reservation_id, r.quantity)]
    if r.outcome is Outcome.COMMITTED:
        return [SaleReturned(reservation_id, r.quantity)]
    return []


def decide_commit(state: Sku | None, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str) -> list[DomainEvent]:
    """Turn the owner's reservation into a sale. Committing twice is a no-op; a lapsed one is refused."""
    sku = require(state, product_id)
    r = sku.reservations.get(reservation_id)
    if r is None or r.owner != owner:
        raise UnknownReservation(f"unknown reservation {reservation_id}")
    if r.outcome is Outcome.COMMITTED:
        return []
    if r.outcome is not Outcome.ACTIVE:
        raise ReservationNotActive(reservation_id, r.outcome)
    return [ReservationCommitted(reservation_id, r.quantity)]


def decide_expire(state: Sku | None, now: dt.datetime) -> list[DomainEvent]:
    """Expire every active reservation whose time has come."""
    if state is None:
        return []
    return [ReservationExpired(r.reservation_id, r.quantity) for r in state.active() if r.expires_at <= now]


def next_expiry(state: Sku | None) -> dt.datetime | None:
    if state is None:
        return None
    return _reservations(state).next_expiry()


# Closed reservations are remembered this long past their expiry, so that a retried command stays
# idempotent and a sale can still be returned; after that they are forgotten, which keeps a busy
# SKU's state bounded. Forgetting looks at every reservation, so it runs at most once per
# FORGET_EVERY of the events' own time (a reservation is remembered that much longer at most); time
# comes from the events, so a replay forgets the same ones.
CLOSED_RETENTION = dt.timedelta(days=7)
SALE_RETENTION = dt.timedelta(days=90)
FORGET_EVERY = dt.timedelta(hours=1)


def _kept(at: dt.datetime, outcome: Outcome, expires_at: dt.datetime) -> bool:
    """Whether a closed reservation is still remembered at ``at``."""
    return expires_at > at - (SALE_RETENTION if outcome is Outcome.COMMITTED else CLOSED_RETENTION)


def _reservations(state: Sku) -> Reservations:
    return typing.cast(Reservations, state.reservations)  # what every Sku holds (see Sku.__post_init__)


def _put(state: Sku, r: Reservation, version: int, on_hand_delta: int, reserved_delta: int) -> Sku:
    """The state with ``r`` added or changed: O(log n), sharing the rest."""
    return dataclasses.replace(state, reservations=_reservations(state).put(r), version=version,
                               on_hand=state.on_hand + on_hand_delta, reserved=state.reserved + reserved_delta)


def _forget_old(state: Sku, at: dt.datetime) -> Sku:
    if state.forgotten_at is not None and at - state.forgotten_at < FORGET_EVERY:
        return state
    kept = _reservations(state).keep_closed(functools.partial(_kept, at))
    return dataclasses.replace(state, reservations=kept, forgotten_at=at)


def _close(state: Sku, reservation_id: uuid.UUID, outcome: Outcome, version: int, on_hand_delta: int,
           reserved_delta: int, at: dt.datetime) -> Sku:
    r = state.reservations.get(reservation_id)
    if r is None:
        return dataclasses.replace(state, version=version)
    return _put(_forget_old(state, at), dataclasses.replace(r, outcome=outcome), version, on_hand_delta,
                reserved_delta)


def evolve(state: Sku | None, recorded: Recorded) -> Sku | None:
    e, v, at = recorded.event, recorded.version, recorded.at
    if isinstance(e, StockSet):
        recent = (*(state.recent_sets if state else ()), *([e.command_id] if e.command_id else []))[-RECENT_SETS:]
        if state is None:
            return Sku(e.product_id, e.name, e.price, e.on_hand, v, recent_sets=recent)
        return dataclasses.replace(state, name=e.name, price=e.price, on_hand=e.on_hand, version=v,
                                   recent_sets=recent)
    if state is None:
        return None
    if isinstance(e, StockReserved):
        return _put(state, Reservation(e.reservation_id, e.quantity, e.expires_at, e.owner, v), v, 0, e.quantity)
    if isinstance(e, ReservationReleased):
        return _close(state, e.reservation_id, Outcome.RELEASED, v, 0, -e.quantity, at)
    if isinstance(e, ReservationExpired):
        return _close(state, e.reservation_id, Outcome.EXPIRED, v, 0, -e.quantity, at)
    if isinstance(e, ReservationCommitted):
        return _close(state, e.reservation_id, Outcome.COMMITTED, v, -e.quantity, -e.quantity, at)
    if isinstance(e, SaleReturned):
        return _close(state, e.reservation_id, Outcome.RETURNED, v, e.quantity, 0, at)
    if isinstance(e, ReservationVoided):  # closed as it is made, for none of the stock: forgotten like the others
        return _put(_forget_old(state, at), Reservation(e.reservation_id, 0, at, e.owner, v, Outcome.RELEASED), v, 0, 0)
    return dataclasses.replace(state, version=v)
