"""A bounded HTTP load generator against the full stack (Ray Serve, actors, PostgreSQL, Redis).

Measures accepted orders per second and p50/p95/p99 of POST /orders at several concurrencies,
confirmed orders per second once the sagas drained, and GET /livez on the same Serve instance in the
same run as the ceiling of the HTTP layer itself.

    python -m bench.http_load [--requests 300] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import time
import uuid

import httpx

from bench.common import dsn, redis_url, row, summary
from commerce.runtime import Runtime
from commerce.settings import Settings
from tests.support import create_database, drop_database

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
TOKEN = "bench-token"


async def load(client: httpx.AsyncClient, n: int, concurrency: int, request) -> tuple[float, list[float], list[str]]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    results: list[str] = []
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            t = time.perf_counter()
            response = await request(client)
            latencies.append(time.perf_counter() - t)
            response.raise_for_status()
            results.append(response.json().get("order_id", ""))

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - start, latencies, results


async def run(base: str, requests: int, concurrencies: list[int]) -> None:
    # The admin places orders for customers: the figures are the service's, not the rate limit's.
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=200),
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        pid = str(uuid.uuid4())
        stock = requests * len(concurrencies) + 100
        r = await client.put(f"/api/v1/inventory/{pid}", json={"on_hand": stock, "price": "9.99"})
        r.raise_for_status()

        def order(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
            return c.post("/api/v1/orders", json={
                "customer_id": str(uuid.uuid4()), "items": [{"product_id": pid, "quantity": 1}],
                "payment_token": "tok_visa", "shipping_address": ADDRESS})

        def trivial(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
            return c.get("/livez")

        await load(client, 20, 4, order)  # warm up
        placed: list[str] = []
        drain_start = time.perf_counter()
        best = 0.0
        for concurrency in concurrencies:
            seconds, latencies, ids = await load(client, requests, concurrency, order)
            placed += ids
            best = max(best, requests / seconds)
            row(f"POST /api/v1/orders accepted (concurrency {concurrency})", requests, seconds, summary(latencies))
        pending = set(placed)
        while pending:
            answers = await asyncio.gather(*[client.get(f"/api/v1/orders/{i}") for i in list(pending)[:200]])
            pending -= {a.json()["order_id"] for a in answers if a.json()["status"] in ("CONFIRMED", "CANCELLED")}
            await asyncio.sleep(0.2)
        row("orders confirmed after the drain (all phases)", len(placed), time.perf_counter() - drain_start)
        seconds, latencies, _ = await load(client, requests * 3, max(concurrencies), trivial)
        row(f"GET /livez ceiling (concurrency {max(concurrencies)})", requests * 3, seconds, summary(latencies))
        ceiling = requests * 3 / seconds
        print(f"  best accepted orders/s is {best / ceiling:.1%} of the trivial-route ceiling ({ceiling:.0f}/s)")


async def prepare_database() -> str:
    return await create_database(dsn(), "commerce_bench")


def main(requests: int, concurrencies: list[int]) -> None:
    database = asyncio.run(prepare_database())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = dataclasses.replace(Settings(), database_url=database, redis_url=redis_url(), port=port,
                                   admin_token=TOKEN, namespace=f"bench-{uuid.uuid4().hex[:6]}",
                                   order_shards=2, inventory_shards=2, dashboard_port=port + 1)
    runtime = Runtime(settings)
    try:
        runtime.prepare()
        runtime.start_ray()
        runtime.start_actors()
        runtime.start_serve()
        asyncio.run(run(f"http://127.0.0.1:{port}", requests, concurrencies))
    finally:
        runtime.stop()
        asyncio.run(drop_database(dsn(), database))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    main(args.requests, args.concurrency)
