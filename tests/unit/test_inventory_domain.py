"""The SKU aggregate: reservations, sales, expiry; and properties that hold for any command sequence."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

from domain import inventory as inv
from domain.codec import from_primitive, to_primitive
from domain.events import DomainEvent, Metadata, Recorded

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PID = uuid.uuid4()


def fold(state: inv.Sku | None, events: list[DomainEvent]) -> inv.Sku | None:
    version = state.version if state else 0
    for e in events:
        version += 1
        state = inv.evolve(state, Recorded(PID, inv.AGGREGATE_TYPE, version, e,
                                           Metadata(uuid.uuid4(), uuid.uuid4(), PID, None, NOW)))
    return state


def stocked(on_hand: int = 10) -> inv.Sku:
    sku = fold(None, inv.decide_set_stock(None, PID, on_hand, Decimal("2.50"), "Mug"))
    assert sku is not None
    return sku


def reserve(sku: inv.Sku, qty: int, rid: uuid.UUID | None = None, ttl: int = 60) -> inv.Sku:
    events = inv.decide_reserve(sku, PID, rid or uuid.uuid4(), qty, NOW + dt.timedelta(seconds=ttl), "test")
    result = fold(sku, events)
    assert result is not None
    return result


def test_a_reservation_holds_units_and_the_same_id_again_holds_no_more() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(10), 4, rid)
    assert (sku.reserved, sku.available) == (4, 6)
    assert inv.decide_reserve(sku, PID, rid, 4, NOW, "test") == []


def test_reserving_more_than_available_reports_what_is_available() -> None:
    sku = reserve(stocked(5), 3)
    with pytest.raises(inv.InsufficientStock) as err:
        inv.decide_reserve(sku, PID, uuid.uuid4(), 3, NOW, "test")
    assert err.value.available == 2


def test_a_stale_expected_version_is_refused_with_the_current_one() -> None:
    sku = reserve(stocked(5), 1)
    with pytest.raises(inv.VersionMismatch) as err:
        inv.decide_reserve(sku, PID, uuid.uuid4(), 1, NOW, "test", expected_version=1)
    assert err.value.current_version == 2


def test_release_is_idempotent_and_unknown_reservations_are_not_found() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(5), 2, rid)
    released = fold(sku, inv.decide_release(sku, PID, rid, "test"))
    assert released is not None and released.available == 5
    assert inv.decide_release(released, PID, rid, "test") == []
    with pytest.raises(inv.UnknownReservation):
        inv.decide_release(released, PID, uuid.uuid4(), "test")


def test_commit_turns_a_reservation_into_a_sale_and_its_owners_compensation_returns_it() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(5), 2, rid)
    sold = fold(sku, inv.decide_commit(sku, PID, rid, "test"))
    assert sold is not None and (sold.on_hand, sold.reserved) == (3, 0)
    assert inv.decide_commit(sold, PID, rid, "test") == []
    returned = fold(sold, inv.decide_undo(sold, PID, rid, "test"))
    assert returned is not None and (returned.on_hand, returned.reserved) == (5, 0)


def test_a_sale_cannot_be_released_by_anyone() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(5), 2, rid)
    sold = fold(sku, inv.decide_commit(sku, PID, rid, "test"))
    for caller, admin in (("test", False), ("someone", True)):
        with pytest.raises(inv.ReservationAlreadyCommitted):
            inv.decide_release(sold, PID, rid, caller, admin=admin)


def test_a_reservation_id_means_one_owner_and_one_quantity() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(10), 2, rid)
    assert inv.decide_reserve(sku, PID, rid, 2, NOW, "test") == []
    for owner, qty in (("test", 3), ("service:other", 2)):
        with pytest.raises(inv.ReservationIdConflict):
            inv.decide_reserve(sku, PID, rid, qty, NOW, owner)


def test_only_the_owner_or_an_admin_releases_a_direct_reservation() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(10), 2, rid)
    with pytest.raises(inv.UnknownReservation):
        inv.decide_release(sku, PID, rid, "service:other")
    assert inv.decide_release(sku, PID, rid, "admin:ops", admin=True) == [inv.ReservationReleased(rid, 2)]


def test_an_orders_reservation_is_out_of_reach_of_direct_releases_even_an_admins() -> None:
    rid, owner = uuid.uuid4(), inv.order_owner(uuid.uuid4())
    sku = fold(stocked(10), inv.decide_reserve(stocked(10), PID, rid, 5, NOW, owner))
    assert sku is not None
    for caller, admin in (("service:warehouse", False), ("admin:ops", True), (owner, False)):
        with pytest.raises(inv.UnknownReservation):
            inv.decide_release(sku, PID, rid, caller, admin=admin)
    with pytest.raises(inv.ReservationIdConflict):
        inv.decide_reserve(sku, PID, rid, 5, NOW, "service:warehouse")


def test_an_order_neither_commits_nor_gives_back_a_reservation_someone_else_holds_under_its_id() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(10), 1, rid)  # pre-claimed by a direct caller
    owner = inv.order_owner(uuid.uuid4())
    with pytest.raises(inv.UnknownReservation):
        inv.decide_commit(sku, PID, rid, owner)
    assert inv.decide_undo(sku, PID, rid, owner) == []


def test_an_expired_reservation_cannot_be_committed() -> None:
    rid = uuid.uuid4()
    sku = reserve(stocked(5), 2, rid, ttl=1)
    expired = fold(sku, inv.decide_expire(sku, NOW + dt.timedelta(seconds=2)))
    assert expired is not None and expired.available == 5
    with pytest.raises(inv.ReservationNotActive):
        inv.decide_commit(expired, PID, rid, "test")


def test_a_stock_change_made_on_a_stale_read_is_refused_when_it_names_the_version_it_read() -> None:
    read = stocked(10)
    reserved = reserve(read, 4, rid := uuid.uuid4())
    sold = fold(reserved, inv.decide_commit(reserved, PID, rid, "test"))
    assert sold is not None and sold.on_hand == 6
    with pytest.raises(inv.VersionMismatch) as refused:  # a price change that would put the 4 sold units back
        inv.decide_set_stock(sold, PID, 10, Decimal("3.00"), None, expected_version=read.version)
    assert refused.value.current_version == sold.version
    [event] = inv.decide_set_stock(sold, PID, 6, Decimal("3.00"), None, expected_version=sold.version)
    assert isinstance(event, inv.StockSet) and event.on_hand == 6
    assert inv.decide_set_stock(None, PID, 1, Decimal("1.00"), "New", expected_version=0)  # 0: a new product
    with pytest.raises(inv.VersionMismatch):
        inv.decide_set_stock(None, PID, 1, Decimal("1.00"), "New", expected_version=1)


def test_a_reservation_its_registry_saw_held_is_not_made_again_once_the_sku_forgot_it() -> None:
    rid = uuid.uuid4()
    fresh = stocked(10)  # a SKU that does not know the id (never made here, or forgotten since)
    with pytest.raises(inv.ReservationNotActive):
        inv.decide_reserve(fresh, PID, rid, 3, NOW + dt.timedelta(minutes=5), "test", held_before=True)
    [event] = inv.decide_reserve(fresh, PID, rid, 3, NOW + dt.timedelta(minutes=5), "test")
    assert isinstance(event, inv.StockReserved)
    held = reserve(fresh, 3, rid)  # one it still knows is answered as before, whatever the registry says
    assert inv.decide_reserve(held, PID, rid, 3, NOW + dt.timedelta(minutes=5), "test", held_before=True) == []


def test_a_reserve_arriving_after_its_orders_compensation_holds_nothing() -> None:
    """Two instances of an order's shard: one compensates (undoes a reservation not made yet), the other's
    reserve, sent before, lands after. It must not hold the cancelled order's stock until it expires."""
    owner, rid = inv.order_owner(uuid.uuid4()), uuid.uuid4()
    sku = stocked(10)
    assert inv.decide_undo(sku, PID, rid, owner) == []  # a reserve step giving back after a refusal: no tombstone
    [voided] = inv.decide_undo(sku, PID, rid, owner, void=True)  # the compensation closes the id
    sku = fold(sku, [voided])
    assert sku is not None and (sku.on_hand, sku.reserved, sku.available) == (10, 0, 10)
    assert inv.decide_undo(sku, PID, rid, owner, void=True) == []  # undone again: nothing more
    with pytest.raises(inv.ReservationIdConflict):  # the id is closed: the late step fails, holding nothing
        inv.decide_reserve(sku, PID, rid, 3, NOW + dt.timedelta(minutes=5), owner)


