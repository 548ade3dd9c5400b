"""Carts that survive the loss of Redis: every change is also written to PostgreSQL, within the request.

Redis stays the fast path and the one place where a cart changes (its Lua scripts make each change
atomic and count it in the cart's ``version``). After each change the new state is written to
``carts`` unless a newer version is there already, so concurrent requests cannot put back an older
state. A cart missing from Redis is restored from that record on its next use, with its lines, status
and the TTL it has left; a checked-out cart stays checked out. A copy in Redis that is not the record (an
older one brought back by a failover or a restart from an old snapshot, a change whose record failed and
was never answered, or such a copy changed since to the record's version with other contents) is put back
from the record when it is read and before every change. Records of expired carts are purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from domain.cart import Cart, CartError, CartLine, CartStatus
from domain.errors import NotFound, TransitionForbidden
from store.errors import ConcurrencyConflict, StoreUnavailable, postgres_errors

if TYPE_CHECKING:  # the projector purges the records and never talks to Redis: it does not import redis-py
    from store.carts import RedisCartStore

T = TypeVar("T")
CHANGE_ATTEMPTS = 3
CHANGE_WAIT = 5.0  # seconds a change waits for its turn to hold a connection before it answers unavailable


class CartJournal:
    """The durable record of carts in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, max_changing: int = 5) -> None:
        self.pool = pool
        self._changing = asyncio.Semaphore(max_changing)

    @contextlib.asynccontextmanager
    async def changing(self, cart_id: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the cart's lock: changes of one cart are made and recorded one at a time, so
        the record follows Redis change by change. A change holds its connection while it waits for Redis (a
        Redis that does not answer, for its timeout) or for the cart's lock: at most ``max_changing`` changes
        hold one at once, so that the pool's other users (an order's Idempotency-Key, the lists) never wait
        for them. A change that cannot have its turn within CHANGE_WAIT is StoreUnavailable."""
        try:
            async with asyncio.timeout(CHANGE_WAIT):
                await self._changing.acquire()
        except TimeoutError:
            raise StoreUnavailable("too many cart changes are waiting for Redis or PostgreSQL") from None
        try:
            with postgres_errors():
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(cart_id))
                    yield conn
        finally:
            self._changing.release()

    async def save(self, conn: asyncpg.Connection, cart: Cart, now: dt.datetime) -> bool:
        """Record the cart's new state if it follows the recorded one (its next version, or a cart the record
        does not know or has seen expire). False when it does not: the copy in Redis went another way (an
        older copy came back after a failover, or a change that was answered with an error never got
        here) and must be put back from the record before the change is made again."""
        lines = [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price)}
                 for x in cart.lines]
        with postgres_errors():
            row = await conn.fetchrow("SELECT version, status, order_id, lines, expires_at FROM carts WHERE cart_id = $1",
                                      cart.id)
            if row is not None and row["expires_at"] > now and row["version"] != cart.version - 1:
                same = (row["version"], row["status"], row["order_id"], json.loads(row["lines"])) == (
                    cart.version, cart.status.value, cart.order_id, lines)
                return same  # saved already (a repeated no-op), or another lineage
            await conn.execute(
                """INSERT INTO carts (cart_id, customer_id, status, order_id, lines, created_at, updated_at,
                                      expires_at, version)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (cart_id) DO UPDATE SET customer_id = $2, status = $3, order_id = $4, lines = $5,
                       created_at = $6, updated_at = $7, expires_at = $8, version = $9""",
                cart.id, cart.customer_id, cart.status.value, cart.order_id, json.dumps(lines), cart.created_at,
                cart.updated_at, cart.expires_at, cart.version)
        return True

    async def load(self, cart_id: uuid.UUID, conn: asyncpg.Connection | None = None) -> Cart | None:
        with postgres_errors():
            row = await (conn or self.pool).fetchrow("SELECT * FROM carts WHERE cart_id = $1", cart_id)
        return None if row is None else _cart(row)

    async def purge(self, now: dt.datetime) -> int:
        """Forget the carts that have expired; returns how many."""
        with postgres_errors():
            status = await self.pool.execute("DELETE FROM carts WHERE expires_at <= $1", now)
        return int(status.split()[-1])


def _lock_key(cart_id: uuid.UUID) -> int:
    """A 64-bit advisory lock key of its own for each cart."""
    return int.from_bytes(cart_id.bytes[:8], "big", signed=True)


def _same(copy: Cart, record: Cart) -> bool:
    """Whether the copy in Redis is the recorded cart. Its version alone does not say: a copy that went
    another way (an older one back after a failover, then changed there, its record refused) reaches the
    record's version with other contents."""
    return (copy.version, copy.status, copy.order_id, frozenset(copy.lines)) == (
        record.version, record.status, record.order_id, frozenset(record.lines))


def _cart(row: asyncpg.Record) -> Cart:
    lines = tuple(CartLine(uuid.UUID(x["product_id"]), int(x["quantity"]), Decimal(x["unit_price"]))
                  for x in json.loads(row["lines"]))
    return Cart(row["cart_id"], row["customer_id"], lines, CartStatus(row["status"]), row["created_at"],
                row["updated_at"], row["expires_at"], row["order_id"], row["version"])


