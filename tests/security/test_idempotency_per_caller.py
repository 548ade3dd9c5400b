"""Idempotency keys belong to their caller: the same key from two customers is two requests, a repeat
by the same caller is replayed and says so, and only final answers are kept."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.conftest import customer_headers
from tests.e2e.helpers import API, product
from tests.security.test_hostile_input import burst

pytestmark = pytest.mark.ray


async def test_two_customers_with_the_same_key_get_their_own_carts(http: httpx.AsyncClient) -> None:
    key = f"cart-{uuid.uuid4()}"
    alice, alice_h = customer_headers()
    bob, bob_h = customer_headers()
    a = await http.post(f"{API}/cart", headers={**alice_h, "Idempotency-Key": key})
    b = await http.post(f"{API}/cart", headers={**bob_h, "Idempotency-Key": key})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["customer_id"] == alice and b.json()["customer_id"] == bob
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in a.headers and "idempotent-replayed" not in b.headers
    replay = await http.post(f"{API}/cart", headers={**alice_h, "Idempotency-Key": key})
    assert replay.status_code == 201 and replay.json() == a.json()
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_refusal_that_is_final_is_replayed_but_a_forbidden_body_is_not_stored_as_success(
        http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=1)
    _, headers = customer_headers()
    cart = (await http.post(f"{API}/cart", headers=headers)).json()
    key = f"checkout-{uuid.uuid4()}"
    body = {"payment_token": "tok_visa", "shipping_address": {"name": "A", "line1": "1", "city": "C",
                                                              "postal_code": "1", "country": "US"}}
    empty = await http.post(f"{API}/cart/{cart['id']}/checkout", json=body, headers={**headers, "Idempotency-Key": key})
    assert empty.status_code == 409
    again = await http.post(f"{API}/cart/{cart['id']}/checkout", json=body, headers={**headers, "Idempotency-Key": key})
    assert again.status_code == 409 and again.headers["idempotent-replayed"] == "true"
    await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 1}, headers=headers)
    fresh = await http.post(f"{API}/cart/{cart['id']}/checkout", json=body,
                            headers={**headers, "Idempotency-Key": f"{key}-2"})
    assert fresh.status_code == 202


async def test_a_429_is_not_kept_so_the_retry_does_the_work(http: httpx.AsyncClient) -> None:
    from tests.integration.ray_support import eventually

    _, headers = customer_headers()
    for _ in range(20):  # a token may refill between spending the budget and the keyed request: try again
        key = f"limited-{uuid.uuid4()}"
        answers, _ = await burst(http, headers)
        assert 429 in {r.status_code for r in answers}  # the budget is spent
        limited = await http.post(f"{API}/cart", headers={**headers, "Idempotency-Key": key})
        if limited.status_code == 429:
            break
    assert limited.status_code == 429
    retried = await eventually(lambda: http.post(f"{API}/cart", headers={**headers, "Idempotency-Key": key}),
                               lambda r: r.status_code != 429, timeout=30)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
