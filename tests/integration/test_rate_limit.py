"""The per-caller token bucket on a real Redis: a burst is served, then callers wait; budgets are separate."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from store.carts import RedisCartStore
from store.embedded import EmbeddedRedis
from store.errors import StoreUnavailable
from store.ratelimit import RateLimiter, retry_after
from tests.support import Servers


@pytest.fixture
async def client(servers: Servers) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(servers.redis_url, decode_responses=True)
    yield c
    await c.aclose()


async def test_a_burst_is_served_and_the_next_request_must_wait(client: aioredis.Redis) -> None:
    limiter = RateLimiter(client, rate=0.5, burst=5)  # refills one request every 2 s: slower than this test
    caller = f"customer:{uuid.uuid4()}"
    waits = await asyncio.gather(*[limiter.take(caller) for _ in range(8)])
    assert sorted(waits)[:5] == [0.0] * 5
    refused = [w for w in waits if w > 0]
    assert len(refused) == 3 and all(0 < w <= 2.0 for w in refused)
    assert retry_after(min(refused)) in ("1", "2")
    assert await limiter.take(f"customer:{uuid.uuid4()}") == 0.0  # another caller's budget is untouched


async def test_an_idle_bucket_expires(client: aioredis.Redis) -> None:
    limiter = RateLimiter(client, rate=20, burst=40)
    caller = f"customer:{uuid.uuid4()}"
    await limiter.take(caller)
    assert 0 < await client.ttl(f"ratelimit:{caller}") <= 3


async def test_a_redis_out_of_memory_is_unavailable_for_the_budget_and_the_carts(tmp_path: Path) -> None:
    """A Redis at its maxmemory refuses writes with OOM (not a connection error): the budget lets requests
    go on, as without Redis, and a cart change is a 503 to retry, not a server error. On a Redis of its own."""
    redis = EmbeddedRedis(tmp_path)
    url = redis.start()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    carts = RedisCartStore.from_url(url, ttl=60)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")
        with pytest.raises(StoreUnavailable):
            await RateLimiter(client, rate=20, burst=40).take(f"customer:{uuid.uuid4()}")
        with pytest.raises(StoreUnavailable):
            await carts.create(uuid.uuid4(), uuid.uuid4(), dt.datetime.now(dt.UTC))
        await client.config_set("maxmemory", "0")  # room again: the same calls go through
        assert await RateLimiter(client, rate=20, burst=40).take(f"customer:{uuid.uuid4()}") == 0.0
        cart_id = uuid.uuid4()
        assert (await carts.create(cart_id, uuid.uuid4(), dt.datetime.now(dt.UTC))).id == cart_id
    finally:
        await carts.close()
        await client.aclose()
        redis.stop()
