"""What the driver raises becomes the store's own errors once (store/errors.py): a PostgreSQL that cannot serve
right now is StoreUnavailable (a 503 to a client, an outage a saga waits out); what the data causes stays itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from store import errors
from store.errors import StoreUnavailable, postgres_errors

OUTAGES = [
    ConnectionRefusedError("connection refused"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.IdleSessionTimeoutError("terminating connection due to idle-session timeout"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
]
DATA = [
    asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow"),
    asyncpg.exceptions.UndefinedColumnError("column \"x\" does not exist"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
async def test_a_server_that_cannot_serve_now_is_unavailable(error: Exception) -> None:
    with pytest.raises(StoreUnavailable) as raised, postgres_errors():
        raise error
    assert raised.value.__cause__ is error


async def test_an_outage_without_words_is_named_by_its_kind() -> None:
    with pytest.raises(StoreUnavailable) as raised, postgres_errors():
        raise TimeoutError()  # asyncpg's connect and command timeouts
    assert str(raised.value) == "PostgreSQL unavailable: TimeoutError"


@pytest.mark.parametrize("error", DATA, ids=lambda e: type(e).__name__)
async def test_what_the_data_or_the_code_causes_stays_itself(error: Exception) -> None:
    with pytest.raises(type(error)), postgres_errors():
        raise error


class Pool:
    """What the registry uses of an asyncpg pool: whether it is closing, and replacing its connections."""

    def __init__(self) -> None:
        self.replaced = 0
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def expire_connections(self) -> Awaitable[None]:
        self.replaced += 1
        return asyncio.sleep(0)


def refused() -> None:
    with pytest.raises(StoreUnavailable), postgres_errors():
        raise asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction")


async def test_a_server_that_stays_read_only_has_the_connections_replaced_once_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(errors, "_clock", lambda: now[0])
    monkeypatch.setattr(errors, "_pools", {})
    pool, closed = Pool(), Pool()
    errors.replaced_after_failover(pool)  # type: ignore[arg-type]
    errors.replaced_after_failover(closed)  # type: ignore[arg-type]
    closed.closing = True
    for _ in range(3):
        refused()
    assert pool.replaced == 1 and closed.replaced == 0
    now[0] += errors.REPLACE_EVERY
    refused()
    assert pool.replaced == 2
    now[0] += errors.REPLACE_EVERY
    with pytest.raises(StoreUnavailable), postgres_errors():
        raise asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")
    assert pool.replaced == 2  # only a read-only server's refusal replaces them (a closed connection goes anyway)
    await asyncio.gather(*errors._expiring)
