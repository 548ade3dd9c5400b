"""Calls to one actor, batched: while a batch is on its way, the calls made queue, and the next batch
carries them all in one Ray call. Each call of a batch runs as it would alone, and concurrently with the
others, on the actor's side; each caller gets its own answer or its own error.

A Ray call costs each side far more CPU than a SKU command itself (the profile in docs/benchmarks.md):
an order shard's sagas reserve and commit on the inventory shards all the time, so one call carries many.
Nothing waits for a batch to fill: the first call goes at once, and only calls made while
``max_in_flight`` batches are under way wait, for the first of them to come back.

A caller that gives up (a timeout, its saga cancelled) before its batch left is taken out and never runs;
after that, it is withdrawn: the actor cancels the call if it is still running, or drops it when it
arrives later than the withdrawal, so that a command nobody waits for does not take effect later on its
own (a SKU command already decided with others in one commit is kept, as it is when called alone). Each
call also carries its caller's deadline, and the actor drops a call that arrives after it: a batch sent
again (Ray's retries, or the client's after an actor died) cannot run a call whose caller timed out, even
where the withdrawal was lost with the actor.

The calls of one batch are answered together, when the slowest is done. So that new calls do not queue
behind a slow batch, a batch under way for longer than STALLED no longer counts against
``max_in_flight``; at most MAX_SENDERS batches are under way at once all the same. A sender whose batch
came back sends the next by the rule that lets a new sender start (fewer than ``max_in_flight`` others
young), and stops otherwise: a young one is under way and will take the queue.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

# Batches under way to one actor at once, per caller. With 2, nearly every batch carried one call (counted at
# 146 orders/s), each Ray call paid for alone; 192-199 orders/s with 1 against 165-168 with 2 in alternating
# runs (docs/benchmarks.md, sixth round).
MAX_IN_FLIGHT = 1
MAX_BATCH = 256  # calls in one batch
STALLED = 0.05  # seconds after which a batch under way no longer holds new calls back
MAX_SENDERS = 8  # batches under way to one actor at once, per caller, stalled ones included
MAX_WITHDRAWN = 10_000  # withdrawals kept for calls not arrived yet (the oldest go first; deadlines cover them)

Key = tuple[str, int]  # the caller's id, and the call's number
# What a batch carries per call: its key, the method, its arguments, and the time.time() its caller gives up at.
Call = tuple[Key, str, tuple[Any, ...], float]
Answer = tuple[bool, Any]  # True and the result, or False and the error


log = logging.getLogger(__name__)
_clock = time.monotonic  # when batches left (the tests set it)


class Withdrawn(Exception):
    """The call was withdrawn by its caller before it ran, or while it ran."""


@dataclasses.dataclass(slots=True)
class _Queued:
    key: Key
    method: str
    args: tuple[Any, ...]
    answer: asyncio.Future[Any]
    deadline: float
    sent: bool = False


class CallBatches:
    """The caller's side, for one actor: ``send`` makes the batch's Ray call with the calls that a function
    gives (those still awaited when it is called: again if it sends again) and answers by call;
    ``withdraw`` tells the actor which calls no one waits for any more (without waiting for its answer)."""

    def __init__(self, send: Callable[[Callable[[], list[Call]]], Awaitable[dict[Key, Answer]]],
                 withdraw: Callable[[list[Key]], None], timeout: float,
                 max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH) -> None:
        self._send = send
        self._withdraw = withdraw
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._caller = uuid.uuid4().hex
        self._numbers = itertools.count()
        self._queue: list[_Queued] = []
        self._senders: dict[asyncio.Task[None], float] = {}  # each sender, and when its batch left
        self.sizes: collections.deque[int] = collections.deque(maxlen=100)  # the sizes of the last batches sent

    async def call(self, method: str, *args: Any) -> Any:
        """The method's result, or the error it raised; TimeoutError when no answer came within the timeout."""
        loop = asyncio.get_running_loop()
        queued = _Queued((self._caller, next(self._numbers)), method, args, loop.create_future(),
                         time.time() + self.timeout)
        self._queue.append(queued)
        if self._young() < self.max_in_flight and len(self._senders) < MAX_SENDERS:
            task = loop.create_task(self._send_queue())
            self._senders[task] = _clock()
        try:
            return await asyncio.wait_for(asyncio.shield(queued.answer), self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._give_up(queued)
            raise

    def _young(self, but: object = None) -> int:
        """Senders whose batch left less than STALLED ago (``but`` one)."""
        now = _clock()
        return sum(1 for task, left in self._senders.items() if task is not but and now - left < STALLED)

    def _give_up(self, queued: _Queued) -> None:
        if queued.sent and not queued.answer.done():
            self._withdraw([queued.key])
        if not queued.answer.done():  # still queued: the sender leaves it out
            queued.answer.cancel()

    async def _send_queue(self) -> None:
        me = asyncio.current_task()
        try:
            first = True  # started because it was let: it sends; after that, by the rule that lets a sender start
            while self._queue and (first or self._young(but=me) < self.max_in_flight):
                first = False
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                batch = [q for q in batch if not q.answer.done()]  # not those whose callers gave up
                if batch:
                    self._senders[me] = _clock()  # type: ignore[index]
                    await self._send_batch(batch)
        finally:  # no longer counted once it takes no more batches: a call queued next starts a sender
            self._senders.pop(me, None)  # type: ignore[arg-type]

    async def _send_batch(self, batch: list[_Queued]) -> None:
        for q in batch:
            q.sent = True
        self.sizes.append(len(batch))
        try:
            answers = await self._send(
                lambda: [(q.key, q.method, q.args, q.deadline) for q in batch if not q.answer.done()])
            for q in batch:
                if q.answer.done() or q.key not in answers:  # its caller gave up meanwhile
                    continue
                ok, value = answers[q.key]
                if ok:
                    q.answer.set_result(value)
                else:
                    q.answer.set_exception(value)
        except Exception as e:  # the batch's Ray call failed: every call of it failed the same way
            for q in batch:
                if not q.answer.done():
                    q.answer.set_exception(copy.copy(e))  # an error of its own each, not one shared traceback
        finally:
            for q in batch:  # the sender was interrupted: nobody may hang on it (nor be told if gone)
                if not q.answer.done():
                    q.answer.set_exception(Withdrawn("the batch was interrupted"))
                    q.answer.add_done_callback(lambda f: f.exception())


class BatchRunner:
    """The actor's side: runs each call of a batch as a task of its own and answers them all at once."""

    def __init__(self, target: object, methods: Collection[str], errors: tuple[type[BaseException], ...]) -> None:
        self.target = target
        self.methods = frozenset(methods)
        self.errors = errors  # raised to the caller as they are; any other error is logged, and reported by its text
        self._running: dict[Key, asyncio.Task[Any]] = {}
        self._withdrawn: collections.OrderedDict[Key, None] = collections.OrderedDict()  # before they arrived

    async def run(self, calls: Sequence[Call]) -> list[Answer]:
        if unknown := {method for _, method, _, _ in calls} - self.methods:
            raise ValueError(f"{', '.join(sorted(unknown))} cannot be called in a batch")
        now = time.time()
        tasks: list[asyncio.Task[Any] | None] = []
        for key, method, args, deadline in calls:
            withdrawn = self._withdrawn.pop(key, False) is None
            if withdrawn or now > deadline:  # its caller gave up (or has by now): it never runs
                tasks.append(None)
                continue
            task = self._running.get(key)
            if task is None:  # else the call came again while it runs (sent again after a reply was lost): joined
                task = self._running[key] = asyncio.ensure_future(self._call(method, args))
            tasks.append(task)
        started = [t for t in tasks if t is not None]
        try:
            if started:
                await asyncio.wait(started)
        except asyncio.CancelledError:
            for t in started:
                t.cancel()
            raise
        finally:
            for key, _, _, _ in calls:
                self._running.pop(key, None)
        return [self._answer(t) for t in tasks]

    async def _call(self, method: str, args: tuple[Any, ...]) -> Any:
        return await getattr(self.target, method)(*args)  # inside the task: a wrong call fails as its answer

    def _answer(self, task: asyncio.Task[Any] | None) -> Answer:
        if task is None or task.cancelled():
            return False, Withdrawn("withdrawn by its caller")
        error = task.exception()
        if error is None:
            return True, task.result()
        if isinstance(error, self.errors):
            return False, error
        log.error("a batched call failed unexpectedly", exc_info=error)
        return False, RuntimeError(f"{type(error).__name__}: {error}")

    def withdraw(self, keys: Sequence[Key]) -> None:
        for key in keys:
            task = self._running.get(key)
            if task is not None:
                task.cancel()
            else:  # not arrived yet (or over): dropped if it comes
                self._withdrawn[key] = None
        while len(self._withdrawn) > MAX_WITHDRAWN:
            self._withdrawn.popitem(last=False)
