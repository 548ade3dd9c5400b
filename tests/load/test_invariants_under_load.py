"""Invariants under concurrency, not speed: many customers, services and an operator at once on a few
hot SKUs. Afterwards nothing is oversold, every saga has finished, stock is conserved and each
confirmed order was charged once. Bounded: a few hundred requests."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest

from domain import inventory as inv
from store.event_store import PostgresEventStore
from tests.e2e.conftest import bearer, customer_headers, token
from tests.e2e.helpers import ADDRESS, API, product
from tests.integration.ray_support import eventually

pytestmark = pytest.mark.ray

STOCK = 40
TOKENS = ["tok_visa"] * 7 + ["tok_chargeDeclined", "tok_flaky", "tok_unavailable"]
SERVICES = [bearer(token(f"warehouse-{k}", role="service")) for k in range(2)]


async def place(http: httpx.AsyncClient, rng: random.Random, skus: list[str]) -> dict[str, Any]:
    _, headers = customer_headers()
    lines = [{"product_id": pid, "quantity": rng.randint(1, 3)} for pid in rng.sample(skus, rng.randint(1, 2))]
    address = {**ADDRESS, "postal_code": "00000" if rng.random() < 0.1 else "12345"}
    r = await http.post(f"{API}/orders", headers=headers, json={
        "items": lines, "payment_token": rng.choice(TOKENS), "shipping_address": address})
    assert r.status_code == 202, r.text
    if rng.random() < 0.1:  # the customer changes their mind while the saga runs
        assert (await http.post(f"{API}/orders/{r.json()['order_id']}/cancel", headers=headers)).status_code in (
            200, 202, 409)
    return {**r.json(), "lines": lines, "headers": headers}


async def hold(http: httpx.AsyncClient, rng: random.Random, skus: list[str]) -> int:
    """A service holds a few units for a moment, then lets them go or lets them expire; returns the 201s."""
    headers = rng.choice(SERVICES)
    pid = rng.choice(skus)
    r = await http.post(f"{API}/inventory/{pid}/reserve", headers=headers,
                        json={"quantity": rng.randint(1, 4), "ttl_seconds": 2})
    assert r.status_code in (201, 409), r.text
    if r.status_code == 201 and rng.random() < 0.5:
        released = await http.post(f"{API}/inventory/{pid}/release", headers=headers,
                                   json={"reservation_id": r.json()["reservation_id"]})
        assert released.status_code == 200
    return int(r.status_code == 201)


async def never_oversold(store: PostgresEventStore, pid: str) -> inv.Sku:
    state = None
    for record in await store.load_stream(uuid.UUID(pid)):
        state = inv.evolve(state, record)
        assert state is not None and state.on_hand >= 0 and 0 <= state.reserved <= state.on_hand
    assert state is not None
    return state


async def test_under_concurrent_load_nothing_is_oversold_every_saga_finishes_and_stock_is_conserved(
        http: httpx.AsyncClient, actor_store: PostgresEventStore) -> None:
    rng = random.Random(7)
    skus = [await product(http, on_hand=STOCK, price="3.00") for _ in range(3)]
    work = [place(http, rng, skus) for _ in range(120)] + [hold(http, rng, skus) for _ in range(60)]
    rng.shuffle(work)
    results = await asyncio.gather(*work)
    orders = [r for r in results if isinstance(r, dict)]

    async def statuses() -> list[str]:
        got = await asyncio.gather(*[http.get(f"{API}/orders/{o['order_id']}") for o in orders])
        return [g.json()["status"] for g in got]

    final = await eventually(statuses, lambda s: set(s) <= {"CONFIRMED", "CANCELLED"}, timeout=240, interval=1.0)
    confirmed = [o for o, s in zip(orders, final, strict=True) if s == "CONFIRMED"]
    assert 0 < len(confirmed) < len(orders)

    sold: Counter[str] = Counter()
    for o in confirmed:
        for line in o["lines"]:
            sold[line["product_id"]] += line["quantity"]
    for pid in skus:  # the direct holds expire within seconds; then nothing is reserved
        stock = await eventually(lambda pid=pid: http.get(f"{API}/inventory/{pid}"),
                                 lambda r: r.json()["reserved"] == 0, timeout=60)
        assert (stock.json()["on_hand"], stock.json()["available"]) == (STOCK - sold[pid], STOCK - sold[pid])
        replayed = await never_oversold(actor_store, pid)
        assert (replayed.on_hand, replayed.reserved) == (STOCK - sold[pid], 0)

    unfinished = await actor_store.pool.fetchval(
        "SELECT COUNT(*) FROM sagas WHERE order_id = ANY($1::uuid[]) AND status NOT IN ('COMPLETED', 'COMPENSATED')",
        [uuid.UUID(o["order_id"]) for o in orders])
    assert unfinished == 0
    effects = await actor_store.pool.fetch(
        """SELECT s.order_id, l.operation, l.status FROM sagas s
           JOIN provider_ledger l ON l.provider = 'payments' AND l.key LIKE s.saga_id::text || ':%'
           WHERE s.order_id = ANY($1::uuid[])""", [uuid.UUID(o["order_id"]) for o in orders])
    by_order: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in effects:
        by_order[str(row["order_id"])].append((row["operation"], row["status"]))
    for o, status in zip(orders, final, strict=True):
        charges = [s for op, s in by_order[o["order_id"]] if op == "charge"]
        if status == "CONFIRMED":
            assert charges == ["succeeded"], o["order_id"]
        else:
            assert charges in ([], ["voided"], ["refunded"]), (o["order_id"], charges)
