"""The correlation id reaches every record made while it is bound, and only those."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from commerce import logs


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Kept]:
    logs.install()
    handler = Kept()
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def ids(kept: Kept) -> list[str | None]:
    return [getattr(r, logs.FIELD, None) for r in kept.records]


async def test_a_request_learns_its_order_and_lines_after_that_carry_it(kept: Kept) -> None:
    log = logging.getLogger("test.logs")

    async def route() -> None:  # a route runs in a task of its own, as Starlette may run it
        log.info("before the order exists")
        logs.correlate("order-1")
        log.info("after")

    token = logs.bind()
    await asyncio.create_task(route())
    log.info("the request's own line, written after the route")
    logs.unbind(token)
    log.info("another request's")
    assert ids(kept) == [None, "order-1", "order-1", None]


async def test_two_sagas_running_at_once_keep_their_own_ids(kept: Kept) -> None:
    log = logging.getLogger("test.logs")

    async def saga(order: str, turns: int) -> None:
        logs.bind(order)
        for _ in range(turns):
            log.info(order)
            await asyncio.sleep(0)

    await asyncio.gather(saga("a", 3), saga("b", 3))
    assert all(getattr(r, logs.FIELD) == r.getMessage() for r in kept.records) and len(kept.records) == 6
