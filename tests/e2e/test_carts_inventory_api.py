"""Carts, stock and reservations, health and metrics over real HTTP through Ray Serve."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from store.event_store import PostgresEventStore
from store.sagas import SCANNED_COUNTS
from tests.e2e.conftest import ADMIN
from tests.e2e.helpers import ADDRESS, API, order_body, order_status, product
from tests.integration.ray_support import eventually

pytestmark = pytest.mark.ray


async def new_cart(http: httpx.AsyncClient) -> dict[str, object]:
    r = await http.post(f"{API}/cart", json={"customer_id": str(uuid.uuid4())})
    assert r.status_code == 201
    return r.json()  # type: ignore[no-any-return]


async def test_a_cart_prices_lines_from_the_catalog_and_totals_them(http: httpx.AsyncClient) -> None:
    mug, pen = await product(http, price="29.99"), await product(http, price="1.50", name="Pen")
    cart = await new_cart(http)
    assert cart["items"] == [] and cart["total"] == "0.00" and cart["status"] == "OPEN"
    await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 2})
    r = await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pen, "quantity": 3})
    body = r.json()
    assert r.status_code == 200 and body["total"] == "64.48"
    lines = {x["product_id"]: x for x in body["items"]}
    assert lines[mug]["unit_price"] == "29.99" and lines[mug]["line_total"] == "59.98"
    assert (await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pen, "quantity": 0})).json()["total"] == "59.98"
    assert (await http.delete(f"{API}/cart/{cart['id']}/items/{mug}")).json()["items"] == []
    assert body["expires_at"] > body["updated_at"]


async def test_a_cart_refuses_a_client_price_and_unknown_products(http: httpx.AsyncClient) -> None:
    cart = await new_cart(http)
    pid = await product(http)
    priced = await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 1, "unit_price": "0.01"})
    assert priced.status_code == 422
    unknown = await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": str(uuid.uuid4()), "quantity": 1})
    assert unknown.status_code == 404
    missing = await http.get(f"{API}/cart/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_concurrent_updates_of_one_cart_lose_none(http: httpx.AsyncClient) -> None:
    cart = await new_cart(http)
    pids = [await product(http, price="1.00") for _ in range(10)]
    await asyncio.gather(*[http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": p, "quantity": 2})
                           for p in pids])
    body = (await http.get(f"{API}/cart/{cart['id']}")).json()
    assert len(body["items"]) == 10 and body["total"] == "20.00"


async def test_checkout_places_one_order_however_often_it_is_sent(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    cart = await new_cart(http)
    await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 2})
    body = {"payment_token": "tok_visa", "shipping_address": ADDRESS}
    answers = await asyncio.gather(*[http.post(f"{API}/cart/{cart['id']}/checkout", json=body) for _ in range(3)])
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["order_id"] for a in answers}) == 1
    order = await order_status(http, answers[0].json()["order_id"], {"CONFIRMED"})
    assert order["customer_id"] == cart["customer_id"] and order["total_amount"] == "59.98"
    after = (await http.get(f"{API}/cart/{cart['id']}")).json()
    assert after["status"] == "CHECKED_OUT" and after["order_id"] == order["order_id"]
    changed = await http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 1})
    assert changed.status_code == 409
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 3


async def test_an_empty_cart_cannot_check_out(http: httpx.AsyncClient) -> None:
    cart = await new_cart(http)
    r = await http.post(f"{API}/cart/{cart['id']}/checkout", json={"payment_token": "tok_visa", "shipping_address": ADDRESS})
    assert r.status_code == 409


async def test_reserve_and_release_keep_available_right(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    rid = str(uuid.uuid4())
    r = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 3, "reservation_id": rid})
    assert r.status_code == 201 and set(r.json()) == {"reservation_id", "product_id", "quantity", "expires_at", "version"}
    again = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 3, "reservation_id": rid})
    assert again.json()["reservation_id"] == rid
    assert (await http.get(f"{API}/inventory/{pid}")).json()["available"] == 2
    short = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 3})
    assert short.status_code == 409 and short.json()["available"] == 2
    stale = await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 1, "expected_version": 1})
    assert stale.status_code == 409 and stale.json()["current_version"] == 2
    released = await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": rid})
    assert released.status_code == 200 and released.json()["available"] == 5
    assert (await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": rid})).status_code == 200
    unknown = await http.post(f"{API}/inventory/{pid}/release", json={"reservation_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    assert (await http.get(f"{API}/inventory/{uuid.uuid4()}")).status_code == 404


async def test_a_keyed_reserve_repeated_with_the_product_spelt_otherwise_is_the_same_request(
        http: httpx.AsyncClient) -> None:
    """The product's id in upper case, without hyphens, in braces or as a URN names the same product: a
    repeat so spelt is answered with the first reservation, and holds nothing more."""
    pid = await product(http, on_hand=5)
    key = str(uuid.uuid4())
    first = await http.post(f"{API}/inventory/{pid.upper()}/reserve", json={"quantity": 2},
                            headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    for spelt in (pid, uuid.UUID(pid).hex, "{" + pid + "}", "urn:uuid:" + pid):
        again = await http.post(f"{API}/inventory/{spelt}/reserve", json={"quantity": 2},
                                headers={"Idempotency-Key": key})
        assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
        assert again.json()["reservation_id"] == first.json()["reservation_id"]
    assert (await http.get(f"{API}/inventory/{pid}")).json()["available"] == 3


async def test_stock_cannot_be_set_below_what_is_reserved(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    await http.post(f"{API}/inventory/{pid}/reserve", json={"quantity": 4})
    r = await http.put(f"{API}/inventory/{pid}", json={"on_hand": 2, "price": "29.99"}, headers=ADMIN)
    assert r.status_code == 409
    bad_price = await http.put(f"{API}/inventory/{pid}", json={"on_hand": 9, "price": "1.999"}, headers=ADMIN)
    assert bad_price.status_code == 422
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 5


async def test_health_reports_every_check(http: httpx.AsyncClient) -> None:
    r = await http.get("/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"postgres", "redis", "event_store", "sagas", "actors"}
    assert all(c["status"] == "ok" for c in body["checks"].values())


async def test_metrics_add_up_over_every_actor(http: httpx.AsyncClient) -> None:
    text = (await http.get("/metrics")).text
    for name in ("commerce_orders_total", "commerce_saga_duration_seconds_bucket",
                 "commerce_inventory_conflicts_total", "commerce_cart_operations_total",
                 "commerce_sagas_finished_total", "commerce_carts_abandoned", "commerce_inventory_units_sold_net"):
        assert name in text, name
    created = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("commerce_orders_total{") and 'status="created"' in line]
    assert len(created) >= 1 and sum(created) >= 1  # one series per order shard (label shard)


async def test_metrics_count_the_sagas_the_database_holds_and_the_projector_folds_their_changes(
        http: httpx.AsyncClient, actor_store: PostgresEventStore) -> None:
    """The sagas by status that /metrics shows are the sagas' own (a GROUP BY over them, read beside it), and the
    projector folds the changes of their statuses into the kept counts: once the sagas stop moving (those of
    earlier tests too), ``saga_counts`` alone holds every saga, the one of an order just confirmed included."""
    pool = actor_store.pool
    placed = (await http.post(f"{API}/orders", headers=ADMIN, json=order_body(await product(http)))).json()
    await order_status(http, placed["order_id"], {"CONFIRMED"})

    async def shown_and_held() -> tuple[dict[str, int], dict[str, int]]:
        shown = {}
        for family in text_string_to_metric_families((await http.get("/metrics")).text):
            if family.name == "commerce_sagas":
                shown = {s.labels["status"].upper(): int(s.value) for s in family.samples if s.value}
        return shown, await held()

    async def held() -> dict[str, int]:
        return {r["status"]: r["n"] for r in await pool.fetch(SCANNED_COUNTS)}

    async def folded_and_held() -> tuple[dict[str, int], dict[str, int]]:
        folded = {r["status"]: r["n"] for r in await pool.fetch("SELECT status, n FROM saga_counts WHERE n <> 0")}
        return folded, await held()

    # sagas of earlier tests may still move between two reads: read until they agree
    await eventually(shown_and_held, lambda both: both[0] == both[1])
    await eventually(folded_and_held, lambda both: both[0] == both[1])


async def test_reorder_makes_a_new_cart_of_a_past_order_at_todays_prices(http: httpx.AsyncClient) -> None:
    from tests.e2e.conftest import customer_headers

    mug, pen = await product(http, price="29.99"), await product(http, price="1.50", name="Pen")
    customer, headers = customer_headers()
    placed = (await http.post(f"{API}/orders", headers=headers, json={
        "items": [{"product_id": mug, "quantity": 2}, {"product_id": pen, "quantity": 5}],
        "payment_token": "tok_visa", "shipping_address": ADDRESS})).json()
    await order_status(http, placed["order_id"], {"CONFIRMED"})
    assert (await http.put(f"{API}/inventory/{mug}", json={"on_hand": 8, "price": "24.00"}, headers=ADMIN)).status_code == 200
    r = await http.post(f"{API}/orders/{placed['order_id']}/reorder", headers=headers)
    assert r.status_code == 201 and r.headers["location"] == f"{API}/cart/{r.json()['id']}"
    cart = r.json()
    assert cart["customer_id"] == customer and cart["status"] == "OPEN"
    lines = {x["product_id"]: (x["quantity"], x["unit_price"]) for x in cart["items"]}
    assert lines == {mug: (2, "24.00"), pen: (5, "1.50")} and cart["total"] == "55.50"
    _, stranger = customer_headers()
    assert (await http.post(f"{API}/orders/{placed['order_id']}/reorder", headers=stranger)).status_code == 404
