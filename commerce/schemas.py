"""Request bodies of the HTTP API, validated by pydantic: unknown fields are refused, limits as in API.md."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Quantity = Annotated[int, Field(ge=1, le=10_000)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_ITEMS = 100


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
    name: Text | None = None

    @field_validator("price")
    @classmethod
    def _price(cls, v: str) -> str:
        return money(v)


class Reserve(Strict):
    quantity: Quantity
    reservation_id: uuid.UUID | None = None
    expected_version: int | None = Field(default=None, ge=0)
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)


class Release(Strict):
    reservation_id: uuid.UUID


class CreateCart(Strict):
    customer_id: uuid.UUID


class SetCartItem(Strict):
    product_id: uuid.UUID
    quantity: int = Field(ge=0, le=10_000)


class ShippingAddress(Strict):
    name: Text
    line1: Text
    city: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


PaymentToken = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Checkout(Strict):
    payment_token: PaymentToken
    shipping_address: ShippingAddress


class OrderItem(Strict):
    product_id: uuid.UUID
    quantity: Quantity


class CreateOrder(Strict):
    customer_id: uuid.UUID
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ITEMS)
    payment_token: PaymentToken
    shipping_address: ShippingAddress


class CancelOrder(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class Compensate(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


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
                       (401, "Missing or invalid admin bearer token"),
                       (404, "Unknown id"), (409, "Conflict with the current state"),
                       (413, "Body over 64 KiB"), (422, "Well-formed but invalid"),
                       (500, "Unexpected failure"), (503, "A dependency is unavailable; see Retry-After"))
}
