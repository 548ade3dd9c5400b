"""Background work's failures are counted, logged once per change of state, and reported once they persist."""

from __future__ import annotations

import asyncio
import logging

import pytest

from actors.watch import PERSISTS_AFTER, Watch


async def test_a_failing_task_is_counted_logged_once_and_reported_while_it_persists(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = Watch("shard")

    async def broken() -> None:
        raise OSError("connection refused")

    async def fine() -> None:
        return None

    with caplog.at_level(logging.INFO, logger="actors.watch"):
        for _ in range(PERSISTS_AFTER):
            assert await watch.run("expiring", broken) is False
        assert watch.failing() == {"expiring": "OSError: connection refused"}
        assert watch.failures["expiring"] == PERSISTS_AFTER
        assert await watch.run("expiring", fine) is True
    assert watch.failing() == {}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1 and sum("works again" in m for m in messages) == 1


async def test_one_failure_is_not_yet_a_failing_task() -> None:
    watch = Watch("shard")

    async def broken() -> None:
        raise RuntimeError("once")

    await watch.run("rescan", broken)
    assert watch.failing() == {} and watch.failures["rescan"] == 1


async def test_a_cancelled_future_shared_with_another_caller_is_a_failure_not_the_end_of_the_loop() -> None:
    watch = Watch("shard")
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits_on_shared() -> None:
        await asyncio.shield(shared)  # as a load that another caller started, and gave up

    async def loop() -> int:
        rounds = 0
        while rounds < 2:
            await watch.run("expiring", waits_on_shared)
            rounds += 1
        return rounds

    running = asyncio.create_task(loop())
    await asyncio.sleep(0)
    shared.cancel()
    assert await running == 2  # the first round failed, the loop went on
    assert watch.failures["expiring"] == 2 and not running.cancelled()


async def test_a_cancellation_of_the_task_itself_still_ends_it() -> None:
    watch = Watch("shard")
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    running = asyncio.create_task(watch.run("rescan", waits))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert watch.failures["rescan"] == 0
