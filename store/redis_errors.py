"""Redis's errors, wrapped into the store's.

Apart from :mod:`store.errors` so that the processes that never talk to Redis (the shards, the projector)
do not import redis-py, and what it pulls in, to read PostgreSQL's: about 70 ms of CPU and 7.5 MiB of
memory in each of them (docs/benchmarks.md, twenty-first round).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import redis.exceptions

from store.errors import StoreUnavailable

# What a Redis that cannot serve right now answers: unreachable or slow, but also out of memory (maxmemory with
# noeviction), a replica made read-only by a failover, a master down, a script running too long. A retry may
# succeed once it passes; any other error (a script's bug) stays an error. Inside a Lua script such an answer
# comes back as the script's error, naming the code after a dash.
_REDIS_UNAVAILABLE = (
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
)
_REDIS_PASSING = re.compile(r"(?:^|-)(?:OOM|READONLY|MASTERDOWN|TRYAGAIN|BUSY|LOADING) ")


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Wrap what a Redis that cannot serve right now answers into :class:`StoreUnavailable`."""
    try:
        yield
    except _REDIS_UNAVAILABLE as e:
        raise StoreUnavailable(f"Redis unavailable: {e}") from e
    except redis.exceptions.ResponseError as e:
        if _REDIS_PASSING.search(str(e)):
            raise StoreUnavailable(f"Redis unavailable: {e}") from e
        raise
