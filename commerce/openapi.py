"""The OpenAPI document of the HTTP API: the app class that adds the problem schemas, and what each
route documents (its status, tag and responses), by the name of the ingress method that serves it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import PlainTextResponse
from pydantic import StringConstraints
from pydantic.json_schema import SkipJsonSchema

from commerce import schemas as api

DESCRIPTION = ("Orders, carts and inventory with CQRS, event sourcing and sagas on Ray. "
               "Callers authenticate with a bearer token: a customer's or a service's JWT, or the admin token. "
               "Errors are application/problem+json (RFC 9457). Every POST accepts an Idempotency-Key header, "
               "scoped to its caller.")


class CommerceAPI(FastAPI):
    """FastAPI, whose OpenAPI document also holds the problem schemas: error responses name them under
    application/problem+json only (a ``model`` would list them under application/json too, which no error is)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in api.PROBLEM_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return self.openapi_schema  # type: ignore[return-value]


# Declared on every POST for the OpenAPI document and validated like any header; the route does not read
# it: ``idempotent`` (commerce/http.py) does, from the request.
IdempotencyKey = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[ -~]+$")] | SkipJsonSchema[None],
    Header(alias="Idempotency-Key",
           description="Printable ASCII, up to 255 characters, scoped to the caller: a repeat with the same body "
                       "gets the first final answer (with Idempotent-Replayed: true) without the work being done "
                       "again; the same key with another body is a 422. Kept at least 24 h.")]

# Error responses, per route: every route that identifies its caller may meet a bad token (401), a role
# that may not do this (403), a customer's spent budget (429; a customer's token spends it before its
# role is checked) and a dependency that is down (503); every route with a parameter, 422; with a body, 400,
# 413 and 415 as well.
CALLER = (401, 403, 422, 429, 503)
BODY = (400, 413, 415)
KEY_IN_FLIGHT = "a request with the same Idempotency-Key is still in progress (request-in-progress)"
UNKNOWN_ORDER = {404: "Unknown order, or another customer's"}
UNKNOWN_CART = "Unknown or expired cart, or another customer's"
BAD_CURSOR = "Invalid query parameters, or a cursor this service did not hand out (invalid-cursor)"
SHOPPER_ONLY = "A service may not; a customer may name only its own customer_id"


def read(model: type[Any], description: str, *codes: int, notes: dict[int, str] | None = None) -> dict[str, Any]:
    """A route that answers 200 with ``model`` (documented only: the route returns a plain dict)."""
    return {"response_model": Any, "responses": {200: api.answer(model, description),
                                                 **api.problems(*codes, notes=notes)}}


