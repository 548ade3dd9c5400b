"""Batched calls to one actor (actors.call_batches), with the actor's side in the same event loop: what
a batch carries, what each caller gets back, and that a call nobody waits for does not run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from actors import call_batches, lanes
from actors.call_batches import Answer, BatchRunner, Call, CallBatches, Key, Withdrawn
from actors.client import InventoryClient, OrderClient
from domain.errors import DomainError

FAR = time.time() + 3600  # a caller's deadline far away


class Refused(DomainError):
    pass


class Target:
    """An actor's methods: ``slow`` waits until released, so a test decides when a batch comes back."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, Any]] = []
        self.release = asyncio.Event()
        self.cancelled: list[Any] = []

    async def echo(self, value: Any) -> Any:
        self.ran.append(("echo", value))
        return value

    async def refuse(self, value: Any) -> Any:
        self.ran.append(("refuse", value))
        raise Refused(f"no {value}")

    async def crash(self, value: Any) -> Any:
        raise KeyError(value)

    async def slow(self, value: Any) -> Any:
        self.ran.append(("slow", value))
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(value)
            raise
        return value


class Link:
    """The Ray call between the two sides, made in-process; counts the batches and can hold them back."""

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner
        self.batches: list[list[str]] = []
        self.under_way = self.peak = 0
        self.open = asyncio.Event()
        self.open.set()
        self.withdrawn: list[Key] = []
        self.deliver_withdrawals = True

    async def send(self, awaited: Callable[[], list[Call]]) -> dict[Key, Answer]:
        calls = awaited()
        self.batches.append([f"{method}:{args[0]}" for _, method, args, _ in calls])
        self.under_way += 1
        self.peak = max(self.peak, self.under_way)
        try:
            await self.open.wait()
            answers = await self.runner.run(calls)
        finally:
            self.under_way -= 1
        return {c[0]: a for c, a in zip(calls, answers, strict=True)}

    def withdraw(self, keys: list[Key]) -> None:
        self.withdrawn += keys
        if self.deliver_withdrawals:
            self.runner.withdraw(keys)


def wire(timeout: float = 30.0, max_in_flight: int = 1) -> tuple[Target, Link, CallBatches]:
    target = Target()
    link = Link(BatchRunner(target, {"echo", "refuse", "crash", "slow"}, (DomainError,)))
    return target, link, CallBatches(link.send, link.withdraw, timeout, max_in_flight=max_in_flight)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_calls_made_while_a_batch_is_under_way_share_the_next_one_and_each_gets_its_own_answer() -> None:
    _, link, batches = wire()
    link.open.clear()
    first = asyncio.ensure_future(batches.call("echo", 0))
    await settle()  # the first call left alone, at once
    rest = [asyncio.ensure_future(batches.call("refuse" if n == 3 else "echo", n)) for n in range(1, 6)]
    await settle()
    link.open.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert link.batches == [["echo:0"], ["echo:1", "echo:2", "refuse:3", "echo:4", "echo:5"]]
    assert results[:2] == [1, 2] and results[3:] == [4, 5]
    assert isinstance(results[2], Refused) and str(results[2]) == "no 3"  # the refused call fails alone


async def test_an_unexpected_error_of_a_call_is_its_own_and_reported_by_its_text() -> None:
    _, _, batches = wire(max_in_flight=2)
    got = await asyncio.gather(batches.call("crash", "k"), batches.call("echo", "fine"), return_exceptions=True)
    assert isinstance(got[0], RuntimeError) and "KeyError" in str(got[0])
    assert got[1] == "fine"


async def test_a_caller_that_gives_up_before_its_batch_left_is_never_run() -> None:
    target, link, batches = wire()
    link.open.clear()
    first = asyncio.ensure_future(batches.call("echo", "first"))
    await settle()
    gone = asyncio.ensure_future(batches.call("echo", "gone"))
    kept = asyncio.ensure_future(batches.call("echo", "kept"))
    await settle()
    gone.cancel()
    await settle()
    link.open.set()
    assert [await first, await kept] == ["first", "kept"]
    assert ("echo", "gone") not in target.ran and link.withdrawn == []
    assert link.batches == [["echo:first"], ["echo:kept"]]