def test_a_stock_change_sent_again_after_sales_does_not_undo_them() -> None:
    """Its shard was lost after the change was applied; Ray sends it again once the shard is back, and sales
    were made in between: they stay made."""
    change = uuid.uuid4()
    before = stocked(10)
    sku = fold(before, inv.decide_set_stock(before, PID, 20, Decimal("2.50"), None, command_id=change))
    assert sku is not None and sku.on_hand == 20
    reserved = reserve(sku, 5, rid := uuid.uuid4())
    sold = fold(reserved, inv.decide_commit(reserved, PID, rid, "test"))
    assert sold is not None and sold.on_hand == 15
    assert inv.decide_set_stock(sold, PID, 20, Decimal("2.50"), None, command_id=change) == []
    again = inv.decide_set_stock(sold, PID, 20, Decimal("2.50"), None, command_id=uuid.uuid4())  # a new change
    assert [e.on_hand for e in again if isinstance(e, inv.StockSet)] == [20]
    same = uuid.uuid4()  # a change that changes no value (a catalog sync), sent again after a sale
    synced = fold(sold, inv.decide_set_stock(sold, PID, 15, Decimal("2.50"), None, command_id=same))
    assert synced is not None and same in synced.recent_sets and synced.on_hand == 15
    reserved_again = reserve(synced, 1, rid2 := uuid.uuid4())
    sold_again = fold(reserved_again, inv.decide_commit(reserved_again, PID, rid2, "test"))
    assert sold_again is not None and inv.decide_set_stock(sold_again, PID, 15, Decimal("2.50"), None,
                                                           command_id=same) == []
    damaged = fold(sold, inv.decide_set_stock(sold, PID, 4, Decimal("2.50"), None, command_id=uuid.uuid4()))
    assert damaged is not None and damaged.on_hand == 4  # another change came between the two sendings
    assert inv.decide_set_stock(damaged, PID, 20, Decimal("2.50"), None, command_id=change) == []
    assert inv.decide_set_stock(sold, PID, 20, Decimal("2.50"), None, expected_version=sku.version,
                                command_id=change) == []  # sent again with its version: not a 409 either


