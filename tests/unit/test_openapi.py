"""The OpenAPI document tells the truth (no Ray): every success answer has a body schema, the status codes
are the ones the routes answer with, errors are problem+json and listed only where they can happen, every
POST takes an Idempotency-Key, the public routes ask for no credentials; and what the routes return,
driven over fakes of their services, validates against the schemas the document gives for it."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator, FormatChecker
from starlette.requests import Request

import serve_app
from actors.views import Cancelled, OrderView, Placed, ReservationView, SagaState, StockView
from commerce import schemas as api
from commerce import views
from commerce.auth import ADMIN_TOKEN, Principal, Role
from commerce.settings import Settings
from domain import cart as c
from domain import inventory as inv
from domain import order as o
from domain import saga as sg
from domain.events import Metadata, Recorded
from store.reservations import Claim
from tests.unit.test_health import HEALTHY, Provider, services

API = "/api/v1"
PUBLIC = {("get", f"{API}/inventory/{{product_id}}"), ("get", "/livez"), ("get", "/health"), ("get", "/metrics")}
# Public routes that never read the Authorization header (the catalog does: a token that comes along must be valid).
CREDENTIAL_FREE = PUBLIC - {("get", f"{API}/inventory/{{product_id}}")}
SUCCESS = {  # what each route answers with when it succeeds, read off serve_app.py
    ("post", f"{API}/inventory/{{product_id}}/reserve"): {"201"},
    ("post", f"{API}/cart"): {"201"},
    ("post", f"{API}/cart/{{cart_id}}/checkout"): {"202"},
    ("post", f"{API}/orders"): {"202"},
    ("post", f"{API}/orders/{{order_id}}/cancel"): {"200", "202"},
    ("post", f"{API}/orders/{{order_id}}/reorder"): {"201"},
    ("post", f"{API}/admin/sagas/{{saga_id}}/retry"): {"202"},
    ("post", f"{API}/admin/sagas/{{saga_id}}/compensate"): {"202"},
}
PROBLEM = "application/problem+json"
ANNOTATIONS = {"title", "description", "examples", "default", "deprecated"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


APP = serve_app.Ingress(Settings(server_secret="test")).app()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return copy.deepcopy(APP.openapi())


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


# --- the document ---------------------------------------------------------------------------------


def test_every_success_response_documents_its_body(doc: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in operations(doc):
        for status, response in operation["responses"].items():
            if not status.startswith("2"):
                continue
            content = response.get("content") or {}
            assert content, f"{method} {path} {status} documents no body"
            for media_type, media in content.items():
                schema = media.get("schema") or {}
                assert set(schema) - ANNOTATIONS, f"{method} {path} {status} {media_type}: empty schema"
                target = resolve(doc, schema)
                if "json" in media_type:  # an object whose members are named, not a free-form one
                    assert target.get("type") == "object" and target.get("properties"), (method, path, status)
                else:
                    assert target.get("type") == "string", (method, path, status, media_type)
                checked += 1
    assert checked >= 23


def test_success_status_codes_are_the_ones_the_routes_answer_with(doc: dict[str, Any]) -> None:
    for method, path, operation in operations(doc):
        documented = {s for s in operation["responses"] if s.startswith("2")}
        assert documented == SUCCESS.get((method, path), {"200"}), (method, path, documented)
    for route in APP.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods or ():
                documented = doc["paths"][route.path][method.lower()]["responses"]
                assert str(route.status_code or 200) in documented, (method, route.path)


def test_every_post_and_only_a_post_declares_the_idempotency_key(doc: dict[str, Any]) -> None:
    posts = 0
    for method, path, operation in operations(doc):
        keys = [p for p in operation.get("parameters", []) if p["name"].lower() == "idempotency-key"]
        if method != "post":
            assert keys == [], (method, path)
            continue
        posts += 1
        [key] = keys
        assert key["in"] == "header" and key.get("required", False) is False, path
        assert key["schema"]["type"] == "string" and key["schema"]["maxLength"] == 255, path
        assert key["schema"]["minLength"] == 1, path
    assert posts == 9


def test_public_routes_declare_no_security_and_every_other_route_the_bearer_scheme(doc: dict[str, Any]) -> None:
    [(name, scheme)] = doc["components"]["securitySchemes"].items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    public = set()
    for method, path, operation in operations(doc):
        if operation.get("security"):
            assert operation["security"] == [{name: []}], (method, path)
        else:
            public.add((method, path))
    assert public == PUBLIC


def test_no_operation_documents_fastapis_validation_error(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(doc)
    assert "ValidationError" not in doc["components"]["schemas"]
    for method, path, operation in operations(doc):
        takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
        if not takes_input:
            assert "422" not in operation["responses"], (method, path)
            continue
        content = operation["responses"]["422"]["content"]
        assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}}, (method, path)
    validation = resolve(doc, {"$ref": "#/components/schemas/ValidationProblem"})
    assert {"type", "title", "status", "detail", "errors"} <= set(validation["properties"])


def test_errors_are_problem_json_and_listed_only_where_they_can_happen(doc: dict[str, Any]) -> None:
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        for status, response in responses.items():
            if int(status) < 400:
                continue
            media_types = set(response["content"])
            expected = {PROBLEM, "application/json"} if (method, path, status) == ("get", "/health", "503") else {PROBLEM}
            assert media_types == expected, (method, path, status, media_types)
            assert response["content"][PROBLEM]["schema"]["$ref"].endswith(("/Problem", "/ValidationProblem"))
        body = "requestBody" in operation
        assert {"400", "413"} <= set(responses) if body else not {"400", "413"} & set(responses), (method, path)
        assert "500" not in responses, (method, path)  # never a 500 by design: no route documents one
        if (method, path) in CREDENTIAL_FREE:
            assert not {"401", "403", "429"} & set(responses), (method, path)
        elif (method, path) not in PUBLIC:
            assert {"401", "403", "429", "503"} <= set(responses), (method, path)
        # An id in the path is looked up (PUT creates the product it does not find); an order's body names products.
        looks_up = bool(re.search(r"\{\w+_id\}", path)) and (method, path) != ("put", f"{API}/inventory/{{product_id}}")
        by_body_or_query = {("post", f"{API}/orders"), ("get", f"{API}/admin/actors/locate")}
        assert ("404" in responses) == (looks_up or (method, path) in by_body_or_query), (method, path)


def test_401_is_not_documented_where_no_credentials_are_read(doc: dict[str, Any]) -> None:
    for method, path, operation in operations(doc):
        if (method, path) in CREDENTIAL_FREE:
            assert "401" not in operation["responses"], (method, path)
        else:
            assert "401" in operation["responses"], (method, path)
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True


def test_every_reference_resolves_and_the_problem_schemas_are_there(doc: dict[str, Any]) -> None:
    for ref in set(refs(doc)):
        assert resolve(doc, {"$ref": ref}), ref
    problem = resolve(doc, {"$ref": "#/components/schemas/Problem"})
    assert set(problem["required"]) == {"type", "title", "status", "detail", "instance"}


# --- what the routes return, over fakes -------------------------------------------------------------

NOW = dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.UTC)
PRODUCT, CUSTOMER, ORDER, SAGA, CART, RESERVATION = (uuid.uuid4() for _ in range(6))
SHOPPER = Principal(Role.CUSTOMER, str(CUSTOMER))
ADDRESS = o.ShippingAddress("Ada", "1 Main St", "Springfield", "12345", "US")
LINE = o.OrderLine(PRODUCT, 2, Decimal("29.99"))


def rfc3339(value: object) -> bool:
    return not isinstance(value, str) or ("T" in value and dt.datetime.fromisoformat(value).tzinfo is not None)


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(rfc3339)


def conforms(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": doc["components"]}, format_checker=FORMATS)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], (method, path, status, errors)


def answered(response: Any) -> Any:
    return json.loads(bytes(response.body)) if isinstance(response, JSONResponse) else response


def request(method: str = "GET") -> Request:
    return Request({"type": "http", "method": method, "path": "/", "headers": [], "query_string": b""})


def sku() -> inv.Sku:
    held_until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15)  # active: a reserve answers it
    reservation = inv.Reservation(RESERVATION, 2, held_until, "service:warehouse-1", 4)
    return inv.Sku(PRODUCT, "Mug", Decimal("29.99"), 100, 4, {RESERVATION: reservation}, reserved=2)


def an_order(reason: str | None = None) -> o.Order:
    status = o.OrderStatus.CANCELLED if reason else o.OrderStatus.PENDING
    return o.Order(ORDER, CUSTOMER, (LINE,), o.order_total((LINE,)), SAGA, ADDRESS, "tok_visa", status, NOW, NOW, 3,
                   reason=reason)


def a_cart(order_id: uuid.UUID | None = None, lines: int = 1) -> c.Cart:
    items = tuple(c.CartLine(uuid.uuid4(), 3, Decimal("4.50")) for _ in range(lines))
    status = c.CartStatus.CHECKED_OUT if order_id else c.CartStatus.OPEN
    return c.Cart(CART, CUSTOMER, items, status, NOW, NOW, NOW + dt.timedelta(days=7), order_id)


def recorded(position: int | None = None) -> Recorded:
    event = o.OrderCreated(ORDER, CUSTOMER, (LINE,), o.order_total((LINE,)), SAGA, ADDRESS, "tok_visa")
    return Recorded(ORDER, o.AGGREGATE_TYPE, 1, event, Metadata(uuid.uuid4(), uuid.uuid4(), ORDER, None, NOW), position)


def saga_row(n: int = 0) -> dict[str, Any]:
    return {"saga_id": SAGA, "saga_type": "order_fulfillment", "order_id": ORDER, "status": "FAILED",
            "current_step": "process_payment", "attempts": 4, "created_at": NOW - dt.timedelta(seconds=n),
            "updated_at": NOW, "saga_data": {"reason": "payment provider unavailable"},
            "steps": [{"step": "reserve_inventory", "action": "execute", "outcome": "succeeded", "attempt": 1,
                       "at": NOW, "error": None},
                      {"step": "process_payment", "action": "execute", "outcome": "failed", "attempt": 3, "at": NOW,
                       "error": "TransientFailure: provider unavailable"}]}


def order_row(n: int, reason: str | None) -> dict[str, Any]:
    view = OrderView.of(an_order(reason)).json()
    return {**view, "order_id": uuid.uuid4(), "customer_id": CUSTOMER, "saga_id": SAGA, "total_amount": Decimal("59.98"),
            "created_at": NOW - dt.timedelta(seconds=n), "updated_at": NOW, "reason": reason}


def fakes() -> Any:
    async def value(result: Any) -> Any:
        return result

    def returns(result: Any) -> Any:
        return lambda *args, **kwargs: value(result)

    async def fetch(sql: str, *args: Any) -> list[dict[str, Any]]:
        return [order_row(0, None), order_row(1, "payment declined")]

    s = sku()
    return SimpleNamespace(
        settings=Settings(server_secret="test"),
        inventory=SimpleNamespace(
            get_stock=returns(StockView.of(s)), set_stock=returns(StockView.of(s)),
            reserve=returns(ReservationView.of(s, RESERVATION)),
            release=returns(StockView.of(s)), prices=returns({PRODUCT: Decimal("29.99")})),
        direct_reservations=SimpleNamespace(claim=returns(Claim.OPEN), held=returns(None)),
        idempotency=None,  # no Idempotency-Key sent
        carts=SimpleNamespace(get=returns(a_cart(c.checkout_order_id(CART))), create=returns(a_cart(lines=0)),
                              set_line=returns(a_cart(lines=2)), begin_checkout=returns(a_cart(ORDER, lines=2)),
                              finish_checkout=returns(None)),
        orders=SimpleNamespace(get_order=returns(OrderView.of(an_order())),
                               cancel_order=returns(Cancelled(False, OrderView.of(an_order("by request")))),
                               create_order=returns(Placed(ORDER, o.OrderStatus.PENDING, SAGA)),
                               retry_saga=returns(SagaState(SAGA, sg.SagaStatus.RUNNING)),
                               compensate_saga=returns(SagaState(SAGA, sg.SagaStatus.COMPENSATING))),
        pool=SimpleNamespace(fetch=fetch),
        events=SimpleNamespace(load_stream=returns([recorded()]), query=returns([recorded(position=41)])),
        sagas=SimpleNamespace(list=returns([saga_row(0), saga_row(1)]), get=returns(saga_row())),
    )


async def test_what_the_routes_return_validates_against_the_documented_schemas(
        doc: dict[str, Any]) -> None:
    svc = fakes()
    edge = serve_app.Ingress(svc.settings)
    reserve = api.Reserve(quantity=2)
    checked = [
        ("put", "/inventory/{product_id}", 200,
         await edge.set_stock(PRODUCT, api.SetStock(on_hand=100, price="29.99"), who=ADMIN_TOKEN, svc=svc)),
        ("get", "/inventory/{product_id}", 200, await edge.get_stock(PRODUCT, request(), svc=svc)),
        ("post", "/inventory/{product_id}/reserve", 201,
         await edge.reserve(PRODUCT, reserve, request("POST"), who=ADMIN_TOKEN, svc=svc, idempotency_key=None)),
        ("post", "/inventory/{product_id}/release", 200,
         await edge.release(PRODUCT, api.Release(reservation_id=RESERVATION), request("POST"), who=ADMIN_TOKEN,
                                 svc=svc, idempotency_key=None)),
        ("post", "/cart", 201,
         await edge.create_cart(request("POST"), None, who=SHOPPER, svc=svc, idempotency_key=None)),
        ("get", "/cart/{cart_id}", 200, await edge.get_cart(CART, who=SHOPPER, svc=svc)),
        ("put", "/cart/{cart_id}/items", 200,
         await edge.set_cart_item(CART, api.SetCartItem(product_id=PRODUCT, quantity=3), who=SHOPPER, svc=svc)),
        ("delete", "/cart/{cart_id}/items/{product_id}", 200,
         await edge.remove_cart_item(CART, PRODUCT, who=SHOPPER, svc=svc)),
        ("get", "/orders/{order_id}", 200, await edge.get_order(ORDER, who=SHOPPER, svc=svc)),
        ("get", "/orders", 200, await edge.list_orders(customer_id=None, status=None, limit=1, cursor=None,
                                                            who=SHOPPER, svc=svc)),
        ("post", "/orders/{order_id}/cancel", 200,
         await edge.cancel_order(ORDER, request("POST"), None, who=SHOPPER, svc=svc, idempotency_key=None)),
        ("get", "/orders/{order_id}/events", 200, await edge.order_events(ORDER, who=SHOPPER, svc=svc)),
        ("get", "/admin/sagas", 200, await edge.list_sagas(status=None, order_id=None, limit=1, cursor=None, svc=svc)),
        ("get", "/admin/sagas/{saga_id}", 200, await edge.get_saga(SAGA, svc=svc)),
        ("get", "/admin/events", 200, await edge.query_events(aggregate_id=None, aggregate_type=None,
                                                                   event_type=None, after_position=0, limit=1, svc=svc)),
        ("post", "/cart/{cart_id}/checkout", 202,
         await edge.checkout(CART, api.Checkout(shipping_address=api.ShippingAddress(**dataclasses.asdict(ADDRESS)), payment_token="tok_visa"),
                             request("POST"), who=SHOPPER, svc=svc, idempotency_key=None)),
        ("post", "/orders", 202,
         await edge.create_order(api.CreateOrder(items=[api.OrderItem(product_id=PRODUCT, quantity=2)],
                                                 shipping_address=api.ShippingAddress(**dataclasses.asdict(ADDRESS)), payment_token="tok_visa"),
                                 request("POST"), who=SHOPPER, svc=svc, idempotency_key=None)),
        ("post", "/orders/{order_id}/reorder", 201,
         await edge.reorder(ORDER, request("POST"), who=SHOPPER, svc=svc, idempotency_key=None)),
        ("post", "/admin/sagas/{saga_id}/retry", 202,
         await edge.retry_saga(SAGA, request("POST"), who=ADMIN_TOKEN, svc=svc, idempotency_key=None)),
        ("post", "/admin/sagas/{saga_id}/compensate", 202,
         await edge.compensate_saga(SAGA, request("POST"), None, who=ADMIN_TOKEN, svc=svc, idempotency_key=None)),
    ]
    for method, path, status, response in checked:
        if isinstance(response, JSONResponse):
            assert response.status_code == status, (method, path)
        conforms(doc, method, f"{API}{path}", status, answered(response))
    conforms(doc, "get", "/livez", 200, await edge.livez())

    health = await serve_app.Ingress(svc.settings, Provider(services(HEALTHY, {"COMPLETED": 1}))).health(request())
    assert health.status_code == 200
    conforms(doc, "get", "/health", 200, answered(health))
    failing = await serve_app.Ingress(svc.settings, Provider(services(HEALTHY, {"FAILED": 1}))).health(request())
    assert failing.status_code == 503
    conforms(doc, "get", "/health", 503, answered(failing))


def test_the_schemas_refuse_what_the_routes_must_not_return(doc: dict[str, Any]) -> None:
    """The conformance above can fail: a stray member, a float for money, a naive time are each refused."""
    view = StockView.of(sku()).json()
    for wrong in ({**view, "status": "active"}, {**view, "price": 29.99}, {**view, "price": "29.9"}):
        with pytest.raises(AssertionError):
            conforms(doc, "get", f"{API}/inventory/{{product_id}}", 200, wrong)
    cart = views.cart(a_cart())
    with pytest.raises(AssertionError):
        conforms(doc, "get", f"{API}/cart/{{cart_id}}", 200, {**cart, "created_at": NOW.replace(tzinfo=None).isoformat()})
    with pytest.raises(AssertionError):
        conforms(doc, "get", f"{API}/cart/{{cart_id}}", 200, {**cart, "order_id": None})
