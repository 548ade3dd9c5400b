"""The Order aggregate: what was bought, at which catalog price, and how far fulfilment has come.

``decide_*`` functions validate a command against the state and return the events it causes;
``evolve`` folds one recorded event into the state and never raises.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal

from domain.errors import DomainError, TransitionForbidden
from domain.events import DomainEvent, Recorded, event

AGGREGATE_TYPE = "Order"
CENT = Decimal("0.01")


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    INVENTORY_RESERVED = "INVENTORY_RESERVED"
    PAYMENT_PROCESSED = "PAYMENT_PROCESSED"
    SHIPMENT_CREATED = "SHIPMENT_CREATED"
    CONFIRMED = "CONFIRMED"
    COMPENSATING = "COMPENSATING"
    CANCELLED = "CANCELLED"


class OrderError(DomainError):
    """Base of the order context's errors."""


class OrderAlreadyExists(OrderError):
    """An order with this id exists with other contents."""


class EmptyOrder(OrderError):
    """An order needs at least one line."""


class OrderTooLarge(OrderError):
    """A product's merged quantity or the order's total is beyond what the service accepts."""


MAX_LINE_QUANTITY = 10_000
MAX_LINES = 100  # products in one order (and in one cart, which becomes one)
# order_views.total_amount is DECIMAL(12, 2): no order may total more than that column holds.
MAX_ORDER_TOTAL = Decimal("9999999999.99")


@dataclasses.dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: uuid.UUID
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT)


@dataclasses.dataclass(frozen=True, slots=True)
class ShippingAddress:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReservedLine:
    product_id: uuid.UUID
    reservation_id: uuid.UUID
    quantity: int


# --- events -----------------------------------------------------------------------------------


@event
@dataclasses.dataclass(frozen=True, slots=True)
class OrderCreated(DomainEvent):
    order_id: uuid.UUID
    customer_id: uuid.UUID
    lines: tuple[OrderLine, ...]
    total_amount: Decimal
    saga_id: uuid.UUID
    shipping_address: ShippingAddress
    payment_token: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class InventoryReserved(DomainEvent):
    reservations: tuple[ReservedLine, ...]


@event
@dataclasses.dataclass(frozen=True, slots=True)
class PaymentProcessed(DomainEvent):
    payment_id: str
    amount: Decimal


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ShipmentCreated(DomainEvent):
    shipment_id: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class OrderConfirmed(DomainEvent):
    pass


@event
@dataclasses.dataclass(frozen=True, slots=True)
class OrderCompensationStarted(DomainEvent):
    """Fulfilment failed or was cancelled; the completed steps are being undone."""

    reason: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class ShipmentCancelled(DomainEvent):
    shipment_id: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class PaymentRefunded(DomainEvent):
    payment_id: str
    amount: Decimal


@event
@dataclasses.dataclass(frozen=True, slots=True)
class InventoryReleased(DomainEvent):
    reservations: tuple[ReservedLine, ...]


@event
@dataclasses.dataclass(frozen=True, slots=True)
class OrderCancelled(DomainEvent):
    reason: str


# --- state ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Order:
    """An order as its events describe it."""

    order_id: uuid.UUID
    customer_id: uuid.UUID
    lines: tuple[OrderLine, ...]
    total_amount: Decimal
    saga_id: uuid.UUID
    shipping_address: ShippingAddress
    payment_token: str
    status: OrderStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    reservations: tuple[ReservedLine, ...] = ()
    payment_id: str | None = None
    shipment_id: str | None = None
    reason: str | None = None


def order_total(lines: tuple[OrderLine, ...]) -> Decimal:
    return sum((line.line_total for line in lines), Decimal("0.00")).quantize(CENT)