def test_stock_cannot_be_set_below_what_is_reserved() -> None:
    sku = reserve(stocked(5), 4)
    with pytest.raises(inv.StockBelowReserved):
        inv.decide_set_stock(sku, PID, 3, Decimal("2.50"), None)


commands = st.lists(st.tuples(st.sampled_from(["reserve", "release", "commit", "expire", "adjust"]),
                              st.integers(0, 7), st.integers(1, 6)), max_size=60)


def decide(sku: inv.Sku | None, command: str, rid: uuid.UUID, qty: int, clock: dt.datetime,
           expires_at: dt.datetime) -> list[DomainEvent]:
    """One command of the property tests, by name, as the owner "p"."""
    if command == "reserve":
        return inv.decide_reserve(sku, PID, rid, qty, expires_at, "p")
    if command == "release":
        return inv.decide_undo(sku, PID, rid, "p")
    if command == "commit":
        return inv.decide_commit(sku, PID, rid, "p")
    if command == "expire":
        return inv.decide_expire(sku, clock)
    assert sku is not None
    return inv.decide_set_stock(sku, PID, sku.on_hand + qty, sku.price, None)


@settings(max_examples=200, deadline=None)
@hypothesis_given(commands)
def test_any_command_sequence_keeps_available_non_negative_and_conserves_stock(
        sequence: list[tuple[str, int, int]]) -> None:
    sku = stocked(10)
    ids = [uuid.uuid4() for _ in range(8)]
    received, sold, returned = 10, 0, 0
    clock = NOW
    for command, k, qty in sequence:
        clock += dt.timedelta(seconds=1)
        try:
            events = decide(sku, command, ids[k], qty, clock, clock + dt.timedelta(seconds=qty))
        except inv.InventoryError:
            continue
        for e in events:
            if isinstance(e, inv.StockSet):
                received += e.on_hand - sku.on_hand
            sold += e.quantity if isinstance(e, inv.ReservationCommitted) else 0
            returned += e.quantity if isinstance(e, inv.SaleReturned) else 0
        new = fold(sku, events)
        assert new is not None
        sku = new
        assert sku.on_hand - sku.reserved >= 0 and sku.reserved >= 0
        assert sku.reserved == sum(r.quantity for r in sku.active())
        assert sku.on_hand == received - sold + returned
        assert {r.reservation_id for r in sku.active()} == {
            rid for rid, r in sku.reservations.items() if r.outcome is inv.Outcome.ACTIVE}
        assert from_snapshot(sku) == sku and from_snapshot(sku).active() == sku.active()


def from_snapshot(sku: inv.Sku) -> inv.Sku:
    data = to_primitive(sku)
    restored: inv.Sku = from_primitive(inv.Sku, json.loads(json.dumps(data)))
    return restored


