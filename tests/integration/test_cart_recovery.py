"""Carts survive the loss of Redis: after FLUSHALL on a Redis this test started itself, a cart comes back
unchanged on its next use, and a checked-out cart stays checked out and names the same single order. A Redis
that stops answering holds cart changes back, and nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from store import carts as carts_module
from store import durable_carts
from store.embedded import EmbeddedRedis
from tests.e2e.conftest import customer_headers
from tests.integration.conftest import ADDRESS, Deployment, embedded_deployment
from tests.integration.ray_support import eventually

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
async def service_over_embedded(tmp_path_factory: pytest.TempPathFactory, ray_session: Path) -> AsyncIterator[Deployment]:
    """One deployment for the module's tests: each makes carts of its own, and flushes a Redis no other
    module uses. None stops a server."""
    async with embedded_deployment(tmp_path_factory.mktemp("cart-recovery")) as deployment:
        yield deployment


async def flushall(redis: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(redis.url)
    try:
        await client.flushall()
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def product(http: httpx.AsyncClient, price: str) -> str:
    pid = str(uuid.uuid4())
    assert (await http.put(f"/api/v1/inventory/{pid}", json={"on_hand": 10, "price": price})).status_code == 200
    return pid


async def new_cart(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    """A new customer's new cart, and the headers that authenticate the customer."""
    _, headers = customer_headers()
    return (await http.post("/api/v1/cart", headers=headers)).json(), headers


async def test_a_cart_lost_with_redis_comes_back_unchanged_and_checks_out_once(
        service_over_embedded: Deployment) -> None:
    http, redis = service_over_embedded.http, service_over_embedded.redis
    mug, pen = await product(http, "29.99"), await product(http, "1.50")
    cart, alice = await new_cart(http)
    await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 2}, headers=alice)
    before = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": pen, "quantity": 3},
                             headers=alice)).json()

    await flushall(redis)
    after = await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)
    assert after.status_code == 200 and after.json() == before

    body = {"payment_token": "tok_visa", "shipping_address": ADDRESS}
    first = await http.post(f"/api/v1/cart/{cart['id']}/checkout", json=body, headers=alice)
    assert first.status_code == 202
    await flushall(redis)
    assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json()["status"] == "CHECKED_OUT"
    second = await http.post(f"/api/v1/cart/{cart['id']}/checkout", json={**body, "payment_token": "tok_flaky"},
                             headers=alice)
    assert second.status_code == 202 and second.json()["order_id"] == first.json()["order_id"]
    checked_out = (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json()
    assert checked_out["status"] == "CHECKED_OUT" and checked_out["items"] == before["items"]
    change = await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 1}, headers=alice)
    assert change.status_code == 409

    order_id = first.json()["order_id"]
    order = await eventually(lambda: http.get(f"/api/v1/orders/{order_id}", headers=alice),
                             lambda r: r.json()["status"] in ("CONFIRMED", "CANCELLED"))
    assert order.json()["status"] == "CONFIRMED" and order.json()["total_amount"] == "64.48"
    created = (await http.get("/api/v1/admin/events", params={"event_type": "OrderCreated", "limit": 500})).json()
    assert [e["aggregate_id"] for e in created["items"]
            if e["data"]["customer_id"] == cart["customer_id"]] == [order_id]  # the customer's only order
    charges = (await http.get("/api/v1/admin/events", params={"event_type": "PaymentProcessed",
                                                             "aggregate_id": order_id})).json()["items"]
    assert len(charges) == 1


async def test_a_change_made_after_a_restore_survives_the_next_loss(service_over_embedded: Deployment) -> None:
    http, redis = service_over_embedded.http, service_over_embedded.redis
    mug = await product(http, "29.99")
    cart, alice = await new_cart(http)
    await flushall(redis)
    changed = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 4},
                              headers=alice)).json()
    await flushall(redis)
    assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json() == changed


