"""The projector's question for its caught-up runners (store.projections.NewEvents), its answers scripted: who
is woken, what a failed or cancelled question does, and that a cancelled waiter stops waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

from store.errors import StoreUnavailable
from store.projections import NewEvents


class Scripted(NewEvents):
    """Answers from a queue: a set of names, or an exception to raise; each answer is given once asked."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(None, list(names), interval=0.001)  # type: ignore[arg-type]
        self.answers: asyncio.Queue[set[str] | Exception] = asyncio.Queue()
        self.asked = 0

    async def pending(self) -> set[str]:
        self.asked += 1
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_only_the_named_runners_are_woken_and_the_others_wait_for_a_later_answer() -> None:
    news = Scripted(["orders", "stock"])
    orders, stock = asyncio.create_task(news.wait("orders")), asyncio.create_task(news.wait("stock"))
    news.answers.put_nowait({"stock"})
    await asyncio.wait_for(stock, 10)
    assert not orders.done() and news.asked == 1  # one question for both waiters
    news.answers.put_nowait(set())
    news.answers.put_nowait({"orders"})
    await asyncio.wait_for(orders, 10)
    assert news.asked == 3


async def test_a_failed_question_wakes_every_runner_and_is_logged_once_per_run_of_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    news = Scripted(["orders", "stock"])
    caplog.set_level(logging.INFO, logger="store.projections")
    for _ in range(2):
        waiters = [asyncio.create_task(news.wait(name)) for name in news.names]
        news.answers.put_nowait(StoreUnavailable("the database is down"))
        await asyncio.wait_for(asyncio.gather(*waiters), 10)
    waiter = asyncio.create_task(news.wait("orders"))
    news.answers.put_nowait({"orders"})
    await asyncio.wait_for(waiter, 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "store.projections"]
    assert len([line for line in lines if "failed" in line]) == 1 and "the database is down" in lines[0]
    assert lines[-1] == "asking for new events works again"


async def test_a_cancelled_question_is_asked_again_and_its_waiters_keep_waiting() -> None:
    news = Scripted(["orders"])
    waiter = asyncio.create_task(news.wait("orders"))
    while news.asked == 0:  # the question is out
        await asyncio.sleep(0)
    assert news._tick is not None
    news._tick.cancel()
    news.answers.put_nowait({"orders"})  # the answer to the question asked again
    await asyncio.wait_for(waiter, 10)
    assert news.asked == 2


async def test_a_cancelled_waiter_stops_waiting_and_leaves_the_question_to_the_others() -> None:
    news = Scripted(["orders", "stock"])
    leaving, staying = asyncio.create_task(news.wait("orders")), asyncio.create_task(news.wait("stock"))
    while news.asked == 0:
        await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    news.answers.put_nowait({"stock"})
    await asyncio.wait_for(staying, 10)
    assert news.asked == 1


async def test_waiting_for_a_projection_it_does_not_ask_after_is_refused() -> None:
    with pytest.raises(ValueError, match="no projection 'carts'"):
        await Scripted(["orders"]).wait("carts")