def test_a_state_is_a_value_the_next_event_leaves_it_as_it_was() -> None:
    held, sold = uuid.uuid4(), uuid.uuid4()
    before = reserve(reserve(stocked(10), 2, held), 3, sold)
    snapshot = (dict(before.reservations), before.active(), before.reserved, before.on_hand)
    after = fold(before, inv.decide_commit(before, PID, sold, "test") + inv.decide_reserve(
        before, PID, uuid.uuid4(), 1, NOW + dt.timedelta(seconds=60), "test"))
    assert after is not None and after.reservations[sold].outcome is inv.Outcome.COMMITTED
    assert (dict(before.reservations), before.active(), before.reserved, before.on_hand) == snapshot
    assert before.reservations[sold].outcome is inv.Outcome.ACTIVE and len(after.active()) == 2


def test_closed_reservations_are_forgotten_after_their_retention_but_sales_stay_returnable() -> None:
    released_id, sold_id, late_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sku = reserve(reserve(stocked(10), 1, released_id), 1, sold_id)
    sku = fold(sku, inv.decide_release(sku, PID, released_id, "test") + inv.decide_commit(sku, PID, sold_id, "test"))
    assert sku is not None
    eight_days_on = Metadata(uuid.uuid4(), uuid.uuid4(), PID, None, NOW + dt.timedelta(days=8))
    later = sku
    for e in (inv.StockReserved(late_id, 1, NOW + dt.timedelta(days=9), "t"), inv.ReservationReleased(late_id, 1)):
        later = inv.evolve(later, Recorded(PID, inv.AGGREGATE_TYPE, later.version + 1, e, eight_days_on))  # type: ignore[arg-type,union-attr]
    assert later is not None
    assert released_id not in later.reservations and {sold_id, late_id} <= set(later.reservations)
    assert (later.on_hand, later.reserved) == (9, 0)


def test_a_closed_reservation_reads_back_as_it_was_with_every_field() -> None:
    odd = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
    rows = [inv.Reservation(uuid.uuid4(), 7, odd, "order:" + str(uuid.uuid4()), 3, inv.Outcome.COMMITTED),
            inv.Reservation(uuid.uuid4(), 10_000, NOW, "customer:ünïcode", 2**40, inv.Outcome.RETURNED),
            inv.Reservation(uuid.uuid4(), 1, NOW, "t", 5, inv.Outcome.EXPIRED),
            inv.Reservation(uuid.uuid4(), 2, odd, "t", 6, inv.Outcome.ACTIVE)]
    built = inv.Reservations()
    for r in rows:
        built = built.put(r)
    assert [built[r.reservation_id] for r in rows] == rows and built.get(uuid.uuid4()) is None
    assert set(built) == {r.reservation_id for r in rows} and len(built) == 4 and rows[0].reservation_id in built
    assert built == inv.Reservations({r.reservation_id: r for r in rows}) == {r.reservation_id: r for r in rows}
    assert dict(built.items()) == {r.reservation_id: r for r in rows} and sorted(built.values(), key=rows.index) == rows
    for change in ({"owner": "u"}, {"quantity": 8}, {"expires_at": NOW}, {"version": 4}, {"outcome": inv.Outcome.RETURNED}):
        other = built.put(dataclasses.replace(rows[0], **change))  # type: ignore[arg-type]
        assert other != built and built != {**dict(built.items()), rows[0].reservation_id: other[rows[0].reservation_id]}
    assert "x" not in built and uuid.uuid4() not in built
    closed = built.put(dataclasses.replace(rows[3], outcome=inv.Outcome.RELEASED, version=9))
    assert closed[rows[3].reservation_id].outcome is inv.Outcome.RELEASED and built.active() == [rows[3]]
    assert closed.active() == [] and len(closed) == 4
    sku = inv.Sku(PID, "Mug", Decimal("1.00"), 10, 9, closed)
    assert from_snapshot(sku) == sku


timed = st.lists(st.tuples(st.sampled_from(["reserve", "release", "commit", "expire"]), st.integers(0, 5),
                           st.integers(1, 3), st.sampled_from([0, 1, 1800, 3 * 86400, 8 * 86400, 91 * 86400])),
                 max_size=40)


