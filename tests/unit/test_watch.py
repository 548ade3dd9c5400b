"""Background work's failures are counted, logged once per change of state, and reported once they persist."""

from __future__ import annotations

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
