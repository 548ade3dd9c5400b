"""Cart changes hold a connection of the replica's pool while they wait for Redis (store/durable_carts.py): only a
few of them may hold one at once, so that the pool's other users never wait for a Redis that does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from store import durable_carts
from store.durable_carts import CartJournal
from store.errors import StoreUnavailable


class Connection:
    async def execute(self, *args: Any) -> None:
        return None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class Pool:
    """Counts the connections held at once."""

    def __init__(self) -> None:
        self.held = 0
        self.most = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        self.held += 1
        self.most = max(self.most, self.held)
        try:
            yield Connection()
        finally:
            self.held -= 1


async def test_at_most_max_changing_changes_hold_a_connection_and_the_next_one_has_its_turn_after() -> None:
    pool = Pool()
    journal = CartJournal(pool, max_changing=2)  # type: ignore[arg-type]
    redis_answers = asyncio.Event()  # a Redis that does not answer, until it does
    holding: list[uuid.UUID] = []

    async def change() -> None:
        cart_id = uuid.uuid4()
        async with journal.changing(cart_id):
            holding.append(cart_id)
            await redis_answers.wait()

    changes = [asyncio.create_task(change()) for _ in range(3)]
    while len(holding) < 2:
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert pool.held == 2 and len(holding) == 2  # the third waits for its turn, holding nothing
    redis_answers.set()
    await asyncio.gather(*changes)
    assert len(holding) == 3 and pool.most == 2 and pool.held == 0


async def test_a_change_that_cannot_have_its_turn_in_time_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable_carts, "CHANGE_WAIT", 0.01)
    pool = Pool()
    journal = CartJournal(pool, max_changing=1)  # type: ignore[arg-type]
    stalled = asyncio.Event()

    async def stuck() -> None:
        async with journal.changing(uuid.uuid4()):
            await stalled.wait()

    first = asyncio.create_task(stuck())
    while pool.held == 0:
        await asyncio.sleep(0)
    with pytest.raises(StoreUnavailable, match="cart changes"):
        async with journal.changing(uuid.uuid4()):
            pass
    assert pool.most == 1
    stalled.set()
    await first
    async with journal.changing(uuid.uuid4()):  # its turn came back with the first one's end
        assert pool.held == 1