async def test_an_older_copy_coming_back_in_redis_does_not_swallow_acknowledged_changes(
        service_over_embedded: Deployment) -> None:
    """A failover to a replica that missed the latest writes brings back an older copy of the cart; the next
    change is made on the recorded state, not on that copy."""
    http, redis = service_over_embedded.http, service_over_embedded.redis
    mug, pen, cup = await product(http, "29.99"), await product(http, "1.50"), await product(http, "5.00")
    cart, alice = await new_cart(http)
    key = f"cart:{cart['id']}"
    client = aioredis.Redis.from_url(redis.url)
    try:
        await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 1}, headers=alice)
        older = await client.dump(key)
        await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": pen, "quantity": 2}, headers=alice)
        await client.restore(key, 3_600_000, older, replace=True)  # the failover's copy: the pen is missing
    finally:
        await client.aclose()
    after = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": cup, "quantity": 3},
                            headers=alice)).json()
    assert {(x["product_id"], x["quantity"]) for x in after["items"]} == {(mug, 1), (pen, 2), (cup, 3)}
    await flushall(redis)
    assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json()["items"] == after["items"]


async def test_requests_arriving_together_after_a_loss_all_find_the_cart(service_over_embedded: Deployment) -> None:
    http, redis = service_over_embedded.http, service_over_embedded.redis
    mug = await product(http, "29.99")
    cart, alice = await new_cart(http)
    await flushall(redis)
    answers = await asyncio.gather(*[http.get(f"/api/v1/cart/{cart['id']}", headers=alice) for _ in range(5)],
                                   http.put(f"/api/v1/cart/{cart['id']}/items",
                                            json={"product_id": mug, "quantity": 1}, headers=alice))
    assert [a.status_code for a in answers] == [200] * 6


async def test_a_cart_that_expired_is_not_brought_back(service_over_embedded: Deployment) -> None:
    http, redis = service_over_embedded.http, service_over_embedded.redis
    cart, alice = await new_cart(http)
    pool = (await service_over_embedded.ingress.provider.get()).pool
    expired = await pool.execute("UPDATE carts SET expires_at = NOW() - interval '1 second' WHERE cart_id = $1",
                                 uuid.UUID(cart["id"]))
    assert expired == "UPDATE 1"  # the cart was recorded when it was made
    await flushall(redis)
    assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).status_code == 404


async def test_an_older_copy_back_in_redis_is_neither_read_nor_lets_a_checkout_be_refused_as_empty(
        service_over_embedded: Deployment) -> None:
    """Redis restarted from a snapshot taken before the cart's acknowledged change: what a customer reads,
    and what decides a refusal, is the recorded cart."""
    http, redis = service_over_embedded.http, service_over_embedded.redis
    mug = await product(http, "29.99")
    cart, alice = await new_cart(http)
    key = f"cart:{cart['id']}"
    client = aioredis.Redis.from_url(redis.url)
    try:
        empty = await client.dump(key)  # the snapshot: the cart before its line
        changed = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 2},
                                  headers=alice)).json()
        await client.restore(key, 3_600_000, empty, replace=True)
        assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json() == changed
        await client.restore(key, 3_600_000, empty, replace=True)
    finally:
        await client.aclose()
    body = {"payment_token": "tok_visa", "shipping_address": ADDRESS}
    placed = await http.post(f"/api/v1/cart/{cart['id']}/checkout", json=body, headers=alice)
    assert placed.status_code == 202, placed.text  # not 409 empty-cart from the old copy


async def test_a_change_that_reached_redis_but_not_its_record_is_not_what_the_cart_reads(
        service_over_embedded: Deployment) -> None:
    """The request failed between the two writes (and was never answered): the cart is as recorded."""
    http = service_over_embedded.http
    mug, pen = await product(http, "29.99"), await product(http, "1.50")
    cart, alice = await new_cart(http)
    recorded = (await http.put(f"/api/v1/cart/{cart['id']}/items", json={"product_id": mug, "quantity": 1},
                               headers=alice)).json()
    services = await service_over_embedded.ingress.provider.get()
    await services.carts.redis.set_line(uuid.UUID(cart["id"]), uuid.UUID(pen), 5, Decimal("1.50"),
                                        dt.datetime.now(dt.UTC))  # Redis only: its record never written
    assert (await http.get(f"/api/v1/cart/{cart['id']}", headers=alice)).json() == recorded


