"""How the saga's steps touch the order: idempotency keys for the providers and the order events
that record each step's outcome."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Callable

from domain import order as o
from domain import saga as sg
from domain.events import DomainEvent
from domain.saga import STEPS, Phase, Step

SAGA_NAMESPACE = uuid.UUID("0b7f6a53-8a59-4d7e-9c43-2f5d1c9a8e60")


def saga_id_of(order_id: uuid.UUID) -> uuid.UUID:
    """An order's fulfilment saga: one per order, its id derived from the order's."""
    return uuid.uuid5(SAGA_NAMESPACE, str(order_id))


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
    """The order events that record a successful step or compensation; a step no saga runs is an error."""
    done = Step(step)
    if action is Phase.EXECUTE:
        if done not in STEPS:
            raise ValueError(f"{done} is not a step the saga executes")
        return [_EXECUTED[done](order, data)]
    if done is Step.CANCEL_ORDER:
        return [] if order.status is o.OrderStatus.CANCELLED else [o.OrderCancelled(reason)]
    if done not in _COMPENSATED:
        raise ValueError(f"{done} is not a compensation")
    return [_COMPENSATED[done](order, data)] if effective else []


_EXECUTED: dict[Step, Callable[[o.Order, StepData], DomainEvent]] = {
    Step.RESERVE_INVENTORY: lambda order, data: o.InventoryReserved(data.reservations),
    Step.PROCESS_PAYMENT: lambda order, data: o.PaymentProcessed(data.payment_id or "", order.total_amount),
    Step.CREATE_SHIPMENT: lambda order, data: o.ShipmentCreated(data.shipment_id or ""),
    Step.CONFIRM_ORDER: lambda order, data: o.OrderConfirmed(),
}
_COMPENSATED: dict[Step, Callable[[o.Order, StepData], DomainEvent]] = {
    Step.CANCEL_SHIPMENT: lambda order, data: o.ShipmentCancelled(data.shipment_id or order.shipment_id or ""),
    Step.REFUND_PAYMENT: lambda order, data: o.PaymentRefunded(data.payment_id or order.payment_id or "",
                                                               order.total_amount),
    Step.RELEASE_INVENTORY: lambda order, data: o.InventoryReleased(order.reservations),
}


# --- decisions of the process manager --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to record, atomically: the saga's events and the order's events they imply. ``stale`` when a
    step's outcome came back after the saga moved on (an operator compensated meanwhile): nothing is."""

    saga_events: list[DomainEvent]
    order_events: list[DomainEvent]
    stale: bool = False


def implied(order: o.Order, saga_events: list[DomainEvent], order_events: list[DomainEvent] | None = None,
            shown: str | None = None) -> Decision:
    """The saga's events with what they imply for the order: a compensation that starts shows on it, with
    the saga's reason, or ``shown`` where that reason is the service's own trouble (kept for operators)."""
    started = next((e for e in saga_events if isinstance(e, sg.CompensationStarted)), None)
    more = o.decide_start_compensation(order, shown or started.reason) if started is not None else []
    return Decision(list(saga_events), [*(order_events or []), *more])


def decide_cancel(order: o.Order, saga: sg.Saga, reason: str, now: dt.datetime) -> Decision | None:
    """A customer's cancel: the saga compensates, and the order shows it (a saga compensating already
    needs nothing recorded). None for an order cancelled already: the cancel has nothing left to do. An
    order that compensates without it, or was confirmed too long ago, refuses the cancel
    (TransitionForbidden)."""
    o.ensure_cancellable(order, now)
    if order.status is o.OrderStatus.CANCELLED:
        return None
    return implied(order, sg.decide_compensate(saga, reason))


def decide_compensate(order: o.Order, saga: sg.Saga, reason: str, now: dt.datetime) -> Decision:
    """An operator's compensation of the saga, which the order shows; refused (TransitionForbidden) as the
    saga refuses it, and for an order confirmed too long ago to be undone."""
    o.ensure_undoable(order, now)
    return implied(order, sg.decide_compensate(saga, reason))


def decide_outcome(order: o.Order, saga: sg.Saga, action: sg.RunStep, result: sg.StepResult, data: StepData,
                   now: dt.datetime, policy: sg.SagaPolicy) -> Decision:
    """A step's outcome: the saga's events (with the next step written ahead when it can start at once),
    the order events of a step that succeeded, and those of a compensation the outcome starts."""
    expected = (True, action.step, action.action, action.attempt)
    if (saga.in_flight, saga.current_step, saga.phase, saga.attempt) != expected:
        return Decision([], [], stale=True)
    saga_events = sg.with_next_attempt(saga.saga_id, saga, sg.decide_outcome(saga, action, result, now, policy),
                                       now, policy)
    # The order ends with the reason it showed since its compensation started (the saga's may name the service's parts).
    done = (order_events_for(order, action.step, action.action, result.effective, data,
                             order.reason or saga.reason or "cancelled")
            if result.ok else [])
    return implied(order, saga_events, done, shown=f"{action.step} failed" if result.internal else None)
