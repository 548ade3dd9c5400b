"""A dependency outage answers 503 with Retry-After and loses nothing; service resumes when it is back.

What was written before the outage is read back after it, a saga in flight at the outage finishes, and
the very request that got the 503 succeeds when retried. The servers stopped here are embedded ones
this test starts itself, never the machine's; the service's actors run on the session's Ray over them.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.e2e.conftest import customer_headers
from tests.integration.conftest import ADDRESS, Deployment
from tests.integration.ray_support import eventually
from tests.support import provider_calls_held

pytestmark = pytest.mark.ray

def order(pid: str, customer: str, token: str = "tok_visa") -> dict[str, object]:
    return {"customer_id": customer, "items": [{"product_id": pid, "quantity": 1}], "payment_token": token,
            "shipping_address": ADDRESS}


async def status_of(http: httpx.AsyncClient, order_id: str) -> str:
    r = await http.get(f"/api/v1/orders/{order_id}")
    return str(r.json().get("status")) if r.status_code == 200 else f"http {r.status_code}"


async def test_redis_down_answers_503_and_what_was_written_is_back_with_redis(
        service_over_embedded: Deployment) -> None:
    http, rd = service_over_embedded.http, service_over_embedded.redis
    pid = str(uuid.uuid4())
    assert (await http.put(f"/api/v1/inventory/{pid}", json={"on_hand": 5, "price": "2.00"})).status_code == 200
    cart = (await http.post("/api/v1/cart", json={"customer_id": str(uuid.uuid4())})).json()
    await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 2})
    rd.stop()
    down = await http.get(f"/api/v1/cart/{cart['id']}")
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.headers["content-type"] == "application/problem+json"
    keyed = {"json": {"customer_id": str(uuid.uuid4())}, "headers": {"Idempotency-Key": f"cart-{uuid.uuid4()}"}}
    assert (await http.post("/api/v1/cart", **keyed)).status_code == 503  # type: ignore[arg-type]
    rd.start()
    back = (await http.get(f"/api/v1/cart/{cart['id']}")).json()
    assert [(x["product_id"], x["quantity"]) for x in back["items"]] == [(pid, 2)]
    # The key's request failed, but it may have done its work: the key stays that request's, not another's.
    reused = await http.post("/api/v1/cart", json={"customer_id": str(uuid.uuid4())}, headers=keyed["headers"])
    assert reused.status_code == 422 and reused.json()["type"].endswith("/idempotency-key-reused")
    retried = await http.post("/api/v1/cart", **keyed)  # type: ignore[arg-type]
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


async def test_postgres_down_answers_503_a_saga_in_flight_finishes_and_the_refused_post_succeeds_when_retried(
        service_over_embedded: Deployment) -> None:
    http, pg = service_over_embedded.http, service_over_embedded.pg
    pid, customer = str(uuid.uuid4()), str(uuid.uuid4())
    assert (await http.put(f"/api/v1/inventory/{pid}", json={"on_hand": 10, "price": "2.00"})).status_code == 200
    # Each saga stops at its charge, in flight when the server stops.
    async with provider_calls_held(service_over_embedded.ingress.settings.database_url):
        placed_before = await asyncio.gather(*[http.post("/api/v1/orders", json=order(pid, customer, "tok_flaky"))
                                               for _ in range(5)])
        before = [r.json()["order_id"] for r in placed_before]
        _, alice = customer_headers()
        cart = (await http.post("/api/v1/cart", headers=alice)).json()
        held = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 2},
                               headers=alice)).json()
        pg.stop()
    read = await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)  # a read needs Redis only
    assert read.status_code == 200 and read.json() == held
    assert (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 3},
                           headers=alice)).status_code == 503  # a change is recorded, or not made
    in_flight = [await status_of(http, o) for o in before]
    assert set(in_flight) <= {"PENDING", "INVENTORY_RESERVED"}
    down = await http.get("/api/v1/orders", params={"customer_id": customer})
    assert down.status_code == 503 and down.headers["retry-after"]
    refused = {"json": order(pid, customer), "headers": {"Idempotency-Key": f"order-{uuid.uuid4()}"}}
    assert (await http.post("/api/v1/orders", **refused)).status_code == 503  # type: ignore[arg-type]
    assert (await http.get("/api/v1/admin/sagas")).status_code == 503
    pg.start()
    retried = await http.post("/api/v1/orders", **refused)  # type: ignore[arg-type]
    assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers
    placed = [*before, retried.json()["order_id"]]
    finished = await eventually(lambda: asyncio.gather(*[status_of(http, o) for o in placed]),
                                lambda s: set(s) <= {"CONFIRMED", "CANCELLED"}, timeout=90)
    assert finished == ["CONFIRMED"] * 6
    stock = (await http.get(f"/api/v1/inventory/{pid}")).json()
    assert (stock["on_hand"], stock["reserved"]) == (4, 0)
