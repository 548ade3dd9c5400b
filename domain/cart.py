"""The shopping cart: lines at catalog prices, totals, and a checkout that happens at most once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal

from domain.errors import DomainError

CENT = Decimal("0.01")
# Checkout derives the order id from the cart id, so a repeated checkout can only name one order.
CHECKOUT_NAMESPACE = uuid.UUID("6f0c1f7e-3f3e-4c1e-9b8a-6a4f0c2d9e11")


class CartError(DomainError):
    """Base of the cart context's errors."""


class EmptyCart(CartError):
    """A cart without lines cannot be checked out."""


class CartFull(CartError):
    """A cart holds at most as many products as an order may."""


class CartStatus(enum.StrEnum):
    OPEN = "OPEN"
    CHECKING_OUT = "CHECKING_OUT"
    CHECKED_OUT = "CHECKED_OUT"


@dataclasses.dataclass(frozen=True, slots=True)
class CartLine:
    product_id: uuid.UUID
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT)


@dataclasses.dataclass(frozen=True, slots=True)
class Cart:
    id: uuid.UUID
    customer_id: uuid.UUID
    lines: tuple[CartLine, ...]
    status: CartStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime
    order_id: uuid.UUID | None = None
    version: int = 0  # counts the cart's changes: a durable copy keeps only the newest

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00")).quantize(CENT)


def checkout_order_id(cart_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(CHECKOUT_NAMESPACE, str(cart_id))

