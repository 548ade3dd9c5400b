"""What an HTTP replica talks to: actor clients, a PostgreSQL pool for reads and idempotency keys,
and the Redis cart store. Built lazily inside the replica, never at import."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses

import asyncpg

from actors.client import InventoryClient, OrderClient
from actors.directory import ActorDirectory
from commerce.settings import ResolvedSettings
from store.carts import RedisCartStore
from store.durable_carts import CartJournal, DurableCartStore
from store.event_store import SERVICE, PostgresEventStore, create_pool
from store.idempotency import IdempotencyStore
from store.ratelimit import RateLimiter
from store.reservations import DirectReservations
from store.sagas import SagaStore


@dataclasses.dataclass(slots=True)
class Services:
    settings: ResolvedSettings
    pool: asyncpg.Pool
    events: PostgresEventStore
    sagas: SagaStore
    idempotency: IdempotencyStore
    carts: DurableCartStore
    rate_limiter: RateLimiter
    direct_reservations: DirectReservations
    orders: OrderClient
    inventory: InventoryClient
    actors: ActorDirectory


class ServicesProvider:
    """Connects on first use and again after a failed attempt (a dependency may come up late)."""

    def __init__(self, settings: ResolvedSettings) -> None:
        self.settings = settings
        self._services: Services | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Services:
        if self._services is not None:
            return self._services
        async with self._lock:
            if self._services is None:
                # In a context of its own: the tasks and callbacks the clients start must not inherit the
                # first request's (its correlation id would mark their log lines for good).
                self._services = await asyncio.create_task(self._connect(), context=contextvars.Context())
        return self._services

    async def _connect(self) -> Services:
        s = self.settings
        pool = await create_pool(s.database_url, s.database_pool_size, SERVICE)
        events = PostgresEventStore(pool)
        redis_carts = RedisCartStore.from_url(s.redis_url, s.cart_ttl, s.redis_max_connections)
        return Services(
            settings=s, pool=pool, events=events, sagas=SagaStore(events), idempotency=IdempotencyStore(events),
            carts=DurableCartStore(redis_carts, CartJournal(pool, max(1, s.database_pool_size // 2))),
            rate_limiter=RateLimiter(redis_carts.redis, s.rate_limit_per_second, s.rate_limit_burst),
            direct_reservations=DirectReservations(pool),
            orders=OrderClient(s.namespace, s.order_shards, s.request_timeout, batched=True),
            inventory=InventoryClient(s.namespace, s.inventory_shards, s.request_timeout),
            actors=ActorDirectory(s.namespace, s.order_shards, s.inventory_shards),
        )
