"""Who may do what, tried over HTTP with real tokens: another customer's cart and order are not there,
a body may not speak for someone else, anonymous callers get the public routes only."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.conftest import ADMIN, bearer, customer_headers, token
from tests.e2e.helpers import ADDRESS, API, order_body, order_status, product

pytestmark = pytest.mark.ray


async def nothing_was_placed_for(http: httpx.AsyncClient, customer: str, pid: str) -> None:
    """Place a marker order for the customer and wait until the read model shows it: the projection is
    ordered, so an order placed before the marker would show up first."""
    from tests.integration.ray_support import eventually

    marker = (await http.post(f"{API}/orders", json=order_body(pid, customer=customer))).json()["order_id"]
    listed = await eventually(lambda: http.get(f"{API}/orders", params={"customer_id": customer}),
                              lambda r: any(o["order_id"] == marker for o in r.json()["items"]))
    assert [o["order_id"] for o in listed.json()["items"]] == [marker]


async def own_order(http: httpx.AsyncClient, headers: dict[str, str], pid: str) -> dict[str, str]:
    body = order_body(pid)
    del body["customer_id"]
    r = await http.post(f"{API}/orders", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_another_customers_order_is_not_found_for_reading_events_or_cancelling(
        http: httpx.AsyncClient) -> None:
    pid = await product(http)
    alice, alice_h = customer_headers()
    _, mallory_h = customer_headers()
    placed = await own_order(http, alice_h, pid)
    order_id = placed["order_id"]
    assert (await http.get(f"{API}/orders/{order_id}", headers=alice_h)).json()["customer_id"] == alice
    for method, path in (("GET", f"/orders/{order_id}"), ("GET", f"/orders/{order_id}/events"),
                         ("POST", f"/orders/{order_id}/cancel")):
        r = await http.request(method, f"{API}{path}", headers=mallory_h)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
    order = await order_status(http, order_id, {"CONFIRMED", "CANCELLED"})
    assert order["status"] == "CONFIRMED"  # the cancel attempt changed nothing


async def test_a_customer_lists_only_its_own_orders_and_may_not_ask_for_anothers(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    alice, alice_h = customer_headers()
    _, bob_h = customer_headers()
    mine = await own_order(http, alice_h, pid)
    await own_order(http, bob_h, pid)

    async def listed() -> list[str]:
        r = await http.get(f"{API}/orders", headers=alice_h)
        assert r.status_code == 200
        return [o["order_id"] for o in r.json()["items"]]

    from tests.integration.ray_support import eventually
    assert await eventually(listed, lambda ids: len(ids) >= 1) == [mine["order_id"]]
    r = await http.get(f"{API}/orders", params={"customer_id": str(uuid.uuid4())}, headers=alice_h)
    assert r.status_code == 403
    assert (await http.get(f"{API}/orders", params={"customer_id": alice}, headers=alice_h)).status_code == 200


async def test_another_customers_cart_can_be_neither_read_nor_changed_nor_checked_out(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    _, alice_h = customer_headers()
    _, mallory_h = customer_headers()
    cart = (await http.post(f"{API}/cart", headers=alice_h)).json()
    await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 2}, headers=alice_h)
    attempts = (
        ("GET", f"/cart/{cart['id']}", None),
        ("PUT", f"/cart/{cart['id']}/items", {"product_id": pid, "quantity": 9}),
        ("DELETE", f"/cart/{cart['id']}/items/{pid}", None),
        ("POST", f"/cart/{cart['id']}/checkout", {"payment_token": "tok_visa", "shipping_address": ADDRESS}),
    )
    for method, path, body in attempts:
        r = await http.request(method, f"{API}{path}", json=body, headers=mallory_h)
        assert r.status_code == 404, path
    after = (await http.get(f"{API}/cart/{cart['id']}", headers=alice_h)).json()
    assert after["status"] == "OPEN" and [(x["product_id"], x["quantity"]) for x in after["items"]] == [(pid, 2)]


async def test_a_body_customer_id_that_is_not_the_callers_is_forbidden(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    _, headers = customer_headers()
    someone_else = str(uuid.uuid4())
    r = await http.post(f"{API}/orders", json=order_body(pid, customer=someone_else), headers=headers)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert (await http.post(f"{API}/cart", json={"customer_id": someone_else}, headers=headers)).status_code == 403
    await nothing_was_placed_for(http, someone_else, pid)


async def test_an_admin_acts_for_a_customer_who_then_sees_the_order(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    customer, headers = customer_headers()
    placed = (await http.post(f"{API}/orders", json=order_body(pid, customer=customer))).json()
    seen = await http.get(f"{API}/orders/{placed['order_id']}", headers=headers)
    assert seen.status_code == 200 and seen.json()["customer_id"] == customer
    no_customer = order_body(pid)
    del no_customer["customer_id"]
    assert (await http.post(f"{API}/orders", json=no_customer)).status_code == 422


async def test_anonymous_callers_get_only_the_public_routes(anonymous: httpx.AsyncClient,
                                                            http: httpx.AsyncClient) -> None:
    pid = await product(http)
    for path in (f"/inventory/{pid}",):
        assert (await anonymous.get(f"{API}{path}")).status_code == 200
    for path in ("/livez", "/health", "/metrics", "/docs", "/openapi.json"):
        assert (await anonymous.get(path)).status_code == 200, path
    closed = (("GET", "/orders", None), ("POST", "/orders", order_body(pid)), ("POST", "/cart", {}),
              ("GET", f"/cart/{uuid.uuid4()}", None), ("GET", f"/orders/{uuid.uuid4()}/events", None),
              ("POST", f"/inventory/{pid}/reserve", {"quantity": 1}),
              ("POST", f"/inventory/{pid}/release", {"reservation_id": str(uuid.uuid4())}),
              ("GET", "/admin/sagas", None), ("PUT", f"/inventory/{pid}", {"on_hand": 1, "price": "1.00"}))
    for method, path, body in closed:
        r = await anonymous.request(method, f"{API}{path}", json=body)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["status"] == 401
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 10


async def test_each_role_is_kept_to_its_own_routes(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    _, customer = customer_headers()
    service = bearer(token("warehouse-1", role="service"))
    assert (await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 1}, headers=customer)).status_code == 403
    assert (await http.get(f"{API}/admin/sagas", headers=customer)).status_code == 403
    assert (await http.put(f"{API}/inventory/{pid}", json={"on_hand": 99, "price": "0.01"},
                           headers=service)).status_code == 403
    assert (await http.post(f"{API}/orders", json=order_body(pid), headers=service)).status_code == 403
    assert (await http.get(f"{API}/orders", headers=service)).status_code == 403
    admin_jwt = bearer(token("ops-1", role="admin"))
    assert (await http.get(f"{API}/admin/sagas", headers=admin_jwt)).status_code == 200
    stock = (await http.get(f"{API}/inventory/{pid}", headers=ADMIN)).json()
    assert (stock["on_hand"], stock["reserved"], stock["price"]) == (10, 0, "29.99")


async def test_health_shows_details_to_an_admin_only(anonymous: httpx.AsyncClient, http: httpx.AsyncClient) -> None:
    public = (await anonymous.get("/health")).json()
    assert set(public["checks"]) == {"postgres", "redis", "event_store", "sagas", "actors"}
    assert all(set(check) == {"status"} and check["status"] in ("ok", "fail") for check in public["checks"].values())
    _, customer = customer_headers()
    assert (await anonymous.get("/health", headers=customer)).json() == public
    detailed = (await http.get("/health")).json()
    assert "projections" in detailed["checks"]["event_store"] and "counts" in detailed["checks"]["sagas"]
