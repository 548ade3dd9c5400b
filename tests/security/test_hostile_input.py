"""Hostile input is a 4xx problem and changes nothing: bad tokens, control characters, bytes that are
not UTF-8, cursors never handed out, unknown routes and methods, and bursts over a customer's budget."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import math
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import ADMIN, bearer, customer_headers, token
from tests.e2e.helpers import ADDRESS, API, order_body, product
from tests.security.test_access_rules import nothing_was_placed_for

pytestmark = pytest.mark.ray

PROBLEM = "application/problem+json"


def bad_tokens() -> dict[str, str]:
    customer = str(uuid.uuid4())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(
        f'{{"sub":"{customer}","role":"admin","exp":{int(dt.datetime.now(dt.UTC).timestamp()) + 600}}}'.encode()
    ).rstrip(b"=").decode()
    return {
        "expired": token(customer, ttl=-120),
        "wrong key": token(customer, secret="another-secret-0123456789abcdef0123456789"),
        "alg none": f"{header}.{payload}.",
        "RS256 from a stranger": jwt.encode({"sub": customer, "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)},
                                            pem, algorithm="RS256"),
        "garbage": "not-a-token",
        "no exp": jwt.encode({"sub": customer}, "test-jwt-secret-0123456789abcdef0123456789", algorithm="HS256"),
        "unknown role": token(customer, role="root"),
        "customer sub not a uuid": token("alice"),
        "non-ascii": "ey\u00e9\u00e8.\u00fc\u00f1i.c\u00f6de",
    }


@pytest.mark.parametrize("name", list(bad_tokens()))
async def test_a_bad_token_is_a_401_problem(anonymous: httpx.AsyncClient, name: str) -> None:
    value = bad_tokens()[name]
    r = await anonymous.get(f"{API}/orders", headers={"Authorization": f"Bearer {value}".encode("latin-1")})
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == PROBLEM and r.headers["www-authenticate"] == "Bearer"


async def test_a_token_within_the_leeway_is_still_accepted(anonymous: httpx.AsyncClient) -> None:
    r = await anonymous.get(f"{API}/orders", headers=bearer(token(str(uuid.uuid4()), ttl=-5)))
    assert r.status_code == 200


async def test_control_characters_in_strings_are_refused_and_nothing_is_created(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    customer, headers = customer_headers()
    for field, value in (("name", "Ada\u0000"), ("line1", "1 Main\u0007St"), ("city", "Spring\nfield")):
        body = {**order_body(pid), "shipping_address": {**ADDRESS, field: value}}
        del body["customer_id"]
        r = await http.post(f"{API}/orders", json=body, headers=headers)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, field
    r = await http.post(f"{API}/orders", json={**order_body(pid, customer=customer), "payment_token": "tok_\u0000visa"})
    assert r.status_code == 422
    cancel = await http.post(f"{API}/orders/{uuid.uuid4()}/cancel", json={"reason": "x\u0000"})
    assert cancel.status_code == 422
    events = await http.get(f"{API}/admin/events", params={"event_type": "Order\u0000Created"})
    assert events.status_code == 422
    await nothing_was_placed_for(http, customer, pid)


async def test_a_body_that_is_not_utf8_is_a_bad_request(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    raw = b'{"on_hand": 3, "price": "1.00", "name": "Caf\xe9"}'
    r = await http.put(f"{API}/inventory/{pid}", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    utf16 = '{"on_hand": 3, "price": "1.00"}'.encode("utf-16")
    assert (await http.put(f"{API}/inventory/{pid}", content=utf16,
                           headers={"content-type": "application/json"})).status_code == 400
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 10


async def test_a_json_body_sent_as_another_media_type_is_a_415_that_says_so(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    body = b'{"on_hand": 3, "price": "1.00"}'
    for media in ("text/plain", None):
        headers = {"content-type": media} if media else {}
        r = await http.put(f"{API}/inventory/{pid}", content=body, headers=headers)
        assert r.status_code == 415 and r.headers["content-type"] == PROBLEM, (media, r.text)
        assert "application/json" in r.json()["detail"]
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 10
    assert (await http.put(f"{API}/inventory/{pid}", content=body,
                           headers={"content-type": "application/json; charset=utf-8"})).status_code == 200


@pytest.mark.parametrize("cursor", [
    "!!!", base64.urlsafe_b64encode(b"\xff\xfe").decode(), base64.urlsafe_b64encode(b'["x"]').decode(),
    base64.urlsafe_b64encode(b"[1, 2]").decode(), base64.urlsafe_b64encode(b'{"a": 1, "b": 2}').decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "not-a-uuid"]').decode(),
    base64.urlsafe_b64encode(b"[" * 300 + b"]" * 300).decode()[:500],
    base64.urlsafe_b64encode(b'["99999-01-01", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]').decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", 5]').decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", {"a": 1}]').decode(),
    base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+14:00", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]').decode(),
    base64.urlsafe_b64encode(b'["9999-12-31T23:59:59-14:00", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]').decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]').decode(),
])
async def test_a_cursor_that_was_never_handed_out_is_a_422(http: httpx.AsyncClient, cursor: str) -> None:
    for path in ("/orders", "/admin/sagas"):
        r = await http.get(f"{API}{path}", params={"cursor": cursor})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, r.text)


async def test_unknown_routes_and_wrong_methods_are_problems(anonymous: httpx.AsyncClient) -> None:
    missing = await anonymous.get(f"{API}/nowhere")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["status"] == 404
    wrong = await anonymous.delete("/health")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == PROBLEM
    assert wrong.json()["status"] == 405 and "allow" in wrong.headers


async def test_an_order_beyond_the_limits_is_refused(http: httpx.AsyncClient) -> None:
    pid = await product(http, price="9999999999.99")
    split = {**order_body(pid), "items": [{"product_id": pid, "quantity": 6000}] * 2}
    assert (await http.post(f"{API}/orders", json=split)).status_code == 422
    costly = order_body(pid, qty=2)
    r = await http.post(f"{API}/orders", json=costly)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    cheap = await product(http)
    await nothing_was_placed_for(http, costly["customer_id"], cheap)


async def test_a_checkout_refused_for_good_leaves_the_cart_open(http: httpx.AsyncClient) -> None:
    pid = await product(http, price="9999999999.99")
    _, headers = customer_headers()
    cart = (await http.post(f"{API}/cart", headers=headers)).json()
    await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 2}, headers=headers)
    body = {"payment_token": "tok_visa", "shipping_address": ADDRESS}
    refused = await http.post(f"{API}/cart/{cart['id']}/checkout", json=body, headers=headers)
    assert refused.status_code == 422
    after = (await http.get(f"{API}/cart/{cart['id']}", headers=headers)).json()
    assert after["status"] == "OPEN" and "order_id" not in after
    fixed = await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 1}, headers=headers)
    assert fixed.status_code == 200
    assert (await http.post(f"{API}/cart/{cart['id']}/checkout", json=body, headers=headers)).status_code == 202


async def test_a_reserve_of_an_unknown_product_is_a_404_that_leaves_its_id_as_it_was(http: httpx.AsyncClient) -> None:
    warehouse = bearer(token("w-unknown", role="service"))
    rid = str(uuid.uuid4())
    unknown = await http.post(f"{API}/inventory/{uuid.uuid4()}/reserve", json={"reservation_id": rid, "quantity": 2},
                              headers=warehouse)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    pid = await product(http, on_hand=5)  # the id was never registered: it is free for another reservation
    held = await http.post(f"{API}/inventory/{pid}/reserve", json={"reservation_id": rid, "quantity": 3},
                           headers=warehouse)
    assert held.status_code == 201 and held.json()["quantity"] == 3
    reused = await http.post(f"{API}/inventory/{uuid.uuid4()}/reserve", json={"reservation_id": rid, "quantity": 3},
                             headers=warehouse)  # now the id is that reservation's, whatever the product
    assert reused.status_code == 409 and reused.json()["type"].endswith("/reservation-id-conflict")


async def test_an_id_of_another_kind_is_not_found_rather_than_a_server_error(http: httpx.AsyncClient,
                                                                             anonymous: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=200)
    for _ in range(12):  # enough events for a snapshot of the SKU (every 10 in the tests' settings)
        await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 1}, headers=bearer(token("w", role="service")))
    for path in (f"/orders/{pid}", f"/orders/{pid}/events"):
        r = await http.get(f"{API}{path}")
        assert r.status_code == 404, path
    assert (await http.post(f"{API}/orders/{pid}/cancel")).status_code == 404
    order_id = (await http.post(f"{API}/orders", json=order_body(pid))).json()["order_id"]
    assert (await anonymous.get(f"{API}/inventory/{order_id}")).status_code == 404


async def burst(http: httpx.AsyncClient, headers: dict[str, str], n: int = 300) -> tuple[list[httpx.Response], float]:
    """Far more requests than a budget's burst (40), 20 at a time, as a hostile client sends them (one after the
    other, a slow machine could send them no faster than the budget refills, 20/s), and the seconds they took."""
    gate = asyncio.Semaphore(20)

    async def get() -> httpx.Response:
        async with gate:
            return await http.get(f"{API}/orders", headers=headers)

    started = time.monotonic()
    answers = await asyncio.gather(*[get() for _ in range(n)])
    return answers, time.monotonic() - started


async def test_a_burst_over_a_customers_budget_is_a_429_with_retry_after(http: httpx.AsyncClient) -> None:
    _, headers = customer_headers()
    answers, seconds = await burst(http, headers)
    assert {r.status_code for r in answers} == {200, 429}
    # The burst, and no more than what refilled while the requests ran.
    assert 40 <= sum(r.status_code == 200 for r in answers) <= 40 + math.ceil(20 * seconds) + 1
    for r in (r for r in answers if r.status_code == 429):
        assert r.headers["content-type"] == PROBLEM and int(r.headers["retry-after"]) >= 1
    _, other = customer_headers()
    assert (await http.get(f"{API}/orders", headers=other)).status_code == 200  # budgets are per customer
    assert (await http.get(f"{API}/orders", headers=ADMIN)).status_code == 200  # admins are not limited


async def test_numbers_that_are_not_json_integers_or_ascii_digits_are_refused_and_change_nothing(
        http: httpx.AsyncClient) -> None:
    pid = await product(http)
    _, headers = customer_headers()
    cart = (await http.post(f"{API}/cart", headers=headers)).json()
    line = f"{API}/cart/{cart['id']}/items"
    held = await http.put(line, json={"product_id": pid, "quantity": 2}, headers=headers)
    assert held.status_code == 200
    for quantity in (False, True, "3", 5.0):  # false would have removed the line, true bought one
        r = await http.put(line, json={"product_id": pid, "quantity": quantity}, headers=headers)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, quantity
    assert (await http.get(f"{API}/cart/{cart['id']}", headers=headers)).json() == held.json()
    for body in ({"on_hand": "3", "price": "1.00"}, {"on_hand": 3.0, "price": "1.00"},
                 {"on_hand": 3, "price": "\u0661\u0662.50"}):  # Arabic-Indic digits
        assert (await http.put(f"{API}/inventory/{pid}", json=body)).status_code == 422, body
    stock = (await http.get(f"{API}/inventory/{pid}")).json()
    assert (stock["on_hand"], stock["price"]) == (10, "29.99")
    reserve = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 1, "ttl_seconds": True},
                              headers=bearer(token("w", role="service")))
    assert reserve.status_code == 422
    assert (await http.get(f"{API}/inventory/{pid}")).json()["reserved"] == 0
