"""What the actors answer with: frozen, typed views of an order, a SKU and a reservation, which Ray
pickles across the call. ``json()`` is their HTTP shape (API.md), the only place that shape is built."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from domain import inventory as inv
from domain import order as o
from domain import saga as sg


@dataclasses.dataclass(frozen=True, slots=True)
class StockView:
    product_id: uuid.UUID
    name: str | None
    price: Decimal
    on_hand: int
    reserved: int
    available: int
    version: int

    @classmethod
    def of(cls, sku: inv.Sku) -> StockView:
        return cls(sku.product_id, sku.name, sku.price, sku.on_hand, sku.reserved, sku.available, sku.version)

    def json(self) -> dict[str, Any]:
        return {"product_id": str(self.product_id), "name": self.name, "price": str(self.price),
                "on_hand": self.on_hand, "reserved": self.reserved, "available": self.available,
                "version": self.version}


@dataclasses.dataclass(frozen=True, slots=True)
class ReservationView:
    reservation_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int
    expires_at: dt.datetime
    version: int
    outcome: inv.Outcome

    @classmethod
    def of(cls, sku: inv.Sku, reservation_id: uuid.UUID) -> ReservationView:
        r = sku.reservations[reservation_id]
        return cls(r.reservation_id, sku.product_id, r.quantity, r.expires_at, r.version, r.outcome)

    def json(self) -> dict[str, Any]:
        return {"reservation_id": str(self.reservation_id), "product_id": str(self.product_id),
                "quantity": self.quantity, "expires_at": self.expires_at.isoformat(), "version": self.version}


@dataclasses.dataclass(frozen=True, slots=True)
class OrderView:
    order_id: uuid.UUID
    customer_id: uuid.UUID
    status: o.OrderStatus
    lines: tuple[o.OrderLine, ...]
    total_amount: Decimal
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    saga_id: uuid.UUID
    reason: str | None = None

    @classmethod
    def of(cls, order: o.Order) -> OrderView:
        return cls(order.order_id, order.customer_id, order.status, order.lines, order.total_amount,
                   order.created_at, order.updated_at, order.version, order.saga_id, order.reason)

    def json(self) -> dict[str, Any]:
        return order_json(self.order_id, self.customer_id, self.status.value,
                          [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price)}
                           for x in self.lines],
                          self.total_amount, self.created_at, self.updated_at, self.version, self.saga_id, self.reason)


def order_json(order_id: uuid.UUID, customer_id: uuid.UUID, status: str, items: list[dict[str, Any]],
               total_amount: Decimal, created_at: dt.datetime, updated_at: dt.datetime, version: int,
               saga_id: uuid.UUID, reason: str | None) -> dict[str, Any]:
    """An order as the API shows it, from the actor or from the read model (``store/queries.py``)."""
    view: dict[str, Any] = {
        "order_id": str(order_id), "customer_id": str(customer_id), "status": status, "items": items,
        "total_amount": str(total_amount), "created_at": created_at.isoformat(), "updated_at": updated_at.isoformat(),
        "version": version, "saga_id": str(saga_id),
    }
    if reason:
        view["reason"] = reason
    return view


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """An order as placed: PENDING, its saga under way (or the order as it was, for a repeat)."""

    order_id: uuid.UUID
    status: o.OrderStatus
    saga_id: uuid.UUID

    def json(self) -> dict[str, Any]:
        return {"order_id": str(self.order_id), "status": self.status.value, "saga_id": str(self.saga_id)}


@dataclasses.dataclass(frozen=True, slots=True)
class Cancelled:
    """The answer to a cancel: ``accepted`` is False when the order was cancelled before."""

    accepted: bool
    order: OrderView


@dataclasses.dataclass(frozen=True, slots=True)
class SagaState:
    saga_id: uuid.UUID
    status: sg.SagaStatus

    def json(self) -> dict[str, Any]:
        return {"saga_id": str(self.saga_id), "status": self.status.value}