ROUTES: dict[str, dict[str, Any]] = {
    "set_stock": {"tags": ["inventory"], **read(
        api.StockStatus, "The product's stock status", *CALLER, *BODY,
        notes={409: "on_hand below the units reserved (stock-below-reserved), or a stale expected_version "
                    "(`current_version`), or an id that is an order's or a saga's (product-id-conflict)"})},
    "get_stock": {"tags": ["inventory"], **read(
        api.StockStatus, "The product's stock status", 422, 429, 503,
        notes={401: "No token is needed, but one that comes along must be valid", 404: "Unknown product"})},
    "reserve": {"status_code": 201, "tags": ["inventory"], "responses": {
        201: api.answer(api.Reservation, "The reservation", keyed=True),
        **api.problems(*CALLER, *BODY, notes={
            404: "Unknown product",
            409: "Insufficient stock (`available`), a stale expected_version (`current_version`), a reservation_id "
                 "used otherwise before (reservation-id-conflict), a reservation sent again after it ended "
                 f"(reservation-closed), or {KEY_IN_FLIGHT}"})}},
    "release": {"tags": ["inventory"], "responses": {
        200: api.answer(api.StockStatus, "The product's stock status (also when the reservation was released "
                                         "before)", keyed=True),
        **api.problems(*CALLER, *BODY, notes={
            404: "Unknown product, or a reservation that is unknown or another caller's",
            409: f"The reservation is committed by a sale (reservation-committed), or {KEY_IN_FLIGHT}"})}},
    "create_cart": {"status_code": 201, "tags": ["cart"], "responses": {
        201: api.answer(api.CartView, "The new, empty cart", keyed=True, location="The cart's URL"),
        **api.problems(*CALLER, *BODY, notes={
            403: SHOPPER_ONLY, 409: KEY_IN_FLIGHT.capitalize(),
            422: "Well-formed but invalid (schema, unknown field, Idempotency-Key), or an admin that names no "
                 "customer_id"})}},
    "get_cart": {"tags": ["cart"], **read(api.CartView, "The cart", *CALLER, notes={404: UNKNOWN_CART})},
    "set_cart_item": {"tags": ["cart"], **read(
        api.CartView, "The cart", *CALLER, *BODY, notes={404: f"Unknown product, or an u{UNKNOWN_CART[1:]}",
        409: "The cart is checked out"})},
    "remove_cart_item": {"tags": ["cart"], **read(
        api.CartView, "The cart, without that product's line", *CALLER, notes={404: UNKNOWN_CART,
        409: "The cart is checked out"})},
    "checkout": {"status_code": 202, "tags": ["cart"], "responses": {
        202: api.answer(api.OrderAccepted, "The cart's order (the same one for a second checkout); its saga runs in "
                        "the background", keyed=True, location="The order's URL"),
        **api.problems(*CALLER, *BODY, notes={
            404: f"{UNKNOWN_CART}; or a product of the cart that no longer exists",
            409: f"The cart is empty (empty-cart) or its state forbids a checkout, or {KEY_IN_FLIGHT}"})}},
    "create_order": {"status_code": 202, "tags": ["orders"], "responses": {
        202: api.answer(api.OrderAccepted, "The order is PENDING; its saga runs in the background", keyed=True,
                        location="The order's URL"),
        **api.problems(*CALLER, *BODY, notes={
            403: SHOPPER_ONLY, 404: "An unknown product",
            409: f"The order exists already (order-exists), or {KEY_IN_FLIGHT}",
            422: "Well-formed but invalid (schema, ranges, unknown field, Idempotency-Key), or an admin that names "
                 "no customer_id"})}},
    "get_order": {"tags": ["orders"], **read(api.OrderView, "The order", *CALLER, notes={404: UNKNOWN_ORDER[404]})},
    "list_orders": {"tags": ["orders"], **read(
        api.OrderList, "A page of orders, newest first", *CALLER, notes={403: SHOPPER_ONLY, 422: BAD_CURSOR})},
    "reorder": {"status_code": 201, "tags": ["orders"], "responses": {
        201: api.answer(api.CartView, "A new cart with the order's lines at today's prices", keyed=True,
                        location="The cart's URL"),
        **api.problems(*CALLER, notes={**UNKNOWN_ORDER, 409: KEY_IN_FLIGHT.capitalize()})}},
    "cancel_order": {"status_code": 202, "tags": ["orders"], "responses": {
        202: api.answer(api.OrderView, "Accepted: the order compensates in the background", keyed=True),
        200: api.answer(api.OrderView, "The order was cancelled already", keyed=True),
        **api.problems(*CALLER, *BODY, notes={
            **UNKNOWN_ORDER, 409: f"The order's state forbids a cancel (`current_status`), or {KEY_IN_FLIGHT}"})}},
    "order_events": {"tags": ["orders"], **read(
        api.OrderEvents, "The order's events in version order", *CALLER, notes={404: UNKNOWN_ORDER[404]})},
    "list_sagas": {"tags": ["admin"], **read(api.SagaList, "A page of sagas, newest first", *CALLER, notes={422: BAD_CURSOR})},
    "get_saga": {"tags": ["admin"], **read(api.SagaDetail, "The saga with its step history", *CALLER,
                                           notes={404: "Unknown saga"})},
    "list_actors": {"tags": ["admin"], **read(
        api.ActorList, "Every actor of the service, where it runs and how busy it is", 401, 403, 429, 503)},
    "locate_entity": {"tags": ["admin"], **read(
        api.Location, "The shard that hosts the order or SKU, and whether it is in memory now", *CALLER,
        notes={404: "No order or SKU has this id"})},
    "retry_saga": {"status_code": 202, "tags": ["admin"], "responses": {
        202: api.answer(api.SagaAccepted, "The saga resumes from its failed step", keyed=True),
        **api.problems(*CALLER, notes={404: "Unknown saga",
                                       409: f"The saga is not FAILED (`current_status`), or {KEY_IN_FLIGHT}"})}},
    "compensate_saga": {"status_code": 202, "tags": ["admin"], "responses": {
        202: api.answer(api.SagaAccepted, "The saga compensates in the background", keyed=True),
        **api.problems(*CALLER, *BODY, notes={
            404: "Unknown saga", 409: f"The saga is COMPENSATED already (`current_status`), or {KEY_IN_FLIGHT}"})}},
    "query_events": {"tags": ["admin"], **read(api.EventPage, "A page of events in commit order", *CALLER)},
    "livez": {"tags": ["operations"], "response_model": Any,
              "responses": {200: api.answer(api.Liveness, "The replica answers")}},
    "health": {"tags": ["operations"], "responses": {
        200: api.answer(api.Health, "Every check is ok"),
        503: {**api.answer(api.Health, "A check failed (the same shape); a problem if the replica is not "
                                       "initialised"), "content": api.problem_content(503)}}},
    "metrics": {"tags": ["operations"], "response_class": PlainTextResponse, "responses": {
        200: {"description": "Prometheus text format, aggregated over every replica and actor"},
        **api.problems(503)}},
    "console": {"include_in_schema": False},
    "console_file": {"include_in_schema": False},
}
