"""How the saga's steps touch the order: idempotency keys for the providers and the order events
that record each step's outcome."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid

from domain import order as o
from domain.events import DomainEvent
from domain.saga import CANCEL_ORDER, Phase


def step_key(saga_id: uuid.UUID, step: str) -> str:
    """A provider idempotency key: replaying a step never charges or ships twice."""
    return f"{saga_id}:{step}"


def reservation_id(key: bytes, saga_id: uuid.UUID, product_id: uuid.UUID) -> uuid.UUID:
    """The reservation an order's saga holds on one SKU: the same on every replay, and keyed with a
    server secret so that nobody outside can compute it in advance."""
    digest = hmac.new(key, f"{saga_id}\n{product_id}".encode(), hashlib.sha256).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def planned_reservations(order: o.Order, key: bytes) -> tuple[o.ReservedLine, ...]:
    return tuple(
        o.ReservedLine(line.product_id, reservation_id(key, order.saga_id, line.product_id), line.quantity)
        for line in order.lines
    )


def legacy_reservations(order: o.Order) -> tuple[o.ReservedLine, ...]:
    """The ids of the first releases (public uuid5 of the saga id): an order in flight across the
    upgrade may hold these."""
    return tuple(o.ReservedLine(line.product_id, uuid.uuid5(order.saga_id, str(line.product_id)), line.quantity)
                 for line in order.lines)


def held_reservations(order: o.Order, key: bytes) -> tuple[o.ReservedLine, ...]:
    """What the order holds or may hold: what was recorded as reserved, else what the step asks for."""
    return order.reservations or planned_reservations(order, key)


@dataclasses.dataclass(frozen=True, slots=True)
class StepData:
    """What a step's call returned: payment id, shipment id, the reservations the inventory made."""

    payment_id: str | None = None
    shipment_id: str | None = None
    reservations: tuple[o.ReservedLine, ...] = ()


def order_events_for(order: o.Order, step: str, action: Phase, effective: bool, data: StepData, reason: str) -> list[DomainEvent]:
    """The order events that record a successful step or compensation."""
    if action is Phase.EXECUTE:
        if step == "reserve_inventory":
            return [o.InventoryReserved(data.reservations)]
        if step == "process_payment":
            return [o.PaymentProcessed(data.payment_id or "", order.total_amount)]
        if step == "create_shipment":
            return [o.ShipmentCreated(data.shipment_id or "")]
        if step == "confirm_order":
            return [o.OrderConfirmed()]
        return []
    if step == CANCEL_ORDER:
        return [] if order.status is o.OrderStatus.CANCELLED else [o.OrderCancelled(reason)]
    if not effective:
        return []
    if step == "cancel_shipment":
        return [o.ShipmentCancelled(data.shipment_id or order.shipment_id or "")]
    if step == "refund_payment":
        return [o.PaymentRefunded(data.payment_id or order.payment_id or "", order.total_amount)]
    if step == "release_inventory":
        return [o.InventoryReleased(order.reservations)]
    return []


def order_events_for_compensation(order: o.Order, reason: str) -> list[DomainEvent]:
    """Compensation has started: the order shows COMPENSATING (unless it already does)."""
    if order.status in (o.OrderStatus.COMPENSATING, o.OrderStatus.CANCELLED):
        return []
    return [o.OrderCompensationStarted(reason)]
