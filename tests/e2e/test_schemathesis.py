"""Property-based conformance of the HTTP API to its own OpenAPI document (a bounded run).

Random UUIDs in a path only ever reach "not found"; so before an operation's run, real entities are
made through the API for the principal that runs it (a product with stock, a cart with a line, an order
and its saga, a service's reservation), and about half of the generated cases use their ids as path
parameters: the success answers are then held to their documented schemas too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.conftest import ADMIN, bearer, token
from tests.e2e.helpers import ADDRESS, API

EXAMPLES_PER_OPERATION = 12
# Headers for each operation's examples: a fresh customer per operation, so that its examples (and the
# few requests that make its entities) stay within one customer's burst and reach the routes rather
# than the rate limit.
PRINCIPALS: dict[str, Callable[[], dict[str, str]]] = {
    "admin": lambda: ADMIN,
    "customer": lambda: bearer(token(str(uuid.uuid4()), ttl=3600)),
    "service": lambda: bearer(token("warehouse-schemathesis", role="service", ttl=3600)),
    "anonymous": lambda: {},
}
SHOPPERS = {"admin", "customer"}  # who may own carts and orders (an admin acting for a customer)
STOCKISTS = {"admin", "service"}  # who may reserve and release stock
PATH_PARAMETER = re.compile(r"\{(\w+)\}")


@pytest.mark.ray
@pytest.mark.parametrize("principal", list(PRINCIPALS))
def test_every_operation_answers_within_its_schema_and_never_with_a_server_error(api: str, principal: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    failures: dict[str, str] = {}
    unreached: list[str] = []
    checked = 0
    with httpx.Client(base_url=api, timeout=60) as client:
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                failures[f"unreadable operation {len(failures)}"] = str(result.err())[:2000]
                continue
            operation = result.ok()
            headers = PRINCIPALS[principal]()
            try:
                real, body = entities(client, principal, headers, operation.method.upper(), operation.path)
                answered: list[tuple[bool, int]] = []
                conformance(operation, headers, real, body, answered)()
                if reached_expected(principal, operation.method.upper(), real) and not any(
                        pinned and 200 <= status < 300 for pinned, status in answered):
                    unreached.append(f"{operation.label}: {sorted(set(answered))}")
            except Exception as e:  # collect every operation's failure, then report them together
                failures[operation.label] = f"{type(e).__name__}: {e}"[:2000]
            checked += 1
    assert checked >= 18
    assert failures == {}
    # The real ids must lead somewhere: a read of an entity the principal owns answers 2xx at least once.
    assert unreached == []


def conformance(operation: Any, headers: dict[str, str], real: dict[str, str], body: dict[str, str] | None,
                answered: list[tuple[bool, int]]) -> Callable[[], None]:
    @given(cases(operation, real, body))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: schemathesis.Case[Any]) -> None:
        # Schema-valid input may still be refused on meaning (an opaque cursor that was never issued,
        # stock below what is reserved, a name of blanks): that check is left out; every other one applies,
        # the response schema's included.
        response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
        pinned = bool(real) and all(case.path_parameters.get(k) == v for k, v in real.items())
        answered.append((pinned, response.status_code))

    return conforms  # type: ignore[no-any-return]


def cases(operation: Any, real: dict[str, str], body: dict[str, str] | None) -> Any:
    """The operation's generated cases; when there are real ids for its path, about half of them (a draw of
    the derandomized run, so the same ones each time) use those ids instead of generated ones."""
    generated = operation.as_strategy()
    if not real:
        return generated
    explicit: dict[str, Any] = {"body": body, "media_type": "application/json"} if body is not None else {}
    return st.one_of(generated, operation.as_strategy(path_parameters=real, **explicit))


def reached_expected(principal: str, method: str, real: dict[str, str]) -> bool:
    """Whether a read with these ids must succeed for this principal: its own cart or order, the catalog,
    a saga for the admin. (A write may be refused on meaning, e.g. a generated body of blanks.)"""
    if method != "GET" or not real:
        return False
    if set(real) == {"product_id"}:
        return True  # the catalog is open to everyone
    return principal in SHOPPERS if "saga_id" not in real else principal == "admin"


def entities(client: httpx.Client, principal: str, headers: dict[str, str], method: str,
             path: str) -> tuple[dict[str, str], dict[str, str] | None]:
    """Real ids for the operation's path parameters, owned by the principal that runs it (a customer sees
    only its own carts and orders; an admin acts for a customer of its own), and for a release the body
    that names a reservation of the principal's. Only what the operation's path names is made."""
    names = set(PATH_PARAMETER.findall(path))
    ids: dict[str, str] = {}
    shopper = principal in SHOPPERS
    wants_cart = "cart_id" in names and shopper
    wants_order = ("order_id" in names and shopper) or ("saga_id" in names and principal == "admin")
    releases = method == "POST" and path.endswith("/release") and principal in STOCKISTS
    if not ("product_id" in names or wants_cart or wants_order):
        return {}, None
    product = str(uuid.uuid4())  # the admin's product: anyone reads it, carts and orders hold it
    made(client.put(f"{API}/inventory/{product}", json={"on_hand": 1_000_000, "price": "9.99", "name": "Mug"},
                    headers=ADMIN), 200)
    ids["product_id"] = product
    for_customer = {"customer_id": str(uuid.uuid4())} if principal == "admin" else {}
    if wants_cart:
        cart = made(client.post(f"{API}/cart", json=for_customer, headers=headers), 201)["id"]
        made(client.put(f"{API}/cart/{cart}/items", json={"product_id": product, "quantity": 1}, headers=headers), 200)
        ids["cart_id"] = cart
    if wants_order:
        order = {**for_customer, "items": [{"product_id": product, "quantity": 1}], "payment_token": "tok_visa",
                 "shipping_address": ADDRESS}
        placed = made(client.post(f"{API}/orders", json=order, headers=headers), 202)
        ids["order_id"], ids["saga_id"] = placed["order_id"], placed["saga_id"]
    body = None
    if releases:
        reservation = made(client.post(f"{API}/inventory/{product}/reserve", json={"quantity": 1}, headers=headers), 201)
        body = {"reservation_id": reservation["reservation_id"]}
    return {name: value for name, value in ids.items() if name in names}, body


def made(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()  # type: ignore[no-any-return]
