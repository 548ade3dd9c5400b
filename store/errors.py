"""Errors of the persistence layer; driver errors are wrapped into these exactly once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


_UNAVAILABLE = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


@contextlib.contextmanager
def postgres_errors() -> Iterator[None]:
    """Wrap the driver's connection failures into :class:`StoreUnavailable`."""
    try:
        yield
    except _UNAVAILABLE as e:
        raise StoreUnavailable(f"PostgreSQL unavailable: {e}") from e
