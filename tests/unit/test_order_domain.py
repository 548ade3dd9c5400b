"""The order aggregate, in given-events / when-command / then-events form."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from domain import order as o
from domain.errors import TransitionForbidden
from domain.events import Metadata, Recorded

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ORDER_ID, CUSTOMER, SAGA, PRODUCT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")
LINE = o.OrderLine(PRODUCT, 2, Decimal("29.99"))


def given(*events: o.DomainEvent) -> o.Order | None:
    state = None
    for version, e in enumerate(events, start=1):
        meta = Metadata(uuid.uuid4(), uuid.uuid4(), ORDER_ID, None, NOW + dt.timedelta(seconds=version))
        state = o.evolve(state, Recorded(ORDER_ID, o.AGGREGATE_TYPE, version, e, meta))
    return state


def created(lines: tuple[o.OrderLine, ...] = (LINE,)) -> o.OrderCreated:
    return o.OrderCreated(ORDER_ID, CUSTOMER, lines, o.order_total(lines), SAGA, ADDRESS, "tok_visa")


def create(state: o.Order | None, lines: tuple[o.OrderLine, ...] = (LINE,)) -> list[o.DomainEvent]:
    return o.decide_create(state, order_id=ORDER_ID, customer_id=CUSTOMER, lines=lines, saga_id=SAGA,
                           shipping_address=ADDRESS, payment_token="tok_visa")


def test_creating_an_order_totals_its_lines_at_catalog_prices() -> None:
    lines = (LINE, o.OrderLine(uuid.uuid4(), 3, Decimal("0.10")))
    [event] = create(None, lines)
    assert isinstance(event, o.OrderCreated) and event.total_amount == Decimal("60.28")


def test_lines_of_one_product_are_merged() -> None:
    [event] = create(None, (o.OrderLine(PRODUCT, 1, Decimal("1.00")), o.OrderLine(PRODUCT, 2, Decimal("1.00"))))
    assert isinstance(event, o.OrderCreated) and event.lines == (o.OrderLine(PRODUCT, 3, Decimal("1.00")),)


def test_creating_the_same_order_again_changes_nothing() -> None:
    assert create(given(created())) == []


def test_creating_the_same_order_again_after_its_prices_rose_past_the_limit_changes_nothing() -> None:
    """A checkout retried after a price rise is the order placed before, not a new one over the limits (which
    would reopen its cart for a second order)."""
    dearer = o.OrderLine(PRODUCT, 2, o.MAX_ORDER_TOTAL)
    with pytest.raises(o.OrderTooLarge):
        create(None, (dearer,))
    assert create(given(created()), (dearer,)) == []


def test_an_order_of_more_products_than_the_limit_is_refused() -> None:
    lines = tuple(o.OrderLine(uuid.uuid4(), 1, Decimal("1.00")) for _ in range(o.MAX_LINES + 1))
    with pytest.raises(o.OrderTooLarge):
        create(None, lines)
    [event] = create(None, lines[:-1])
    assert isinstance(event, o.OrderCreated) and len(event.lines) == o.MAX_LINES


def test_creating_another_order_under_an_existing_id_is_refused() -> None:
    with pytest.raises(o.OrderAlreadyExists):
        create(given(created()), (o.OrderLine(uuid.uuid4(), 1, Decimal("1.00")),))


def test_an_order_without_lines_is_refused() -> None:
    with pytest.raises(o.EmptyOrder):
        create(None, ())


def test_the_happy_path_moves_through_every_status() -> None:
    state = given(created(), o.InventoryReserved(()), o.PaymentProcessed("pay_1", Decimal("59.98")),
                  o.ShipmentCreated("shp_1"), o.OrderConfirmed())
    assert state is not None and state.status is o.OrderStatus.CONFIRMED and state.version == 5
    assert (state.payment_id, state.shipment_id) == ("pay_1", "shp_1")


def test_a_confirmed_order_can_be_cancelled_and_a_cancelled_one_has_nothing_left_to_cancel() -> None:
    confirmed = given(created(), o.OrderConfirmed())
    assert confirmed is not None
    o.ensure_cancellable(confirmed, NOW)
    assert o.decide_start_compensation(confirmed, "changed my mind") == [o.OrderCompensationStarted("changed my mind")]
    cancelled = given(created(), o.OrderCompensationStarted("x"), o.OrderCancelled("x"))
    assert cancelled is not None
    o.ensure_cancellable(cancelled, NOW)  # cancelled already: nothing is left to do, and nothing is refused
    assert o.decide_start_compensation(cancelled, "again") == []


def test_a_confirmed_order_is_undone_within_the_cancel_window_and_not_after() -> None:
    confirmed = given(created(), o.OrderConfirmed())
    assert confirmed is not None
    last_day = confirmed.updated_at + o.CANCEL_WINDOW
    o.ensure_cancellable(confirmed, last_day)
    o.ensure_undoable(confirmed, last_day)
    for refused in (o.ensure_cancellable, o.ensure_undoable):
        with pytest.raises(TransitionForbidden, match="confirmed on 2026-01-01"):
            refused(confirmed, last_day + dt.timedelta(seconds=1))
    # An order not confirmed yet has no window: its sale, if any, was made moments ago.
    shipped = given(created(), o.InventoryReserved(()), o.PaymentProcessed("pay_1", Decimal("59.98")),
                    o.ShipmentCreated("shp_1"))
    assert shipped is not None
    o.ensure_cancellable(shipped, last_day + dt.timedelta(days=365))


def test_the_cancel_window_ends_well_before_a_sku_forgets_the_sale() -> None:
    from domain.inventory import SALE_RETENTION

    assert o.CANCEL_WINDOW * 2 <= SALE_RETENTION


def test_a_compensating_order_refuses_a_customer_cancel() -> None:
    compensating = given(created(), o.OrderCompensationStarted("payment failed"))
    assert compensating is not None
    with pytest.raises(TransitionForbidden):
        o.ensure_cancellable(compensating, NOW)
    assert o.decide_start_compensation(compensating, "again") == []


def test_evolve_ignores_events_before_creation() -> None:
    assert given(o.OrderConfirmed()) is None
