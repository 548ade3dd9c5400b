"""The HTTP API's shapes. Request bodies are validated by pydantic: unknown fields are refused, limits as
in API.md. Response models only document what the routes return (``responses=`` in commerce/openapi.py): no
route validates or filters its answer through them, so they cost nothing at run time."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from domain.cart import CartStatus
from domain.order import MAX_LINES, OrderStatus
from domain.saga import SagaStatus

MAX_QUANTITY = 10_000


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


# Integers in a body are JSON integers: not true/false, "3" or 5.0, which pydantic's lax mode would take.
Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
Text = bounded(200)
Reason = bounded(500, min_length=0)
City = bounded(100)
PostalCode = bounded(20)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def examples(*values: dict[str, Any]) -> ConfigDict:
    """A request model's config with examples for the OpenAPI document (unknown fields still refused)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(values)})


EXAMPLE_PRODUCT = "6f1c2a4e-8b1d-4c55-9a43-2f7e0f3b9d10"
EXAMPLE_CUSTOMER = "0b8e3c1a-5d2f-4e7a-8c9b-1a2b3c4d5e6f"
EXAMPLE_RESERVATION = "3d5e7f90-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
EXAMPLE_ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345",
                   "country": "US"}


def money(value: str) -> str:
    try:
        amount = Decimal(value)
    except ArithmeticError as e:
        raise ValueError("must be a decimal string such as \"29.99\"") from e
    if not amount.is_finite() or amount < 0 or amount >= Decimal("10000000000") or amount != amount.quantize(Decimal("0.01")):
        raise ValueError("must be a non-negative amount with at most two decimal places")
    return str(amount.quantize(Decimal("0.01")))


class SetStock(Strict):
    model_config = examples({"on_hand": 100, "price": "29.99", "name": "Mug"}, {"on_hand": 0, "price": "4.50"},
                            {"on_hand": 40, "price": "29.99", "expected_version": 7})
    on_hand: StrictInt = Field(ge=0, le=1_000_000_000)
    price: str = Field(examples=["29.99"], pattern=r"^[0-9]{1,10}(\.[0-9]{1,2})?$")
    name: Text | None = None  # type: ignore[valid-type]
    expected_version: StrictInt | None = Field(
        default=None, ge=0, le=2**31 - 1,
        description="Set only if the product is still at this version (0: it does not exist yet); else a 409 "
                    "with current_version")

    @field_validator("price")
    @classmethod
    def _price(cls, v: str) -> str:
        return money(v)


class Reserve(Strict):
    model_config = examples({"quantity": 2},
                            {"quantity": 1, "reservation_id": EXAMPLE_RESERVATION, "expected_version": 3,
                             "ttl_seconds": 900})
    quantity: Quantity
    reservation_id: uuid.UUID | None = None
    expected_version: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1)
    ttl_seconds: StrictInt | None = Field(default=None, ge=1, le=86_400)


class Release(Strict):
    model_config = examples({"reservation_id": EXAMPLE_RESERVATION})
    reservation_id: uuid.UUID


class CreateCart(Strict):
    model_config = examples({}, {"customer_id": EXAMPLE_CUSTOMER})
    customer_id: uuid.UUID | None = Field(default=None, description="A customer's own id by default; an admin names the customer")


class SetCartItem(Strict):
    model_config = examples({"product_id": EXAMPLE_PRODUCT, "quantity": 3}, {"product_id": EXAMPLE_PRODUCT, "quantity": 0})
    product_id: uuid.UUID
    quantity: StrictInt = Field(ge=0, le=MAX_QUANTITY)


class ShippingAddress(Strict):
    model_config = examples(EXAMPLE_ADDRESS)
    name: Text  # type: ignore[valid-type]
    line1: Text  # type: ignore[valid-type]
    city: City  # type: ignore[valid-type]
    postal_code: PostalCode  # type: ignore[valid-type]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


PaymentToken = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(printable)]


class Checkout(Strict):
    model_config = examples({"payment_token": "tok_visa", "shipping_address": EXAMPLE_ADDRESS})
    payment_token: PaymentToken
    shipping_address: ShippingAddress


class OrderItem(Strict):
    model_config = examples({"product_id": EXAMPLE_PRODUCT, "quantity": 2})
    product_id: uuid.UUID
    quantity: Quantity