async def test_a_caller_that_gives_up_while_its_call_runs_has_it_cancelled_in_the_actor() -> None:
    target, _, batches = wire(timeout=1.0)  # a call that arrives after its deadline would never run
    with pytest.raises(TimeoutError):
        await batches.call("slow", "late")
    await settle()
    assert target.cancelled == ["late"]  # withdrawn: it will not take effect later on its own
    target.release.set()
    assert await batches.call("slow", "next") == "next"


async def test_a_withdrawal_that_arrives_before_the_call_drops_the_call() -> None:
    target, link, batches = wire()
    link.open.clear()
    call = asyncio.ensure_future(batches.call("echo", "overtaken"))
    await settle()  # the batch has left (send was called) but is held on its way
    call.cancel()
    await settle()
    assert len(link.withdrawn) == 1
    link.open.set()
    await settle()
    assert ("echo", "overtaken") not in target.ran


async def test_a_failed_batch_fails_each_of_its_calls_with_an_error_of_its_own() -> None:
    async def broken(awaited: Callable[[], list[Call]]) -> dict[Key, Answer]:
        raise ConnectionError("the actor is gone")

    batches = CallBatches(broken, lambda keys: None, 30.0, max_in_flight=1)
    got = await asyncio.gather(*[batches.call("echo", n) for n in range(3)], return_exceptions=True)
    assert all(isinstance(e, ConnectionError) for e in got)
    assert len({id(e) for e in got}) == 3


async def test_a_method_outside_the_batchable_ones_is_refused() -> None:
    target = Target()
    runner = BatchRunner(target, {"echo"}, (DomainError,))
    with pytest.raises(ValueError, match="slow cannot be called in a batch"):
        await runner.run([(("c", 1), "echo", ("first",), FAR), (("c", 2), "slow", ("x",), FAR)])
    await settle()
    assert target.ran == []  # refused whole: no call of it started


async def test_an_answer_for_a_withdrawn_call_says_so() -> None:
    target = Target()
    runner = BatchRunner(target, {"echo"}, (DomainError,))
    runner.withdraw([("c", 1)])
    [(ok, error)] = await runner.run([(("c", 1), "echo", ("x",), FAR)])
    assert not ok and isinstance(error, Withdrawn) and target.ran == []


async def test_a_call_that_arrives_after_its_callers_deadline_never_runs() -> None:
    """A batch sent again (Ray's retry after the actor died) carries calls whose callers gave up meanwhile,
    and whose withdrawals died with the actor: their deadlines keep them from running."""
    target = Target()
    runner = BatchRunner(target, {"echo"}, (DomainError,))
    answers = await runner.run([(("c", 1), "echo", ("late",), time.time() - 1), (("c", 2), "echo", ("live",), FAR)])
    assert answers[1] == (True, "live") and not answers[0][0] and isinstance(answers[0][1], Withdrawn)
    assert target.ran == [("echo", "live")]


async def test_a_wrong_call_fails_alone_as_its_answer() -> None:
    target = Target()
    runner = BatchRunner(target, {"echo"}, (DomainError,))
    answers = await runner.run([(("c", 1), "echo", ("a", "surplus"), FAR), (("c", 2), "echo", ("b",), FAR)])
    assert not answers[0][0] and isinstance(answers[0][1], RuntimeError) and "TypeError" in str(answers[0][1])
    assert answers[1] == (True, "b")


async def test_new_calls_do_not_wait_behind_a_stalled_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(call_batches, "_clock", lambda: clock[0])
    target, link, batches = wire(max_in_flight=1)
    stuck = asyncio.ensure_future(batches.call("slow", "stuck"))
    await settle()
    held = asyncio.ensure_future(batches.call("echo", "held"))
    await settle()
    assert link.batches == [["slow:stuck"]]  # the first batch is under way and young: the next call waits
    clock[0] += call_batches.STALLED + 0.001
    passing = asyncio.ensure_future(batches.call("echo", "passing"))
    assert await passing == "passing" and await held == "held"  # both left in a batch of their own
    assert link.batches == [["slow:stuck"], ["echo:held", "echo:passing"]]
    target.release.set()
    assert await stuck == "stuck"


