"""No client can break the stock promise: sold units stay sold, a reservation id means one thing,
and an order's reservations cannot be reached, pre-claimed or released through the API."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from commerce.http import derived_id
from commerce.settings import Settings
from domain import fulfilment
from store.event_store import PostgresEventStore, create_pool
from store.idempotency import IdempotencyStore, fingerprint
from tests.e2e.conftest import ADMIN, bearer, customer_headers, token
from tests.e2e.helpers import API, order_body, order_status, product

pytestmark = pytest.mark.ray

WAREHOUSE = bearer(token("warehouse-1", role="service"))
POS = bearer(token("point-of-sale-7", role="service"))


async def stock(http: httpx.AsyncClient, pid: str) -> tuple[int, int, int]:
    s = (await http.get(f"{API}/inventory/{pid}")).json()
    return s["on_hand"], s["reserved"], s["available"]


async def sold_order(http: httpx.AsyncClient, pid: str, qty: int) -> list[dict[str, object]]:
    placed = (await http.post(f"{API}/orders", json=order_body(pid, qty=qty))).json()
    await order_status(http, placed["order_id"], {"CONFIRMED"})
    events = (await http.get(f"{API}/orders/{placed['order_id']}/events")).json()["items"]
    reserved = next(e for e in events if e["event_type"] == "InventoryReserved")
    return reserved["data"]["reservations"]  # type: ignore[no-any-return]


async def test_a_sold_reservation_cannot_be_released_by_anyone(http: httpx.AsyncClient,
                                                               anonymous: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    [line] = await sold_order(http, pid, 5)
    assert await stock(http, pid) == (0, 0, 0)
    body = {"reservation_id": line["reservation_id"]}
    assert (await anonymous.post(f"{API}/inventory/{pid}/release", json=body)).status_code == 401
    service = await http.post(f"{API}/inventory/{pid}/release", json=body, headers=WAREHOUSE)
    assert service.status_code == 404  # an order's reservation does not exist for a service
    admin = await http.post(f"{API}/inventory/{pid}/release", json=body, headers=ADMIN)
    assert admin.status_code == 409 and admin.json()["type"].endswith("/reservation-committed")
    assert await stock(http, pid) == (0, 0, 0)


async def test_a_stock_change_that_names_the_version_it_read_cannot_put_sold_units_back(
        http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=10, price="5.00")
    read = (await http.get(f"{API}/inventory/{pid}")).json()
    await sold_order(http, pid, 4)  # sold after the admin's read
    stale = await http.put(f"{API}/inventory/{pid}",
                           json={"on_hand": 10, "price": "6.00", "expected_version": read["version"]})
    assert stale.status_code == 409 and stale.json()["type"].endswith("/version-conflict")
    now = (await http.get(f"{API}/inventory/{pid}")).json()
    assert stale.json()["current_version"] == now["version"] > read["version"]
    assert (now["on_hand"], now["price"]) == (6, "5.00")  # the refusal changed nothing
    fresh = await http.put(f"{API}/inventory/{pid}",
                           json={"on_hand": now["on_hand"], "price": "6.00", "expected_version": now["version"]})
    assert fresh.status_code == 200 and (fresh.json()["on_hand"], fresh.json()["price"]) == (6, "6.00")
    new = str(uuid.uuid4())
    assert (await http.put(f"{API}/inventory/{new}", json={"on_hand": 1, "price": "1.00", "expected_version": 1})
            ).status_code == 409  # a product that does not exist yet is at version 0
    assert (await http.get(f"{API}/inventory/{new}")).status_code == 404


async def test_a_reservation_id_is_the_same_reservation_only_for_its_caller_product_and_quantity(
        http: httpx.AsyncClient) -> None:
    pid, other = await product(http, on_hand=10), await product(http, on_hand=10)
    rid = str(uuid.uuid4())
    first = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 2, "reservation_id": rid},
                            headers=WAREHOUSE)
    assert first.status_code == 201
    again = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 2, "reservation_id": rid},
                            headers=WAREHOUSE)
    assert again.status_code == 201 and again.json() == first.json()
    reuses = ((pid, 3, WAREHOUSE), (pid, 2, POS), (other, 2, WAREHOUSE))
    for product_id, qty, headers in reuses:
        r = await http.post(f"{API}/inventory/{product_id}/reserve", json={"quantity": qty, "reservation_id": rid},
                            headers=headers)
        assert r.status_code == 409 and r.json()["type"].endswith("/reservation-id-conflict"), (product_id, qty)
    assert await stock(http, pid) == (10, 2, 8)
    assert await stock(http, other) == (10, 0, 10)


async def test_a_reserve_sent_again_after_its_reservation_ended_says_so_and_holds_nothing(
        http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=10)
    rid = str(uuid.uuid4())
    body = {"quantity": 3, "reservation_id": rid}
    assert (await http.post(f"{API}/inventory/{pid}/reserve", json=body, headers=WAREHOUSE)).status_code == 201
    released = await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": rid}, headers=WAREHOUSE)
    assert released.status_code == 200 and await stock(http, pid) == (10, 0, 10)
    again = await http.post(f"{API}/inventory/{pid}/reserve", json=body, headers=WAREHOUSE)  # a late retry
    assert again.status_code == 409 and again.json()["type"].endswith("/reservation-closed")
    assert await stock(http, pid) == (10, 0, 10)  # it holds nothing, and it says so
    refused = str(uuid.uuid4())  # an id whose reserve was refused holds nothing, and may be tried again
    short = {"quantity": 11, "reservation_id": refused}
    assert (await http.post(f"{API}/inventory/{pid}/reserve", json=short, headers=WAREHOUSE)).status_code == 409
    await http.put(f"{API}/inventory/{pid}", json={"on_hand": 20, "price": "29.99"})
    assert (await http.post(f"{API}/inventory/{pid}/reserve", json=short, headers=WAREHOUSE)).status_code == 201
    assert await stock(http, pid) == (20, 11, 9)


async def test_only_the_caller_that_reserved_or_an_admin_releases(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=10)
    mine = (await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 3}, headers=WAREHOUSE)).json()
    body = {"reservation_id": mine["reservation_id"]}
    assert (await http.post(f"{API}/inventory/{pid}/release", json=body, headers=POS)).status_code == 404
    assert await stock(http, pid) == (10, 3, 7)
    assert (await http.post(f"{API}/inventory/{pid}/release", json=body, headers=WAREHOUSE)).json()["available"] == 10
    theirs = (await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 4}, headers=POS)).json()
    released = await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": theirs["reservation_id"]},
                               headers=ADMIN)
    assert released.status_code == 200 and await stock(http, pid) == (10, 0, 10)


@pytest.mark.parametrize("ordered", [1, 5000])
async def test_a_pre_claimed_order_reservation_id_cannot_cause_an_oversell(
        http: httpx.AsyncClient, actor_settings: Settings, ordered: int) -> None:
    """Even with the server secret and the database in hand (the worst case: the id also depends on the key's
    salt, which the database alone knows), an attacker who reserves 1 unit under the id that an order will use
    can neither have that order take the attacker's unit as its own (ordering 1) nor pass for 5,000 units
    with 5 on hand."""
    pid = await product(http, on_hand=5)
    customer, headers = customer_headers()
    key = f"attack-{uuid.uuid4()}"
    scope = f"customer:{customer} POST {API}/orders"
    body = order_body(pid, qty=ordered)
    del body["customer_id"]
    pool = await create_pool(actor_settings.database_url, 1)
    try:  # the key claimed and released, as a request that failed would leave it: its retry takes it over
        keys = IdempotencyStore(PostgresEventStore(pool))
        _, salt = await keys.claim_salted(scope, key, fingerprint("POST", f"{API}/orders", json.dumps(body).encode()))
        await keys.release(scope, key)
    finally:
        await pool.close()
    order_id = derived_id(actor_settings.derived_key("idempotency"), scope, key, salt)
    planned = fulfilment.reservation_id(actor_settings.derived_key("order-reservations"), fulfilment.saga_id_of(order_id),
                                        uuid.UUID(pid))
    claim = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 1, "reservation_id": str(planned)},
                            headers=WAREHOUSE)
    assert claim.status_code == 201
    placed = await http.post(f"{API}/orders", json=body, headers={**headers, "Idempotency-Key": key})
    assert placed.status_code == 202 and placed.json()["order_id"] == str(order_id)
    order = await order_status(http, str(order_id), {"CONFIRMED", "CANCELLED"})
    assert order["status"] == "CANCELLED"
    assert await stock(http, pid) == (5, 1, 4)  # only the attacker's own unit is held; nothing was sold
    release = await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": str(planned)},
                              headers=WAREHOUSE)
    assert release.status_code == 200 and await stock(http, pid) == (5, 0, 5)  # the order did not take it


async def test_order_ids_derived_from_a_key_differ_per_caller_and_cannot_be_computed_from_public_constants(
        http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=10)
    key = f"shared-{uuid.uuid4()}"
    ids = set()
    for _ in range(2):
        _, headers = customer_headers()
        body = order_body(pid)
        del body["customer_id"]
        r = await http.post(f"{API}/orders", json=body, headers={**headers, "Idempotency-Key": key})
        assert r.status_code == 202
        ids.add(r.json()["order_id"])
    assert len(ids) == 2
    public = uuid.uuid5(uuid.UUID("3d5c1f0e-7a2b-4e8c-9f61-0b4a7d2e5c93"), f"POST {API}/orders\n{key}")
    assert str(public) not in ids
