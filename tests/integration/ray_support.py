"""A session-wide Ray cluster with the service's actors, over a database of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from actors.client import InventoryClient, OrderClient
from commerce.settings import ResolvedSettings

T = TypeVar("T")
TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"


def test_settings(database_url: str, redis_url: str, **overrides: Any) -> ResolvedSettings:
    base = ResolvedSettings(
        database_url=database_url, redis_url=redis_url, namespace=f"commerce-test-{uuid.uuid4().hex[:8]}",
        order_shards=2, inventory_shards=2, saga_retry_delay=0.05, admin_token="test-admin-token", saga_timeout=120.0,
        jwt_secret=TEST_JWT_SECRET, server_secret="test-server-secret-0123456789abcdef",
        saga_compensation_timeout=5.0, snapshot_every=10, passivate_after=600.0, request_timeout=30.0,
        shard_cpus=0.01, replica_cpus=0.01,  # many sets of actors share the session's two CPUs
    )
    return base.replace(**overrides)


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 60.0,
                     interval: float = 0.1) -> T:
    """Poll ``probe`` until ``accept`` says yes; fails with the last value seen after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


async def order_of(orders: OrderClient, order_id: uuid.UUID) -> dict[str, Any]:
    """The order as the API shows it."""
    return (await orders.get_order(order_id)).json()


async def stock_of(inventory: InventoryClient, product_id: uuid.UUID) -> dict[str, Any]:
    """The product's stock as the API shows it."""
    return (await inventory.get_stock(product_id)).json()
