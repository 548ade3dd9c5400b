"""Carts in Redis: one hash per cart, changed only by Lua scripts so every change is atomic.

``cart:{id}`` holds the cart's metadata and one ``line:{product_id}`` field per line ("qty|price").
Every change refreshes the key's TTL and the cart's score in ``carts:activity`` (last activity, for
abandonment). Checkout moves an OPEN cart to CHECKING_OUT exactly once and pins its order id, so a
second checkout answers with the same order; CHECKED_OUT follows once the order exists.
Cart operation counters live in Redis too, so every replica's operations add up in one place.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis

from domain.cart import Cart, CartFull, CartLine, CartStatus, EmptyCart
from domain.errors import NotFound, TransitionForbidden
from domain.order import MAX_LINES
from store.redis_errors import redis_errors

ACTIVITY = "carts:activity"
OPERATIONS = "metrics:cart_operations"
COUNTERS = "metrics:carts"
TIMEOUT = 5.0  # seconds to connect to Redis, for its answer, and for a free connection of the pool

# ARGV[6] is the time before which a cart's last activity means it has expired: such entries leave the
# activity set here, so the set stays as large as the live carts.
_CREATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'customer_id', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2], 'status', 'OPEN',
           'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'create', 1)
redis.call('HINCRBY', KEYS[4], 'created', 1)
return 1
"""

# ARGV[9] is the customer the caller acts for ('' for an admin): another's cart is not found. ARGV[10]: the
# most products a cart may hold (a new one past it is refused; a change to one it holds is not).
_SET_LINE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
if ARGV[9] ~= '' and redis.call('HGET', KEYS[1], 'customer_id') ~= ARGV[9] then return {'NOT_FOUND'} end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'OPEN' then return {'FORBIDDEN', status} end
if tonumber(ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], 'line:' .. ARGV[1])
else
  if redis.call('HEXISTS', KEYS[1], 'line:' .. ARGV[1]) == 0 then
    local lines = 0
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(field, 1, 5) == 'line:' then lines = lines + 1 end
    end
    if lines >= tonumber(ARGV[10]) then return {'FULL'} end
  end
  redis.call('HSET', KEYS[1], 'line:' .. ARGV[1], ARGV[2] .. '|' .. ARGV[3])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
return {'OK', redis.call('HGETALL', KEYS[1])}
"""

_CHECKOUT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'customer_id') ~= ARGV[4] then return {'NOT_FOUND'} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'OPEN' then
  local has_line = false
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 5) == 'line:' then has_line = true break end
  end
  if not has_line then return {'EMPTY'} end
  redis.call('HSET', KEYS[1], 'status', 'CHECKING_OUT', 'order_id', ARGV[1], 'updated_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'checkout', 1)
  redis.call('HINCRBY', KEYS[4], 'checked_out', 1)
end
return {'OK', redis.call('HGETALL', KEYS[1])}
"""

# The cart's order exists, of the lines ARGV[3..] (field/value pairs): the cart is checked out with them. A
# cart opened again meanwhile (another request of the same checkout was refused and aborted it, and the cart
# may have been changed since) is checked out too: its order exists, and it must not place another.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'CHECKING_OUT' or status == 'OPEN' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 5) == 'line:' then redis.call('HDEL', KEYS[1], field) end
  end
  redis.call('HSET', KEYS[1], 'status', 'CHECKED_OUT', 'order_id', ARGV[1], unpack(ARGV, 3))
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  if status == 'OPEN' then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('HINCRBY', KEYS[3], 'checked_out', 1)
  end