class CreateOrder(Strict):
    model_config = examples(
        {"items": [{"product_id": EXAMPLE_PRODUCT, "quantity": 2}], "payment_token": "tok_visa",
         "shipping_address": EXAMPLE_ADDRESS},
        {"customer_id": EXAMPLE_CUSTOMER, "items": [{"product_id": EXAMPLE_PRODUCT, "quantity": 1}],
         "payment_token": "tok_visa", "shipping_address": EXAMPLE_ADDRESS})
    customer_id: uuid.UUID | None = Field(default=None, description="A customer's own id by default; an admin names the customer")
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_LINES)
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
    model_config = examples({"reason": "ordered by mistake"}, {})
    reason: Reason | None = None  # type: ignore[valid-type]


class Compensate(Strict):
    model_config = examples({"reason": "the parcel was lost"}, {})
    reason: Reason | None = None  # type: ignore[valid-type]



# --- responses (documentation only) ----------------------------------------------------------------

MONEY_PATTERN = r"^\d+\.\d{2}$"
Money = Annotated[str, Field(pattern=MONEY_PATTERN, examples=["29.99"], description="A decimal string, two places")]
Count = Annotated[int, Field(ge=0)]
Units = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Cursor = Annotated[str | None, Field(description="Pass it back as `cursor` for the next page; null on the last")]


class View(BaseModel):
    """A response body: exactly these members (``additionalProperties: false``), so that a member the
    document does not know about fails the conformance tests instead of going unnoticed."""

    model_config = ConfigDict(extra="forbid")


class StockStatus(View):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"product_id": EXAMPLE_PRODUCT, "name": "Mug", "price": "29.99", "on_hand": 100, "reserved": 2,
         "available": 98, "version": 4}]})
    product_id: uuid.UUID
    name: str
    price: Money
    on_hand: Count
    reserved: Count
    available: Count = Field(description="on_hand - reserved, never negative")
    version: Count


class Reservation(View):
    reservation_id: uuid.UUID
    product_id: uuid.UUID
    quantity: Units
    expires_at: dt.datetime
    version: Count = Field(description="The product's stock version after the reservation")


class CartLineView(View):
    product_id: uuid.UUID
    quantity: Units
    unit_price: Money
    line_total: Money


class CartView(View):
    id: uuid.UUID
    customer_id: uuid.UUID
    items: list[CartLineView]
    total: Money
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime
    status: CartStatus
    order_id: uuid.UUID | SkipJsonSchema[None] = Field(
        default=None, description="The order the cart turned into; present once a checkout began")


class OrderAccepted(View):
    """The answer to placing an order (or checking out a cart): its fulfilment saga runs in the background."""

    order_id: uuid.UUID
    status: OrderStatus
    saga_id: uuid.UUID


class OrderLineView(View):
    product_id: uuid.UUID
    quantity: Units
    unit_price: Money


class OrderView(View):
    order_id: uuid.UUID
    customer_id: uuid.UUID
    status: OrderStatus
    items: list[OrderLineView]
    total_amount: Money
    created_at: dt.datetime
    updated_at: dt.datetime
    version: Count
    saga_id: uuid.UUID
    reason: str | SkipJsonSchema[None] = Field(default=None, description="Why the order was cancelled, once it was")


class OrderList(View):
    items: list[OrderView] = Field(description="Newest first")
    next_cursor: Cursor


class OrderEvent(View):
    event_id: uuid.UUID
    event_type: str
    version: Count
    data: dict[str, Any]
    created_at: dt.datetime


class OrderEvents(View):
    items: list[OrderEvent] = Field(description="In version order")


class SagaSummary(View):
    saga_id: uuid.UUID
    saga_type: str
    order_id: uuid.UUID
    status: SagaStatus
    current_step: str
    attempts: Count
    created_at: dt.datetime
    updated_at: dt.datetime


class SagaList(View):
    items: list[SagaSummary] = Field(description="Newest first")
    next_cursor: Cursor


class SagaStep(View):
    step: str
    action: Literal["execute", "compensate"]
    outcome: Literal["started", "succeeded", "failed"]
    attempt: Count
    at: dt.datetime
    error: str | SkipJsonSchema[None] = Field(default=None, description="Why the attempt failed, when it did")


class SagaDetail(SagaSummary):
    reason: str | None = Field(description="Why the saga compensates or failed; null while nothing went wrong")
    next_attempt_at: dt.datetime | SkipJsonSchema[None] = Field(default=None, description="When a retry is waiting")
    steps: list[SagaStep] = Field(description="The step history, oldest first")


