"""Per-caller request budgets: a token bucket in Redis, shared by every replica.

One Lua script refills the bucket from Redis's own clock and takes a token, atomically; the answer
says how long to wait when the bucket is empty. Idle buckets expire by themselves.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from store.redis_errors import redis_errors

_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RateLimiter:
    """``rate`` requests a second per caller, in bursts of up to ``burst``."""

    def __init__(self, client: aioredis.Redis, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._take = client.register_script(_TAKE)

    async def take(self, caller: str) -> float:
        """Take one request from the caller's budget: 0 when allowed, else the seconds to wait."""
        with redis_errors():
            wait = await self._take([f"ratelimit:{caller}"], [self.rate, self.burst])
        return float(wait)


def retry_after(wait: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
