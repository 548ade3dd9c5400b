"""Errors of the persistence layer; driver errors are wrapped into these exactly once (Redis's in
:mod:`store.redis_errors`, which the actors' processes do not load)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from domain.errors import Remade


class StoreError(Remade):
    """Base of the store's errors."""


class ConcurrencyConflict(StoreError):
    """An append named an expected version that is no longer the stream's current one."""

    def __init__(self, aggregate_id: object, expected: int) -> None:
        super().__init__(f"stream {aggregate_id} moved past version {expected}")
        self.aggregate_id = aggregate_id
        self.expected = expected


class DuplicateCommand(StoreError):
    """The command that produced these events was already applied (its event ids exist)."""


class StoreUnavailable(StoreError):
    """PostgreSQL or Redis cannot be reached right now; the caller may retry later."""


# What a PostgreSQL that cannot serve right now answers: unreachable, out of connections, shutting down or
# restarting after a backend crashed, a statement or a session cancelled by the server (SQLSTATE class 57, the
# operator's intervention), and a server that refuses writes (a standby that the address still named when the
# connection was made, writes frozen). A retry may succeed once it passes: the client is told 503, a saga waits.
_UNAVAILABLE = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


# This process's pools, each with when its connections were last replaced (those closed since are left out at the
# next one made). A server that stays read-only (writes frozen, a disk full) has them replaced once per
# REPLACE_EVERY, not at every refusal: each replacement is a new session for every connection.
_pools: dict[asyncpg.Pool, float] = {}
_expiring: set[asyncio.Task[None]] = set()
REPLACE_EVERY = 5.0  # seconds
_clock = time.monotonic  # when connections were replaced (the tests set it)


def replaced_after_failover(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The pool's connections are replaced (each as it is next acquired or released) once a statement of this
    process finds its server read-only: a connection made while the database's address still named the old
    primary (a cached DNS answer during a failover) reaches a standby, which refuses every write for as long as
    the connection lives; a new one reaches the server that the address names now."""
    for closed in [p for p in _pools if p.is_closing()]:
        del _pools[closed]
    _pools[pool] = -math.inf
    return pool


def _replace_connections() -> None:
    with contextlib.suppress(RuntimeError):  # no running loop: no pool of this process can be in use
        loop, now = asyncio.get_running_loop(), _clock()
        for pool in [p for p, last in _pools.items() if now - last >= REPLACE_EVERY and not p.is_closing()]:
            _pools[pool] = now
            task = loop.create_task(pool.expire_connections())
            _expiring.add(task)
            task.add_done_callback(_expiring.discard)


@contextlib.contextmanager
def postgres_errors() -> Iterator[None]:
    """Wrap the driver's connection failures into :class:`StoreUnavailable`."""
    try:
        yield
    except _UNAVAILABLE as e:
        if isinstance(e, asyncpg.exceptions.ReadOnlySQLTransactionError):
            _replace_connections()
        raise StoreUnavailable(f"PostgreSQL unavailable: {str(e) or type(e).__name__}") from e  # a timeout says nothing


# What one member of a batch's statement can make the server refuse (SQLSTATE classes 22 and 23; asyncpg raises an
# argument it cannot encode as a DataError too): the batch is split to find it, rather than failed as a whole.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@contextlib.contextmanager
def answering(waiting: Sequence[asyncio.Future[Any]], what: str) -> Iterator[None]:
    """A batch's write: whatever the block leaves unanswered fails, with the block's error when it raised (the
    store lost: no member knows whether it was written), or as interrupted (the shard stops), so that nobody
    waits for an answer that will not come."""
    try:
        yield
    except Exception as e:
        for f in waiting:
            if not f.done():  # an exception of its own each (a shared one gathers every raiser's frames)
                f.set_exception(StoreUnavailable(str(e)) if isinstance(e, StoreUnavailable) else e)
    finally:
        for f in waiting:
            if not f.done():
                f.set_exception(StoreUnavailable(f"the {what} was interrupted; retry"))