async def test_a_copy_changed_in_redis_to_the_record_s_version_with_other_lines_is_neither_read_nor_changed(
        service_over_embedded: Deployment) -> None:
    """An older copy came back after a failover, a change was made on it in Redis and its record refused,
    and the process stopped before putting the record back: Redis holds the record's version with other
    lines. What the customer reads, and what the next change is made on, is the record."""
    http = service_over_embedded.http
    services = await service_over_embedded.ingress.provider.get()
    mug, pen, cup = await product(http, "29.99"), await product(http, "1.50"), await product(http, "5.00")
    cart, alice = await new_cart(http)
    cart_id, key = uuid.UUID(cart["id"]), f"cart:{cart['id']}"
    client = aioredis.Redis.from_url(service_over_embedded.redis.url)
    try:
        await http.put(f"/api/v1/cart/{cart_id}/items", json={"product_id": mug, "quantity": 1}, headers=alice)
        older = await client.dump(key)
        recorded = (await http.put(f"/api/v1/cart/{cart_id}/items", json={"product_id": pen, "quantity": 2},
                                   headers=alice)).json()
        await client.restore(key, 3_600_000, older, replace=True)
        diverged = await services.carts.redis.set_line(cart_id, uuid.UUID(cup), 3, Decimal("5.00"),
                                                       dt.datetime.now(dt.UTC))  # in Redis only
        record = await services.carts.journal.load(cart_id)
        assert record is not None and diverged.version == record.version and diverged.lines != record.lines
        left = await client.dump(key)
        assert (await http.get(f"/api/v1/cart/{cart_id}", headers=alice)).json() == recorded
        await client.restore(key, 3_600_000, left, replace=True)  # as the stop left it, for the next change
    finally:
        await client.aclose()
    after = (await http.put(f"/api/v1/cart/{cart_id}/items", json={"product_id": pen, "quantity": 4},
                            headers=alice)).json()
    assert {(x["product_id"], x["quantity"]) for x in after["items"]} == {(mug, 1), (pen, 4)}  # no cup


async def test_cart_changes_waiting_for_a_redis_that_does_not_answer_do_not_hold_orders_back(
        tmp_path: Path, ray_session: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis stalls (stopped, as a host that no longer answers): cart changes wait for it, each holding a
    PostgreSQL connection of the replica meanwhile, but only up to half of its pool, so an order placed with an
    Idempotency-Key (whose claim needs a connection) is answered while every one of them still waits. A
    deployment of its own, whose replica (in this process) waits a minute for Redis and for a turn, so that
    none of the changes can end before Redis answers again."""
    monkeypatch.setattr(carts_module, "TIMEOUT", 60.0)
    monkeypatch.setattr(durable_carts, "CHANGE_WAIT", 120.0)
    async with embedded_deployment(tmp_path) as deployment:
        http, redis, ingress = deployment.http, deployment.redis, deployment.ingress
        mug = await product(http, "29.99")
        carts = [await new_cart(http) for _ in range(ingress.settings.database_pool_size + 2)]
        watcher = await asyncpg.connect(ingress.settings.database_url)
        pid = redis.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            # As the admin (not rate-limited: a customer's request would wait for Redis at its rate limit first).
            changes = [asyncio.create_task(http.put(f"/api/v1/cart/{cart['id']}/items",
                                                    json={"product_id": mug, "quantity": 1})) for cart, _ in carts]
            await eventually(lambda: watcher.fetchval(  # the cart changes that hold a connection, waiting for Redis
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"),
                lambda held: held >= ingress.settings.database_pool_size // 2, timeout=30)
            order = await http.post("/api/v1/orders", headers={"Idempotency-Key": str(uuid.uuid4())},
                                    json={"customer_id": carts[0][0]["customer_id"], "shipping_address": ADDRESS,
                                          "payment_token": "tok_visa", "items": [{"product_id": mug, "quantity": 1}]})
            assert order.status_code == 202
            assert not any(change.done() for change in changes)  # half wait for Redis, the others for a turn
        finally:
            os.kill(pid, signal.SIGCONT)
            await watcher.close()
        answers = await asyncio.gather(*changes)
        assert [a.status_code for a in answers] == [200] * len(changes)  # Redis answered: each change was made