class ActorView(View):
    kind: Literal["order", "inventory", "projector"]
    shard: Count
    actor_id: str
    node_id: str
    pid: int
    restarts: int = Field(description="How often Ray restarted it; -1 when Ray does not say")
    active_entities: Count
    max_active_entities: Count
    mailbox_depth: Count = Field(description="Commands waiting for an entity's mailbox")
    sagas_running: Count
    conflicts: Count = Field(description="Optimistic-concurrency conflicts its SKUs met")


class ActorList(View):
    items: list[ActorView]


class Location(View):
    entity_id: uuid.UUID
    kind: Literal["order", "inventory"]
    shard: Count
    actor_id: str
    node_id: str
    active: bool = Field(description="In the shard's memory now")


class SagaAccepted(View):
    """A saga command was accepted; the saga moves on in the background."""

    saga_id: uuid.UUID
    status: SagaStatus


class StoredEvent(View):
    position: Count = Field(description="The event's place in the store's commit order")
    event_id: uuid.UUID
    aggregate_id: uuid.UUID
    aggregate_type: str
    event_type: str
    version: Count
    data: dict[str, Any]
    created_at: dt.datetime


class EventPage(View):
    items: list[StoredEvent]
    next_position: int | None = Field(
        description="Pass it back as `after_position` for the next page; null when this page was not full")


class Liveness(View):
    status: Literal["ok"]


class HealthCheck(BaseModel):
    """One check; an admin also sees its details (positions, counts, an error text) as further members."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "fail"]


class HealthChecks(BaseModel):
    postgres: HealthCheck
    redis: HealthCheck
    event_store: HealthCheck
    sagas: HealthCheck
    actors: HealthCheck


class Health(BaseModel):
    status: Literal["ok", "fail"] = Field(description="ok when every check is ok")
    checks: HealthChecks


# --- problems -------------------------------------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem; some carry more members (available, current_version, current_status, errors)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request this answer is for: its path and its X-Request-ID")


class FieldError(BaseModel):
    loc: list[str] = Field(description="Where: body, query, path or header, then the field's path")
    msg: str


class ValidationProblem(Problem):
    """A 422: a request that is well-formed but not valid; a schema failure lists its ``errors``."""

    errors: list[FieldError] | SkipJsonSchema[None] = None


PROBLEM_MODELS: tuple[type[BaseModel], ...] = (Problem, ValidationProblem)
"""Models that error responses name under application/problem+json only; serve_app adds them to the
document's components (FastAPI would also list them, wrongly, under application/json)."""

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON, or a body that is not an object", 401: "Missing or invalid bearer token",
    403: "The caller may not do this", 404: "Unknown id", 409: "Conflict with the current state",
    413: "Body over 64 KiB", 415: "A body not sent as application/json",
    422: "Well-formed but invalid (schema, ranges, unknown field, Idempotency-Key)",
    429: "A customer's request budget is spent; see Retry-After",
    503: "A dependency is unavailable; see Retry-After",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds until the budget allows a request", "required": True,
                          "schema": {"type": "integer", "minimum": 1}}},
    503: {"Retry-After": {"description": "Seconds to wait before a retry", "schema": {"type": "integer", "minimum": 1}}},
}


def problem_content(code: int) -> dict[str, Any]:
    model = ValidationProblem if code == 422 else Problem
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def problems(*codes: int, notes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error responses of one route: ``codes`` with the usual descriptions, ``notes`` with the route's own."""
    notes = notes or {}
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *notes}):
        out[code] = {"description": notes.get(code) or PROBLEM_DESCRIPTIONS[code], "content": problem_content(code),
                     **({"headers": _HEADERS[code]} if code in _HEADERS else {})}
    return out


def answer(model: type[BaseModel], description: str, *, keyed: bool = False,
           location: str | None = None) -> dict[str, Any]:
    """A success response documented with ``model``: the answer of a POST that takes an Idempotency-Key may be
    a replay; ``location`` describes the Location header that the answer always carries."""
    headers: dict[str, Any] = {}
    if location:
        headers["Location"] = {"description": location, "required": True, "schema": {"type": "string"}}
    if keyed:
        headers["Idempotent-Replayed"] = {
            "description": "true when this is the stored answer to an earlier request with the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]}}
    return {"model": model, "description": description, **({"headers": headers} if headers else {})}
