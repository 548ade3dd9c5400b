"""The Redis cart store on a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from domain.cart import CartStatus
from domain.errors import NotFound, TransitionForbidden
from store.carts import ACTIVITY, RedisCartStore
from tests.integration.ray_support import eventually
from tests.support import Servers


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
async def carts(servers: Servers) -> AsyncIterator[RedisCartStore]:
    store = RedisCartStore.from_url(servers.redis_url, ttl=3600)
    yield store
    await store.close()


async def test_fifty_concurrent_updates_of_one_cart_lose_none(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    products = [uuid.uuid4() for _ in range(50)]
    await asyncio.gather(*[carts.set_line(cart_id, p, k + 1, Decimal("1.00"), now()) for k, p in enumerate(products)])
    cart = await carts.get(cart_id)
    assert len(cart.lines) == 50 and cart.total == Decimal(sum(range(1, 51)))


async def test_every_change_refreshes_the_ttl(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    await carts.redis.expire(f"cart:{cart_id}", 5)
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("2.00"), now())
    assert await carts.redis.ttl(f"cart:{cart_id}") > 3000


async def test_an_expired_cart_is_not_found(servers: Servers) -> None:
    short = RedisCartStore.from_url(servers.redis_url, ttl=1)
    try:
        cart_id = uuid.uuid4()
        await short.create(cart_id, uuid.uuid4(), now())

        async def exists() -> bool:
            try:
                await short.get(cart_id)
                return True
            except NotFound:
                return False

        assert await eventually(exists, lambda found: not found, timeout=10) is False
    finally:
        await short.close()


async def test_two_checkouts_name_one_order(carts: RedisCartStore) -> None:
    cart_id = uuid.uuid4()
    await carts.create(cart_id, uuid.uuid4(), now())
    await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("2.00"), now())
    first, second = await asyncio.gather(carts.begin_checkout(cart_id, uuid.uuid4(), now()),
                                         carts.begin_checkout(cart_id, uuid.uuid4(), now()))
    assert first.order_id == second.order_id is not None
    await carts.finish_checkout(cart_id)
    assert (await carts.get(cart_id)).status is CartStatus.CHECKED_OUT
    with pytest.raises(TransitionForbidden):
        await carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now())


async def test_carts_that_expired_leave_the_activity_set_when_the_next_cart_is_made(carts: RedisCartStore) -> None:
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    await carts.create(stale, uuid.uuid4(), now() - dt.timedelta(seconds=2 * carts.ttl))
    assert await carts.redis.zscore(ACTIVITY, str(stale)) is not None
    await carts.create(fresh, uuid.uuid4(), now())
    assert await carts.redis.zscore(ACTIVITY, str(stale)) is None
    assert await carts.redis.zscore(ACTIVITY, str(fresh)) is not None


async def test_another_customers_cart_is_not_found_by_the_store_and_stays_unchanged(carts: RedisCartStore) -> None:
    cart_id, owner, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await carts.create(cart_id, owner, now())
    for attempt in (carts.get(cart_id, other),
                    carts.set_line(cart_id, uuid.uuid4(), 1, Decimal("1.00"), now(), owner=other),
                    carts.begin_checkout(cart_id, uuid.uuid4(), now(), owner=other)):
        with pytest.raises(NotFound):
            await attempt
    cart = await carts.get(cart_id, owner)
    assert cart.lines == () and cart.status is CartStatus.OPEN
