"""The shopping cart: lines at catalog prices, totals, and a checkout that happens at most once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal

from domain.errors import DomainError, TransitionForbidden
from domain.inventory import MAX_QUANTITY

CENT = Decimal("0.01")
# Checkout derives the order id from the cart id, so a repeated checkout can only name one order.
CHECKOUT_NAMESPACE = uuid.UUID("6f0c1f7e-3f3e-4c1e-9b8a-6a4f0c2d9e11")


class CartError(DomainError):
    """Base of the cart context's errors."""


class EmptyCart(CartError):
    """A cart without lines cannot be checked out."""


class InvalidQuantity(CartError):
    pass


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

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00")).quantize(CENT)


def check_line(quantity: int) -> None:
    """A line holds 0 (removed) to MAX_QUANTITY units."""
    if not 0 <= quantity <= MAX_QUANTITY:
        raise InvalidQuantity(f"quantity must be between 0 and {MAX_QUANTITY}")


def ensure_open(cart: Cart) -> None:
    if cart.status is not CartStatus.OPEN:
        raise TransitionForbidden(f"cart {cart.id} is {cart.status}", cart.status)


def checkout_order_id(cart_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(CHECKOUT_NAMESPACE, str(cart_id))


def ensure_checkout_possible(cart: Cart) -> None:
    """A cart checked out before names its order again; an open one needs at least one line."""
    if cart.status is CartStatus.OPEN and not cart.lines:
        raise EmptyCart(f"cart {cart.id} is empty")
