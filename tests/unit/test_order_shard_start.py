"""An order shard's start that fails (PostgreSQL answered the pool but not the saga scan) is tried again on
the next call: each try must not leave its pool of connections open behind it. And where in the saga step
tick each shard of a machine steps."""

from __future__ import annotations

import pytest

from actors import order_shard
from actors.order_shard import OrderShard
from commerce.settings import Settings
from store.errors import StoreUnavailable
from store.sagas import SagaStore


class Pool:
    def __init__(self, opened: list[Pool]) -> None:
        self.closed = False
        opened.append(self)

    async def close(self) -> None:
        self.closed = True


async def test_a_start_that_fails_closes_the_pool_it_opened_and_the_next_try_opens_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Pool] = []

    async def create_pool(*args: object, **kwargs: object) -> Pool:
        return Pool(opened)

    async def unfinished(self: SagaStore, include_failed: bool = True) -> list[object]:
        raise StoreUnavailable("the saga scan failed")

    monkeypatch.setattr(order_shard, "create_pool", create_pool)
    monkeypatch.setattr(SagaStore, "unfinished", unfinished)
    shard = OrderShard(Settings(database_url="unused", redis_url="unused", server_secret="s"), 0)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await shard.start()
    assert [p.closed for p in opened] == [True, True]


async def test_a_start_that_fails_is_tried_again_on_its_own_until_it_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No call needs to reach a shard that Ray restarted while PostgreSQL was away: it starts once it can."""
    from actors import base

    opened: list[Pool] = []
    failures = [StoreUnavailable("PostgreSQL is away"), StoreUnavailable("still away")]

    async def create_pool(*args: object, **kwargs: object) -> Pool:
        return Pool(opened)

    async def unfinished(self: SagaStore, include_failed: bool = True) -> list[object]:
        if failures:
            raise failures.pop(0)
        return []

    monkeypatch.setattr(order_shard, "create_pool", create_pool)
    monkeypatch.setattr(SagaStore, "unfinished", unfinished)
    monkeypatch.setattr(base, "START_RETRY", 0.001)
    shard = OrderShard(Settings(database_url="unused", redis_url="unused", server_secret="s"), 0)  # type: ignore[arg-type]
    await shard.keep_starting()
    assert shard.watch.failures["starting"] == 2 and [p.closed for p in opened] == [True, True, False]
    assert await shard.start()  # started: a call does not start it again
    assert len(opened) == 3
    for task in shard._tasks:
        task.cancel()


def test_the_order_shards_of_a_machine_tick_a_fraction_of_the_tick_apart() -> None:
    settings = Settings(database_url="unused", redis_url="unused", server_secret="s", order_shards=4,
                        saga_step_tick=0.08)
    engines = [OrderShard(settings, i).engine for i in range(4)]  # type: ignore[arg-type]
    assert {e.tick for e in engines} == {0.08}
    assert [e.phase for e in engines] == pytest.approx([0.0, 0.02, 0.04, 0.06])  # their bursts of steps do not meet
