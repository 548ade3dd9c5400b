"""Request bodies of the HTTP API, validated by pydantic: unknown fields are refused, limits as in API.md."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_QUANTITY = 10_000
MAX_ITEMS = 100


def printable(value: str) -> str:
    """Refuse NUL and other control characters: they have no place in a name, an address or a reason,
    and PostgreSQL cannot store NUL at all."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters")
    return value


def bounded(max_length: int, min_length: int = 1) -> object:
    """A stripped string of printable characters."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
                     AfterValidator(printable)]


Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Text = bounded(200)
Reason = bounded(500, min_length=0)
City = bounded(100)
PostalCode = bounded(20)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def money(value: str) -> str:
    try:
        amount = Decimal(value)
    except ArithmeticError as e:
        raise ValueError("must be a decimal string such as \"29.99\"") from e
    if not amount.is_finite() or amount < 0 or amount >= Decimal("10000000000") or amount != amount.quantize(Decimal("0.01")):
        raise ValueError("must be a non-negative amount with at most two decimal places")
    return str(amount.quantize(Decimal("0.01")))


class SetStock(Strict):
    on_hand: int = Field(ge=0, le=1_000_000_000)
    price: str = Field(examples=["29.99"], pattern=r"^\d{1,10}(\.\d{1,2})?$")
    name: Text | None = None  # type: ignore[valid-type]

    @field_validator("price")
    @classmethod
    def _price(cls, v: str) -> str:
        return money(v)


class Reserve(Strict):
    quantity: Quantity
    reservation_id: uuid.UUID | None = None
    expected_version: int | None = Field(default=None, ge=0, le=2**31 - 1)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)


class Release(Strict):
    reservation_id: uuid.UUID


class CreateCart(Strict):
    customer_id: uuid.UUID | None = Field(default=None, description="A customer's own id by default; an admin names the customer")


class SetCartItem(Strict):
    product_id: uuid.UUID
    quantity: int = Field(ge=0, le=10_000)


class ShippingAddress(Strict):
    name: Text  # type: ignore[valid-type]
    line1: Text  # type: ignore[valid-type]
    city: City  # type: ignore[valid-type]
    postal_code: PostalCode  # type: ignore[valid-type]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


PaymentToken = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(printable)]


class Checkout(Strict):
    payment_token: PaymentToken
    shipping_address: ShippingAddress


class OrderItem(Strict):
    product_id: uuid.UUID
    quantity: Quantity


class CreateOrder(Strict):
    customer_id: uuid.UUID | None = Field(default=None, description="A customer's own id by default; an admin names the customer")
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ITEMS)
    payment_token: PaymentToken
    shipping_address: ShippingAddress

    @model_validator(mode="after")
    def _merged_quantities(self) -> CreateOrder:
        merged: dict[uuid.UUID, int] = {}
        for item in self.items:
            merged[item.product_id] = merged.get(item.product_id, 0) + item.quantity
            if merged[item.product_id] > MAX_QUANTITY:
                raise ValueError(f"product {item.product_id}: at most {MAX_QUANTITY} units in one order")
        return self


class CancelOrder(Strict):
    reason: Reason | None = None  # type: ignore[valid-type]


class Compensate(Strict):
    reason: Reason | None = None  # type: ignore[valid-type]


class Problem(BaseModel):
    """An RFC 9457 problem; some carry more members (available, current_version, current_status, errors)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str


PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": Problem, "description": text,
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for code, text in ((400, "Malformed JSON, or a body that is not an object"),
                       (401, "Missing or invalid bearer token"), (403, "The caller may not do this"),
                       (404, "Unknown id"), (409, "Conflict with the current state"),
                       (413, "Body over 64 KiB"), (422, "Well-formed but invalid"),
                       (429, "The caller's request budget is spent; see Retry-After"),
                       (500, "Unexpected failure"), (503, "A dependency is unavailable; see Retry-After"))
}