async def test_a_shard_that_stays_slow_never_has_more_than_max_senders_batches_under_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(call_batches, "_clock", lambda: clock[0])
    target, link, batches = wire(max_in_flight=2)
    calls = []
    for n in range(40):  # a call every 30 ms for 1.2 s, while nothing comes back
        calls.append(asyncio.ensure_future(batches.call("slow", n)))
        await settle()
        clock[0] += 0.03
    assert link.peak == call_batches.MAX_SENDERS
    target.release.set()
    assert sorted(await asyncio.gather(*calls)) == list(range(40))  # every call left and came back, once
    assert sorted(int(c.split(":")[1]) for b in link.batches for c in b) == list(range(40))
    assert link.under_way == 0


async def test_a_call_queued_behind_young_batches_leaves_when_one_comes_back_though_older_ones_are_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(call_batches, "_clock", lambda: clock[0])
    target, link, batches = wire(max_in_flight=1)
    stuck = asyncio.ensure_future(batches.call("slow", "stuck"))
    await settle()
    clock[0] += call_batches.STALLED + 0.001  # the first batch is stalled: the next may leave
    link.open.clear()
    a = asyncio.ensure_future(batches.call("echo", "a"))
    await settle()
    b = asyncio.ensure_future(batches.call("echo", "b"))  # a's batch is young: b queues
    await settle()
    assert link.batches == [["slow:stuck"], ["echo:a"]]
    link.open.set()
    assert await asyncio.wait_for(a, 1) == "a"
    assert await asyncio.wait_for(b, 1) == "b"  # a's sender took it, though the stuck batch is still under way
    assert not stuck.done()
    target.release.set()
    assert await stuck == "stuck"


async def test_a_call_sent_again_while_its_first_copy_runs_joins_it_and_runs_once() -> None:
    target = Target()
    runner = BatchRunner(target, {"slow"}, (DomainError,))
    call: Call = (("caller", 1), "slow", ("once",), FAR)
    first = asyncio.ensure_future(runner.run([call]))
    await settle()
    again = asyncio.ensure_future(runner.run([call]))  # the reply to the first was lost: the client sent it again
    await settle()
    target.release.set()
    assert await first == await again == [(True, "once")]
    assert target.ran == [("slow", "once")]


async def test_a_new_order_leaves_for_its_shard_while_the_batch_before_it_is_under_way_and_a_sku_command_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress keeps two batches under way to an order shard (a new order does not wait for the commit of
    the one before); an order shard's SKU commands keep one, so that they share batches."""
    sent: list[list[Call]] = []
    release = asyncio.Event()

    async def shard(ref: Any, method: str, calls: list[Call], timeout: float, attempts: int) -> list[Answer]:
        sent.append(calls)
        await release.wait()
        return [(True, c[1]) for c in calls]

    monkeypatch.setattr(lanes, "call", shard)
    orders = OrderClient("ns", 1, batched=True)
    first = asyncio.ensure_future(orders.get_order(uuid.uuid4()))
    await settle()
    second = asyncio.ensure_future(orders.get_order(uuid.uuid4()))
    await settle()
    assert len(sent) == 2  # the second left without waiting for the first's answer

    skus = InventoryClient("ns", 1, batched=True)
    commits = [asyncio.ensure_future(skus.commit(uuid.uuid4(), uuid.uuid4(), "order:1"))]
    await settle()
    commits += [asyncio.ensure_future(skus.commit(uuid.uuid4(), uuid.uuid4(), "order:1")) for _ in range(2)]
    await settle()
    assert len(sent) == 3  # the first commit went at once; the other two wait, together, for its answer
    release.set()
    assert await first == await second == "get_order"
    assert [await c for c in commits] == ["commit"] * 3
    assert [len(calls) for calls in sent] == [1, 1, 1, 2]