class DurableCartStore:
    """The cart store the service uses: Redis for every operation, PostgreSQL for durability."""

    def __init__(self, redis: RedisCartStore, journal: CartJournal) -> None:
        self.redis = redis
        self.journal = journal

    @property
    def ttl(self) -> int:
        return self.redis.ttl

    async def ping(self) -> bool:
        return await self.redis.ping()

    async def stats(self, now: dt.datetime, abandoned_after: float) -> dict[str, Any]:
        return await self.redis.stats(now, abandoned_after)

    async def close(self) -> None:
        await self.redis.close()

    async def create(self, cart_id: uuid.UUID, customer_id: uuid.UUID, now: dt.datetime) -> Cart:
        """A new cart; a cart made before under this id (a retried request) comes back as it was."""
        record = await self.journal.load(cart_id)
        if record is not None and record.expires_at > now:
            return await self.get(cart_id, customer_id)  # restored if it is not in Redis, put back if it differs
        return await self._change(cart_id, lambda: self.redis.create(cart_id, customer_id, now))

    async def get(self, cart_id: uuid.UUID, owner: uuid.UUID | None = None) -> Cart:
        """The cart as recorded: the copy in Redis, unless the record differs (then it is put back from the
        record first, holding the cart's lock). While PostgreSQL is away, the copy in Redis."""
        cart = await self._restoring(cart_id, lambda: self.redis.get(cart_id, owner))
        try:
            record = await self.journal.load(cart_id)
        except StoreUnavailable:
            return cart  # nothing to compare it with: a read goes on as it did before records were kept
        if record is None or record.expires_at <= dt.datetime.now(dt.UTC) or _same(cart, record):
            return cart
        async with self.journal.changing(cart_id) as conn:
            await self._put_back(cart_id, conn)
        return await self._restoring(cart_id, lambda: self.redis.get(cart_id, owner))

    async def set_line(self, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int, unit_price: Decimal,
                       now: dt.datetime, operation: str = "set_item", owner: uuid.UUID | None = None) -> Cart:
        return await self._change(cart_id, lambda: self.redis.set_line(
            cart_id, product_id, quantity, unit_price, now, operation, owner))

    async def begin_checkout(self, cart_id: uuid.UUID, order_id: uuid.UUID, now: dt.datetime,
                             owner: uuid.UUID | None = None) -> Cart:
        return await self._change(cart_id, lambda: self.redis.begin_checkout(cart_id, order_id, now, owner))

    async def finish_checkout(self, cart_id: uuid.UUID, order_id: uuid.UUID, lines: Sequence[CartLine]) -> Cart:
        return await self._change(cart_id, lambda: self.redis.finish_checkout(cart_id, order_id, lines))

    async def abort_checkout(self, cart_id: uuid.UUID, began_at: int) -> Cart:
        return await self._change(cart_id, lambda: self.redis.abort_checkout(cart_id, began_at))

    async def _change(self, cart_id: uuid.UUID, operation: Callable[[], Awaitable[Cart]]) -> Cart:
        """Make a change in Redis and record it, holding the cart's lock; answered only once it is recorded. A
        copy in Redis that went another way than the record is put back from the record, and the change made
        again on it."""
        async with self.journal.changing(cart_id) as conn:
            await self._put_back(cart_id, conn)  # a change is made on the recorded cart, never on another copy
            for _ in range(CHANGE_ATTEMPTS):
                try:
                    cart = await self._restoring(cart_id, operation, conn)
                except (CartError, TransitionForbidden, NotFound):
                    if await self._put_back(cart_id, conn):
                        continue  # refused by a copy the record does not know: made again on the record's
                    raise
                if await self.journal.save(conn, cart, dt.datetime.now(dt.UTC)):
                    return cart
                record = await self.journal.load(cart_id, conn)
                await self.redis.forget(cart_id)
                if record is not None:
                    await self.redis.restore(record, dt.datetime.now(dt.UTC))
        raise ConcurrencyConflict(cart_id, -1)

    async def _put_back(self, cart_id: uuid.UUID, conn: asyncpg.Connection) -> bool:
        """Put the recorded cart back in Redis if Redis holds another copy of it (or none); whether it did.
        ``conn`` holds the cart's lock."""
        now = dt.datetime.now(dt.UTC)
        record = await self.journal.load(cart_id, conn)
        if record is None or record.expires_at <= now:
            return False
        try:
            copy: Cart | None = await self.redis.get(cart_id)
        except NotFound:
            copy = None
        if copy is not None and _same(copy, record):
            return False
        await self.redis.forget(cart_id)
        await self.redis.restore(record, now)
        return True

    async def _restoring(self, cart_id: uuid.UUID, operation: Callable[[], Awaitable[T]],
                         conn: asyncpg.Connection | None = None) -> T:
        """Run ``operation``; when the cart is not in Redis but its record is, restore it and run it again
        (also when another request restored it first). ``conn``: the connection that holds the cart's lock,
        if any, so the record is read on it rather than on a second one."""
        try:
            return await operation()
        except NotFound:
            record = await self.journal.load(cart_id, conn)
            if record is None or record.expires_at <= dt.datetime.now(dt.UTC):
                raise
            await self.redis.restore(record, dt.datetime.now(dt.UTC))
        return await operation()
