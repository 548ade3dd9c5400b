"""The saga engine: one driver task per unfinished saga, taking it through the pure state machine.

For each step it writes the attempt ahead (before the call), makes the call outside the order's mailbox,
and records the outcome that ``domain.fulfilment`` decides, saga and order events in one transaction. It
sleeps until a retry is due (an operator's command wakes it) and compensates a saga past its deadline.
When its own work on a saga keeps raising, it backs off, then gives up going forward: it compensates a
saga still executing and parks a compensation for an operator. The shard that hosts the orders gives
it access to an order (``SagaHost``); the clock is given too, so that tests can run it on their own.

With a ``tick``, each pass over a saga (a step: its attempt written ahead, its call, its outcome; or a
retry that came due, a timeout, a command's wake-up) starts on the shard's next tick, every ``tick``
seconds at the shard's ``phase``, whenever the pass before it ended: the steps of the sagas under way
start together, so that their writes share a flush of the group commit, their SKU commands an inventory
batch, and their provider calls a ledger statement. Without it, below load, each saga's steps went alone,
each paying for its own round trips; with a tick of 50 ms an order took about half the order shard's CPU
at one client, and a little less again with the default's 100 ms (docs/benchmarks.md, sixteenth round),
for at most a tick more per pass before the order is confirmed. A saga that completed or compensated
leaves at once, without waiting for another tick.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

import asyncpg

from actors.saga_host import Clock, Held, SagaHost
from commerce import logs
from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from store.errors import StoreUnavailable

log = logging.getLogger(__name__)
STORE_RETRY = 1.0  # seconds to wait when the store is unavailable
GAVE_UP = "the order could not be processed"  # what the order shows when the engine gives up (the saga says why)
# What passes by itself: an outage, a failover, a conflict between transactions. Any other error, of the
# store's or not, would come back on every try: it counts toward giving up on the saga.
TRANSIENT_STORE_ERRORS = (
    StoreUnavailable, asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.QueryCanceledError, asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class SagaEngine:
    def __init__(self, host: SagaHost, policy: sg.SagaPolicy, clock: Clock | None = None, tick: float = 0.0,
                 phase: float = 0.0) -> None:
        self.host = host
        self.policy = policy
        self.clock = clock or Clock()
        if tick < 0:
            raise ValueError(f"a tick of {tick} s")
        self.tick = tick  # seconds between the moments when passes start; 0: each at once
        self.phase = phase  # where in the tick they start
        self.drivers: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._raising: dict[uuid.UUID, int] = {}  # failures in a row of the engine's own work, per order
        self._inflight: dict[uuid.UUID, asyncio.Task[Any]] = {}
        self._wake: dict[uuid.UUID, asyncio.Event] = {}  # set by a command; cleared as a pass reads the saga
        self._cancel_next: set[uuid.UUID] = set()  # a compensation came before the call it voids had started

    def drive(self, order_id: uuid.UUID) -> asyncio.Task[None]:
        """The order's saga driver, started unless it runs."""
        task = self.drivers.get(order_id)
        if task is None or task.done():
            task = self.drivers[order_id] = asyncio.create_task(self._drive(order_id))
        return task

    def wake(self, order_id: uuid.UUID, cancel_call: bool = False) -> None:
        """Something changed (an operator's command): look again now; with ``cancel_call``, abandon the call
        under way (its compensation runs next, and the key it used voids a late success)."""
        task = self._inflight.get(order_id)
        if cancel_call and task is not None:
            task.cancel()
        elif cancel_call:  # decided, not started yet: it must not start
            self._cancel_next.add(order_id)
        self._raising.pop(order_id, None)  # an operator acted: the engine's failures count from here
        # Kept set until the next pass reads the saga: a command that lands after a pass decided to wait, but
        # before it waits, is not lost.
        self._wake.setdefault(order_id, asyncio.Event()).set()

    async def _drive(self, order_id: uuid.UUID) -> None:
        logs.bind(order_id)  # this task's own context: every line of this saga's run names its order
        try:
            while True:
                if self.tick:
                    await self.clock.tick(self.tick, self.phase)
                if not await self._step(order_id):
                    wake = self._wake.get(order_id)
                    if wake is not None and wake.is_set():  # a command came after the pass read the saga
                        continue  # (while its mailbox was released, before this driver stopped): look again
                    break
        finally:
            if self.drivers.get(order_id) is asyncio.current_task():
                del self.drivers[order_id]
                self._raising.pop(order_id, None)
                self._wake.pop(order_id, None)
                self._cancel_next.discard(order_id)

    async def _step(self, order_id: uuid.UUID) -> bool:
        """Take the saga one step further; False when there is nothing left to do for now."""
        try:
            going = await self._advance(order_id)
        except TRANSIENT_STORE_ERRORS as e:  # the store's passing trouble, not the engine's: waited out
            log.debug("saga of order %s: the store failed (%s: %s); retrying", order_id, type(e).__name__, e)
            await self._pause(order_id, STORE_RETRY)
            return True
        except Exception as e:
            return await self._failed(order_id, e)
        self._raising.pop(order_id, None)  # a pass without failure: the count of failures in a row starts over
        return going

    async def _advance(self, order_id: uuid.UUID) -> bool:
        async with self.host.entity(order_id) as ent:
            # What this pass reads of the saga includes every command so far: their wake-ups are spent.
            self._wake.setdefault(order_id, asyncio.Event()).clear()
            self._cancel_next.discard(order_id)
            if ent.state.saga is None or ent.state.order is None:
                return False
            saga, order = ent.state.saga, ent.state.order
            at = self.clock.now()
            action = sg.next_action(saga, at, self.policy)
            if isinstance(action, sg.Idle):
                return False
            if isinstance(action, sg.TimedOut):
                timed_out = ff.implied(order, sg.with_next_attempt(saga.saga_id, saga, sg.decide_timeout(),
                                                                   at, self.policy))
                await self.host.record(ent, timed_out.saga_events, timed_out.order_events)
                return True
            # An attempt already written ahead (with the previous outcome, or before a crash) is not written again.
            if (isinstance(action, sg.RunStep) and not saga.in_flight
                    and not await self.host.record(ent, sg.decide_attempt(action), [])):
                return True
            saga = ent.state.saga
        if isinstance(action, sg.Wait):
            await self._sleep(order_id, action.until)
            return True
        if not isinstance(action, sg.RunStep):
            return False
        result, data = await self._call(order_id, order, saga, action)
        if result is None:
            return True
        async with self.host.entity(order_id) as ent:
            await self._record_outcome(ent, action, result, data)
            return ent.state.saga is None or ent.state.saga.status not in sg.TERMINAL  # at its end: nothing left

    async def _call(self, order_id: uuid.UUID, order: o.Order, saga: sg.Saga,
                    action: sg.RunStep) -> tuple[sg.StepResult | None, ff.StepData]:
        if order_id in self._cancel_next:  # compensated after this pass decided the call: it is not made
            self._cancel_next.discard(order_id)
            return None, ff.StepData()
        call: Awaitable[tuple[sg.StepResult, ff.StepData]] = self.host.run_step(order, saga, action)
        task = asyncio.create_task(asyncio.wait_for(call, max(action.timeout, 0.001)))
        self._inflight[order_id] = task
        try:
            await asyncio.wait({task})
        finally:
            self._inflight.pop(order_id, None)
        if task.cancelled():
            return None, ff.StepData()
        exc = task.exception()
        # The step took longer than it may: counted (not an outage), so that a step that always does is parked for
        # an operator (a provider too slow for the compensation timeout) rather than tried forever.
        if isinstance(exc, TimeoutError):
            return sg.StepResult(False, retryable=True, error=f"{action.step} timed out"), ff.StepData()
        if exc is not None:
            return sg.StepResult.raised(exc), ff.StepData()
        return task.result()

    async def _record_outcome(self, ent: Held, action: sg.RunStep, result: sg.StepResult, data: ff.StepData) -> None:
        saga, order = ent.state.saga, ent.state.order
        if saga is None or order is None:
            return
        decision = ff.decide_outcome(order, saga, action, result, data, self.clock.now(), self.policy)
        fields = {"saga_id": str(saga.saga_id), "step": action.step, "action": action.action.value,
                  "attempt": action.attempt, "error": result.error}
        if decision.stale:
            log.warning("saga %s of order %s: %s %s attempt %d came back after the saga moved on; not recorded",
                        saga.saga_id, order.order_id, action.action.value, action.step, action.attempt,
                        extra={**fields, "outcome": "stale"})
            return
        if not await self.host.record(ent, decision.saga_events, decision.order_events):
            return  # another write came first; the step's outcome is decided again from the state reloaded
        outcome = "succeeded" if result.ok else "failed"
        log.log(logging.INFO if result.ok else logging.WARNING, "saga %s of order %s: %s %s attempt %d %s%s",
                saga.saga_id, order.order_id, action.action.value, action.step, action.attempt, outcome,
                f": {result.error}" if result.error else "", extra={**fields, "outcome": outcome})

    async def _sleep(self, order_id: uuid.UUID, until: dt.datetime) -> None:
        event = self._wake.setdefault(order_id, asyncio.Event())
        delay = (until - self.clock.now()).total_seconds()
        if delay > 0 and not event.is_set():
            await self.clock.wait(event, delay)

    async def _failed(self, order_id: uuid.UUID, error: Exception) -> bool:
        """The engine's own work on this saga raised (a step's call cannot: its errors are outcomes, and the
        store's trouble is waited out). Back off with a jitter the order fixes; after STUCK_AFTER_FAILURES in
        a row, give up on going forward: a saga still executing is compensated, a compensation is parked."""
        failures = self._raising[order_id] = self._raising.get(order_id, 0) + 1
        text = f"{type(error).__name__}: {error}"
        log.warning("saga of order %s: the engine failed (%d in a row): %s", order_id, failures, text,
                    exc_info=error if failures == 1 else None)
        if failures >= sg.STUCK_AFTER_FAILURES:
            reason = f"the engine failed {failures} times in a row: {text}"
            for compensate in (True, False):  # if even starting the compensation fails, park the saga
                try:
                    given_up = await self._give_up(order_id, failures, reason, compensate)
                except Exception as again:  # giving up needs the store too
                    log.warning("saga of order %s: could not give up on it (%s: %s)", order_id,
                                type(again).__name__, again)
                    continue
                # None: the saga moved on meanwhile (a command came first); look at it again at once.
                return True if given_up is None else given_up
        await self._pause(order_id, sg.engine_backoff(order_id, failures))
        return True

    async def _give_up(self, order_id: uuid.UUID, failures: int, reason: str, compensate: bool) -> bool | None:
        """Compensate or park the saga; whether its driver goes on, or None when there is nothing to give up
        (it moved on meanwhile: an operator's or a customer's command came first, and the engine tries again)."""
        async with self.host.entity(order_id) as ent:
            saga, order = ent.state.saga, ent.state.order
            if self._raising.get(order_id) != failures or saga is None or order is None:
                return None
            events = sg.decide_stuck(saga, reason, compensate)
            if not events:
                return None
            given_up = ff.implied(order, events, shown=GAVE_UP)
            if not await self.host.record(ent, given_up.saga_events, given_up.order_events):
                return None
        parked = any(isinstance(e, sg.SagaParked) for e in events)
        log.error("saga of order %s: %s, %s", order_id, "parked for an operator" if parked else "compensating", reason)
        self._raising.pop(order_id, None)
        return not parked

    async def _pause(self, order_id: uuid.UUID, seconds: float) -> None:
        """Wait ``seconds``, or less if an operator's command wakes the saga."""
        await self._sleep(order_id, self.clock.now() + dt.timedelta(seconds=seconds))