def _merge_lines(lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
    merged: dict[uuid.UUID, OrderLine] = {}
    for line in lines:
        if line.product_id in merged:
            prev = merged[line.product_id]
            line = OrderLine(line.product_id, prev.quantity + line.quantity, line.unit_price)
        merged[line.product_id] = line
    return tuple(merged.values())


def decide_create(
    state: Order | None,
    *,
    order_id: uuid.UUID,
    customer_id: uuid.UUID,
    lines: tuple[OrderLine, ...],
    saga_id: uuid.UUID,
    shipping_address: ShippingAddress,
    payment_token: str,
) -> list[DomainEvent]:
    """Create an order; creating the same order again is a no-op (idempotent by order id), also when its
    prices have changed since: the limits are the new order's, not a repeat's."""
    if not lines:
        raise EmptyOrder("an order needs at least one item")
    lines = _merge_lines(lines)
    if state is not None:
        if state.customer_id == customer_id and {(x.product_id, x.quantity) for x in state.lines} == {
            (x.product_id, x.quantity) for x in lines
        }:
            return []
        raise OrderAlreadyExists(f"order {order_id} already exists")
    if len(lines) > MAX_LINES:
        raise OrderTooLarge(f"the order has {len(lines)} products; at most {MAX_LINES}")
    for line in lines:
        if not 1 <= line.quantity <= MAX_LINE_QUANTITY:
            raise OrderTooLarge(f"product {line.product_id}: {line.quantity} units; at most {MAX_LINE_QUANTITY} per product")
    total = order_total(lines)
    if total > MAX_ORDER_TOTAL:
        raise OrderTooLarge(f"the order totals {total}; at most {MAX_ORDER_TOTAL}")
    return [OrderCreated(order_id, customer_id, lines, total, saga_id, shipping_address, payment_token)]


_CANCELLABLE = frozenset(
    {
        OrderStatus.PENDING,
        OrderStatus.INVENTORY_RESERVED,
        OrderStatus.PAYMENT_PROCESSED,
        OrderStatus.SHIPMENT_CREATED,
        OrderStatus.CONFIRMED,
    }
)


# A confirmed order is undone (refunded, its units put back) for this long after its confirmation; later,
# giving it back is a return, which is not the saga's. Well within the time a SKU remembers a sale
# (domain.inventory.SALE_RETENTION), so that an undo always finds the sale whose units it puts back.
CANCEL_WINDOW = dt.timedelta(days=30)


def ensure_cancellable(state: Order, now: dt.datetime) -> None:
    """A customer may cancel an order until compensation has started without it (a cancelled order is
    cancelled already: the cancel has nothing left to do), a confirmed one within CANCEL_WINDOW."""
    if state.status not in _CANCELLABLE and state.status is not OrderStatus.CANCELLED:
        raise TransitionForbidden(f"order {state.order_id} is {state.status}", state.status)
    ensure_undoable(state, now)


def ensure_undoable(state: Order, now: dt.datetime) -> None:
    """An order confirmed more than CANCEL_WINDOW ago cannot be undone (a customer's cancel, an operator's
    compensation): its SKUs may have forgotten the sales whose units an undo would put back."""
    if state.status is OrderStatus.CONFIRMED and now - state.updated_at > CANCEL_WINDOW:
        raise TransitionForbidden(f"order {state.order_id} was confirmed on {state.updated_at:%Y-%m-%d}: it can "
                                  f"be undone for {CANCEL_WINDOW.days} days after, not later", state.status)


def decide_start_compensation(state: Order, reason: str) -> list[DomainEvent]:
    """Compensation has started (a step failed, the saga timed out, someone asked): the order shows
    COMPENSATING, unless it already does or is cancelled."""
    if state.status in (OrderStatus.COMPENSATING, OrderStatus.CANCELLED):
        return []
    return [OrderCompensationStarted(reason)]


# --- evolve -----------------------------------------------------------------------------------


def evolve(state: Order | None, recorded: Recorded) -> Order | None:
    """Fold one recorded event into the order; unknown or misplaced events leave it unchanged."""
    e = recorded.event
    at = recorded.at
    if isinstance(e, OrderCreated):
        return Order(
            order_id=e.order_id, customer_id=e.customer_id, lines=e.lines,
            total_amount=e.total_amount, saga_id=e.saga_id, shipping_address=e.shipping_address,
            payment_token=e.payment_token,
            status=OrderStatus.PENDING, created_at=at, updated_at=at, version=recorded.version,
        )
    if state is None:
        return None
    changes: dict[str, object] = {"updated_at": at, "version": recorded.version}
    if isinstance(e, InventoryReserved):
        changes.update(status=OrderStatus.INVENTORY_RESERVED, reservations=e.reservations)
    elif isinstance(e, PaymentProcessed):
        changes.update(status=OrderStatus.PAYMENT_PROCESSED, payment_id=e.payment_id)
    elif isinstance(e, ShipmentCreated):
        changes.update(status=OrderStatus.SHIPMENT_CREATED, shipment_id=e.shipment_id)
    elif isinstance(e, OrderConfirmed):
        changes.update(status=OrderStatus.CONFIRMED)
    elif isinstance(e, OrderCompensationStarted):
        changes.update(status=OrderStatus.COMPENSATING, reason=e.reason)
    elif isinstance(e, OrderCancelled):
        changes.update(status=OrderStatus.CANCELLED, reason=e.reason)
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]