@settings(max_examples=100, deadline=None)
@hypothesis_given(timed)
def test_a_replay_from_any_snapshot_gives_the_live_state_as_time_forgets_reservations(
        sequence: list[tuple[str, int, int, int]]) -> None:
    ids = [uuid.uuid4() for _ in range(6)]
    sku: inv.Sku | None = None
    history: list[Recorded] = []
    clock = NOW

    def record(e: DomainEvent) -> None:
        nonlocal sku
        history.append(Recorded(PID, inv.AGGREGATE_TYPE, len(history) + 1, e,
                                Metadata(uuid.uuid4(), uuid.uuid4(), PID, None, clock)))
        sku = inv.evolve(sku, history[-1])

    record(inv.StockSet(PID, 20, Decimal("1.00"), "Mug"))
    for command, k, qty, seconds in sequence:
        clock += dt.timedelta(seconds=seconds)
        try:
            events = decide(sku, command, ids[k], qty, clock, clock + dt.timedelta(hours=qty))
        except inv.InventoryError:
            continue
        for e in events:
            record(e)
    assert sku is not None
    for cut in range(len(history)):  # a snapshot after any event, then the events after it
        state: inv.Sku | None = None
        for r in history[:cut + 1]:
            state = inv.evolve(state, r)
        assert state is not None
        state = from_snapshot(state)
        for r in history[cut + 1:]:
            state = inv.evolve(state, r)
        assert state == sku and state is not None and state.active() == sku.active()
    assert sku.reserved == sum(r.quantity for r in sku.active())


IDS = [uuid.UUID(int=i) for i in range(1, 13)]
OWNERS = ["order:" + str(IDS[0]), "order:" + str(IDS[1]).upper(), "order:{" + str(IDS[2]) + "}", "order:" + IDS[3].hex,
          "order:" + str(IDS[4]) + "\n", "order:", "", "order:x", "customer:ünïcode", "service:bulk"]
edits = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(IDS), st.sampled_from(list(inv.Outcome)), st.sampled_from(OWNERS),
              st.integers(1, 5), st.integers(-3, 3)),
    st.tuples(st.just("forget"), st.sets(st.sampled_from([o for o in inv.Outcome if o is not inv.Outcome.ACTIVE])),
              st.integers(-3, 3)))


def earliest(reservations: dict[uuid.UUID, inv.Reservation]) -> dt.datetime | None:
    return min((r.expires_at for r in reservations.values() if r.outcome is inv.Outcome.ACTIVE), default=None)


@settings(max_examples=300, deadline=None)
@hypothesis_given(st.lists(edits, max_size=60))
def test_reservations_read_back_as_a_plain_map_of_the_same_edits_would_every_version_of_them_too(
        steps: list[tuple]) -> None:  # type: ignore[type-arg]
    """Closed reservations live in a merged dict under a hash trie of the recent ones (MERGE_AT, lowered here
    so that merges, removals of merged ones and forgetting come in short runs): whatever the edits, each
    version reads as a dict given the same edits would, and stays so once later versions are made."""
    model: dict[uuid.UUID, inv.Reservation] = {}
    versions: list[tuple[inv.Reservations, dict[uuid.UUID, inv.Reservation]]] = []
    built = inv.Reservations()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inv, "MERGE_AT", 2)
        for step in steps:
            if step[0] == "put":
                _, rid, outcome, owner, quantity, hours = step
                r = inv.Reservation(rid, quantity, NOW + dt.timedelta(hours=hours), owner, len(versions), outcome)
                built, model = built.put(r), {**model, rid: r}
            else:
                _, dropped, hours = step
                cutoff = NOW + dt.timedelta(hours=hours)
                before, kept = built, {k: r for k, r in model.items() if r.outcome is inv.Outcome.ACTIVE
                                       or r.outcome not in dropped or r.expires_at > cutoff}
                built = built.keep_closed(lambda outcome, expires, d=dropped, c=cutoff: outcome not in d or expires > c)
                assert (built is before) == (kept == model)  # keeping them all, nothing is made
                model = kept
            if step[-1] % 2:  # the earliest expiry asked for now and then: kept along the edits, or found again
                assert built.next_expiry() == earliest(model)
            versions.append((built, model))
    for version, expected in versions:
        assert dict(version.items()) == expected and len(version) == len(expected) and set(version) == set(expected)
        assert [version.get(rid) for rid in IDS] == [expected.get(rid) for rid in IDS]
        assert [rid in version for rid in IDS] == [rid in expected for rid in IDS]
        assert version == inv.Reservations(expected) == expected
        assert version.next_expiry() == earliest(expected)
        assert sorted(version.active(), key=lambda r: r.reservation_id) == sorted(
            (r for r in expected.values() if r.outcome is inv.Outcome.ACTIVE), key=lambda r: r.reservation_id)