end
return {'OK', redis.call('HGETALL', KEYS[1])}
"""

# Checkout refused for good (an unknown product, an order over the limits): the cart opens again, if it is
# still in the checkout that was refused. ARGV[1] is the version that checkout began at (the version
# begin_checkout returned): nothing but finishing or aborting changes a cart in checkout, so a request of an
# earlier checkout, refused late, cannot open a later one.
_ABORT = """
if redis.call('HGET', KEYS[1], 'status') == 'CHECKING_OUT' and redis.call('HGET', KEYS[1], 'version') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'OPEN')
  redis.call('HDEL', KEYS[1], 'order_id')
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'checked_out', -1)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
return {'OK', redis.call('HGETALL', KEYS[1])}
"""

# A cart lost from Redis (eviction, a flush, a failover) put back from its durable record, unless the
# cart is there already. ARGV: seconds to live, activity score ('' unless open), cart id, field/value pairs.
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""

T = TypeVar("T")


def _key(cart_id: uuid.UUID) -> str:
    return f"cart:{cart_id}"


def _line_fields(lines: Sequence[CartLine]) -> list[str]:
    """The hash fields of ``lines``, name and value in turn ("line:{product_id}", "qty|price")."""
    return [x for line in lines for x in (f"line:{line.product_id}", f"{line.quantity}|{line.unit_price}")]


class RedisCartStore:
    def __init__(self, client: aioredis.Redis, ttl: int) -> None:
        self.redis = client
        self.ttl = ttl
        self._create = client.register_script(_CREATE)
        self._set_line = client.register_script(_SET_LINE)
        self._checkout = client.register_script(_CHECKOUT)
        self._finish = client.register_script(_FINISH)
        self._abort = client.register_script(_ABORT)
        self._restore = client.register_script(_RESTORE)

    @classmethod
    def from_url(cls, url: str, ttl: int, max_connections: int = 20) -> RedisCartStore:
        # A blocking pool waits for a free connection instead of failing a burst of requests.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=TIMEOUT,
                                                        socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                                                        decode_responses=True)
        return cls(aioredis.Redis(connection_pool=pool), ttl)

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        with redis_errors():
            return await fn()

    async def ping(self) -> bool:
        return bool(await self._call(lambda: self.redis.ping()))

    async def create(self, cart_id: uuid.UUID, customer_id: uuid.UUID, now: dt.datetime) -> Cart:
        keys = [_key(cart_id), ACTIVITY, OPERATIONS, COUNTERS]
        await self._call(lambda: self._create(keys, [str(customer_id), now.isoformat(), self.ttl,
                                                     now.timestamp(), str(cart_id), now.timestamp() - self.ttl]))
        return await self.get(cart_id, customer_id)

    async def get(self, cart_id: uuid.UUID, owner: uuid.UUID | None = None) -> Cart:
        """The cart; with ``owner``, another customer's cart is not found either."""
        fields, ttl = await self._call(lambda: self._get(cart_id))
        if not fields or (owner is not None and fields.get("customer_id") != str(owner)):
            raise NotFound(f"unknown cart {cart_id}")
        return self._decode(cart_id, fields, ttl)

    async def _get(self, cart_id: uuid.UUID) -> tuple[dict[str, str], int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(_key(cart_id))
            pipe.ttl(_key(cart_id))
            fields, ttl = await pipe.execute()
        return fields, ttl

    async def set_line(self, cart_id: uuid.UUID, product_id: uuid.UUID, quantity: int, unit_price: Decimal,
                       now: dt.datetime, operation: str = "set_item", owner: uuid.UUID | None = None) -> Cart:
        keys = [_key(cart_id), ACTIVITY, OPERATIONS]
        args: list[str | int | float] = [str(product_id), quantity, str(unit_price), now.isoformat(), self.ttl,
                                         now.timestamp(), str(cart_id), operation, str(owner or ""), MAX_LINES]
        result = await self._call(lambda: self._set_line(keys, args))
        return self._result(cart_id, result, self.ttl)

    async def begin_checkout(self, cart_id: uuid.UUID, order_id: uuid.UUID, now: dt.datetime,
                             owner: uuid.UUID | None = None) -> Cart:
        """Pin the cart to ``order_id`` once; a cart already checked out keeps its first order id."""
        keys = [_key(cart_id), ACTIVITY, OPERATIONS, COUNTERS]
        result = await self._call(lambda: self._checkout(
            keys, [str(order_id), now.isoformat(), str(cart_id), str(owner or ""), self.ttl]))
        if result[0] == "EMPTY":
            raise EmptyCart(f"cart {cart_id} is empty")
        return self._result(cart_id, result, None)

    async def finish_checkout(self, cart_id: uuid.UUID, order_id: uuid.UUID, lines: Sequence[CartLine]) -> Cart:
        """The cart's order ``order_id`` exists, of ``lines``: the cart is checked out with them, also if it was
        opened (and changed) again meanwhile. A cart checked out already is left as it is."""
        keys = [_key(cart_id), ACTIVITY, COUNTERS]
        result = await self._call(lambda: self._finish(keys, [str(order_id), str(cart_id), *_line_fields(lines)]))
        return self._result(cart_id, result, None)

    async def abort_checkout(self, cart_id: uuid.UUID, began_at: int) -> Cart:
        """Open a cart again whose checkout could not make its order (no order exists); ``began_at`` is the
        version begin_checkout returned. A cart no longer in that checkout is left as it is."""
        keys = [_key(cart_id), ACTIVITY, COUNTERS]
        result = await self._call(lambda: self._abort(keys, [str(began_at), dt.datetime.now(dt.UTC).timestamp(),
                                                             str(cart_id)]))
        return self._result(cart_id, result, None)

    async def forget(self, cart_id: uuid.UUID) -> None:
        """Drop the cart's copy (it went another way than its durable record, which is put back next)."""
        await self._call(lambda: self.redis.delete(_key(cart_id)))

    async def restore(self, cart: Cart, now: dt.datetime) -> bool:
        """Put a cart back from its durable record; False when it is in Redis already or has expired."""
        ttl = int((cart.expires_at - now).total_seconds())
        if ttl <= 0:
            return False
        fields: list[str | int] = ["customer_id", str(cart.customer_id), "created_at", cart.created_at.isoformat(),
                                   "updated_at", cart.updated_at.isoformat(), "status", cart.status.value,
                                   "version", cart.version]
        if cart.order_id is not None:
            fields += ["order_id", str(cart.order_id)]
        fields += _line_fields(cart.lines)
        score = cart.updated_at.timestamp() if cart.status is CartStatus.OPEN else ""
        restored = await self._call(lambda: self._restore([_key(cart.id), ACTIVITY], [ttl, score, str(cart.id), *fields]))
        return bool(restored)

    def _result(self, cart_id: uuid.UUID, result: list[Any], ttl: int | None) -> Cart:
        if result[0] == "NOT_FOUND":
            raise NotFound(f"unknown cart {cart_id}")
        if result[0] == "FORBIDDEN":
            raise TransitionForbidden(f"cart {cart_id} is {result[1]}", result[1])
        if result[0] == "FULL":
            raise CartFull(f"cart {cart_id} holds {MAX_LINES} products, as many as an order may")
        flat = result[1]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return self._decode(cart_id, fields, ttl)

    def _decode(self, cart_id: uuid.UUID, fields: dict[str, str], ttl: int | None) -> Cart:
        lines = []
        for name, value in fields.items():
            if name.startswith("line:"):
                qty, price = value.split("|")
                lines.append(CartLine(uuid.UUID(name[5:]), int(qty), Decimal(price)))
        lines.sort(key=lambda line: str(line.product_id))
        updated = dt.datetime.fromisoformat(fields["updated_at"])
        status = CartStatus(fields["status"])
        expires = updated + dt.timedelta(seconds=self.ttl)
        order_id = uuid.UUID(fields["order_id"]) if fields.get("order_id") else None
        return Cart(cart_id, uuid.UUID(fields["customer_id"]), tuple(lines), status,
                    dt.datetime.fromisoformat(fields["created_at"]), updated, expires, order_id,
                    int(fields.get("version", 0)))

    async def stats(self, now: dt.datetime, abandoned_after: float) -> dict[str, Any]:
        """Cart operation counts and the carts idle longer than ``abandoned_after`` seconds."""

        async def read() -> dict[str, Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(OPERATIONS)
                pipe.hgetall(COUNTERS)
                pipe.zcount(ACTIVITY, "-inf", now.timestamp() - abandoned_after)
                pipe.zcard(ACTIVITY)
                ops, counters, abandoned, open_carts = await pipe.execute()
            return {"operations": {k: int(v) for k, v in ops.items()},
                    "created": int(counters.get("created", 0)), "checked_out": int(counters.get("checked_out", 0)),
                    "abandoned": int(abandoned), "open": int(open_carts)}

        return await self._call(read)

