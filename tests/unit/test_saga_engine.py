"""The saga engine on a clock of its own, over orders kept in memory: no Ray, no store, no waiting."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from actors.saga_engine import SagaEngine
from actors.saga_host import Clock, OrderEntity
from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from domain.events import DomainEvent, Metadata, Recorded
from tests.unit.test_order_domain import created, given

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Provider = Callable[[sg.RunStep], sg.StepResult]


class FakeClock(Clock):
    """Time moves only when the engine waits, by exactly what it waits."""

    def __init__(self, hold: bool = False) -> None:
        self.at = START
        self.hold = hold  # waits last until something wakes the saga (time does not pass by itself)
        self.waiting = asyncio.Event()
        self.waited: list[float] = []  # what the engine waited for: a step's retry, or its own backoff

    def now(self) -> dt.datetime:
        return self.at

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        if self.hold:
            self.waiting.set()
            await event.wait()
            return
        if not event.is_set():
            self.waited.append(seconds)
            self.at += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0)


class TickingClock(FakeClock):
    """A FakeClock whose ticks come when the test says: ``beat`` lets the waiters of one tick go on."""

    def __init__(self) -> None:
        super().__init__()
        self.ticked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting_for_tick = 0
        self.asked: set[tuple[float, float]] = set()  # the ticks waited for: (seconds, phase)

    async def tick(self, seconds: float, phase: float = 0.0) -> None:
        self.asked.add((seconds, phase))
        self.waiting_for_tick += 1
        try:
            await asyncio.shield(self.ticked)
        finally:
            self.waiting_for_tick -= 1

    async def beat(self) -> None:
        for _ in range(50):  # the drivers just started reach their wait first
            await asyncio.sleep(0)
        self.ticked.set_result(None)
        self.ticked = asyncio.get_running_loop().create_future()
        for _ in range(50):  # the steps under way run to their end, or to their next tick
            await asyncio.sleep(0)


class Held:
    def __init__(self, entity_id: uuid.UUID, state: OrderEntity) -> None:
        self.id = entity_id
        self.state = state
        self.lock = asyncio.Lock()


class Orders:
    """A SagaHost in memory: events are applied as the store would fold them."""

    def __init__(self, clock: FakeClock, providers: dict[sg.Step, Provider] | None = None,
                 failing: Callable[[list[DomainEvent]], bool] = lambda events: False) -> None:
        self.clock = clock
        self.providers = providers or {}
        self.failing = failing  # which writes raise, as a bug in the engine's own work would
        self.error: Callable[[], Exception] = lambda: RuntimeError("a bug in the engine's own work")
        self.entities: dict[uuid.UUID, Held] = {}
        self.calls: list[tuple[sg.Step, int]] = []
        self.order_events: list[str] = []
        self.between: Callable[[], Awaitable[None]] | None = None  # runs once, in a gap the tests choose
        self.releases_to_gap = 0

    def place(self, policy: sg.SagaPolicy, order_id: uuid.UUID | None = None) -> uuid.UUID:
        order = given(created())
        assert order is not None
        if order_id is not None:  # another order like it
            order = dataclasses.replace(order, order_id=order_id, saga_id=ff.saga_id_of(order_id))
        held = Held(order.order_id, OrderEntity(order, None))
        self.entities[order.order_id] = held
        self._apply(held, sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, self.clock.now(), policy), self.clock.now(), policy), [])
        return order.order_id

    @contextlib.asynccontextmanager
    async def entity(self, order_id: uuid.UUID) -> AsyncIterator[Held]:
        held = self.entities[order_id]
        async with held.lock:
            yield held
        # The shard's mailbox, too, is free before the driver goes on (EntityHost writes a snapshot then).
        if self.releases_to_gap:
            self.releases_to_gap -= 1
            if not self.releases_to_gap and self.between is not None:
                await self.between()

    async def record(self, ent: Held, saga_events: list[DomainEvent], order_events: list[DomainEvent]) -> bool:
        if self.failing(saga_events):
            raise self.error()
        self._apply(ent, saga_events, order_events)
        self.order_events += [type(e).__name__ for e in order_events]
        return True

    async def run_step(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> tuple[sg.StepResult, ff.StepData]:
        self.calls.append((sg.Step(action.step), action.attempt))
        result = self.providers.get(sg.Step(action.step), lambda a: sg.StepResult(True))(action)
        return result, ff.StepData("pay_1", "shp_1", order.reservations)

    def _apply(self, held: Held, saga_events: list[DomainEvent], order_events: list[DomainEvent]) -> None:
        state = held.state
        assert state.order is not None
        saga, order = state.saga, state.order
        for e in saga_events:
            version = (saga.version if saga else 0) + 1
            saga = sg.evolve(saga, Recorded(order.saga_id, sg.AGGREGATE_TYPE, version, e, self._meta()))
        for e in order_events:
            order = o.evolve(order, Recorded(order.order_id, o.AGGREGATE_TYPE, order.version + 1, e, self._meta()))
        assert order is not None
        held.state = OrderEntity(order, saga)

    def _meta(self) -> Metadata:
        return Metadata(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), None, self.clock.now())


def fails(times: int, retryable: bool = True) -> Provider:
    calls = {"n": 0}

    def provider(action: sg.RunStep) -> sg.StepResult:
        calls["n"] += 1
        return sg.StepResult(False, retryable=retryable, error="down") if calls["n"] <= times else sg.StepResult(True)

    return provider


def engine(orders: Orders, policy: sg.SagaPolicy) -> SagaEngine:
    return SagaEngine(orders, policy, clock=orders.clock)


def attempts_of(step: sg.Step, times: int | None = None) -> Callable[[list[DomainEvent]], bool]:
    """Writes that carry an attempt of ``step`` fail (the first ``times`` of them, or all): the outcome of
    the step before it, which writes that attempt ahead."""
    left = {"n": times if times is not None else 10**9}

    def failing(events: list[DomainEvent]) -> bool:
        hit = any(isinstance(e, sg.StepAttempted) and e.step == step for e in events) and left["n"] > 0
        left["n"] -= hit
        return hit

    return failing


def state(orders: Orders, order_id: uuid.UUID) -> tuple[o.Order, sg.Saga]:
    ent = orders.entities[order_id].state
    assert ent.order is not None and ent.saga is not None
    return ent.order, ent.saga


async def compensated_by_hand(orders: Orders, eng: SagaEngine, order_id: uuid.UUID, reason: str) -> None:
    """What the order shard does for an operator's compensate or a customer's cancel."""
    async with orders.entity(order_id) as ent:
        order, saga = state(orders, order_id)
        command = ff.implied(order, sg.decide_compensate(saga, reason))
        assert await orders.record(ent, command.saga_events, command.order_events)
    eng.wake(order_id, cancel_call=True)


POLICY = sg.SagaPolicy(retry_attempts=3, retry_delay=5.0, timeout=300.0, compensation_timeout=60.0)


async def test_a_saga_runs_every_step_once_and_confirms_the_order() -> None:
    orders = Orders(FakeClock())
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPLETED and order.status is o.OrderStatus.CONFIRMED
    assert orders.calls == [(step, 1) for step in sg.STEPS] and orders.clock.waited == []


async def test_with_a_tick_the_sagas_under_way_take_their_steps_together_and_only_on_a_tick() -> None:
    clock = TickingClock()
    orders = Orders(clock)
    eng = SagaEngine(orders, POLICY, clock=clock, tick=0.05, phase=0.025)
    first = orders.place(POLICY)
    eng.drive(first)
    await clock.beat()  # the first saga alone takes its first step
    assert orders.calls == [(sg.STEPS[0], 1)]
    second = orders.place(POLICY, uuid.uuid4())  # placed between two ticks
    eng.drive(second)
    for _ in range(20):
        await asyncio.sleep(0)
    assert orders.calls == [(sg.STEPS[0], 1)] and clock.waiting_for_tick == 2  # nothing moves between ticks
    await clock.beat()  # from here on, each tick takes each saga one step further
    assert orders.calls[1:] == [(sg.STEPS[1], 1), (sg.STEPS[0], 1)]
    for _ in range(len(sg.STEPS) - 1):  # the second saga's last steps
        await clock.beat()
    assert not eng.drivers  # both at their end, and gone without waiting for another tick
    steps = sg.STEPS
    in_step = [steps[0], *[s for n in range(1, len(steps)) for s in (steps[n], steps[n - 1])], steps[-1]]
    assert [s for s, _ in orders.calls] == in_step  # on every tick, one step of each: the first one step ahead
    for order_id in (first, second):
        order, saga = state(orders, order_id)
        assert saga.status is sg.SagaStatus.COMPLETED and order.status is o.OrderStatus.CONFIRMED
    assert clock.asked == {(0.05, 0.025)}


async def test_a_compensation_that_lands_while_a_saga_waits_for_its_tick_is_what_the_tick_runs() -> None:
    clock = TickingClock()
    orders = Orders(clock)
    eng = SagaEngine(orders, POLICY, clock=clock, tick=0.05)
    order_id = orders.place(POLICY)
    driver = eng.drive(order_id)
    await clock.beat()  # reserved; the payment is written ahead, its call waits for the next tick
    assert orders.calls == [(sg.Step.RESERVE_INVENTORY, 1)] and clock.waiting_for_tick == 1
    await compensated_by_hand(orders, eng, order_id, "cancelled by customer")
    for _ in range(3):
        await clock.beat()
    assert driver.done() and not eng.drivers
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED and order.status is o.OrderStatus.CANCELLED
    assert (sg.Step.PROCESS_PAYMENT, 1) not in orders.calls  # the payment decided before it was never made


@pytest.mark.parametrize(("now", "phase", "delay"), [
    (12.34, 0.0, 0.01), (12.35, 0.0, 0.0), (12.3500001, 0.0, 0.0499999), (12.34, 0.02, 0.03), (12.36, 0.02, 0.01),
])
async def test_a_tick_waits_until_the_next_beat_at_its_phase(monkeypatch: pytest.MonkeyPatch, now: float, phase: float,
                                                             delay: float) -> None:
    loop = asyncio.get_running_loop()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(loop, "time", lambda: now)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    await Clock().tick(0.05, phase)
    assert slept == [pytest.approx(delay, abs=1e-6)]


async def test_a_failing_call_is_retried_after_its_backoff() -> None:
    orders = Orders(FakeClock(), {sg.Step.PROCESS_PAYMENT: fails(2)})
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPLETED
    assert [a for s, a in orders.calls if s is sg.Step.PROCESS_PAYMENT] == [1, 2, 3]
    assert orders.clock.waited == [5.0, 10.0]  # the policy's backoff, doubling


async def test_a_saga_past_its_deadline_is_compensated_and_the_order_cancelled() -> None:
    slow = sg.SagaPolicy(retry_attempts=5, retry_delay=200.0, timeout=300.0, compensation_timeout=60.0)
    orders = Orders(FakeClock(), {sg.Step.PROCESS_PAYMENT: fails(10)})
    order_id = orders.place(slow)
    await engine(orders, slow).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.reason == "saga timed out"
    assert order.status is o.OrderStatus.CANCELLED
    assert orders.clock.at - START >= dt.timedelta(seconds=300)  # no sooner than its deadline
    assert (sg.Step.RELEASE_INVENTORY, 1) in orders.calls  # what it had reserved is given back


async def test_a_compensation_that_fails_for_good_parks_the_saga_for_an_operator() -> None:
    orders = Orders(FakeClock(), {sg.Step.CREATE_SHIPMENT: fails(1, retryable=False),
                                  sg.Step.REFUND_PAYMENT: fails(10)})
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.FAILED and saga.current_step == sg.Step.REFUND_PAYMENT
    assert order.status is o.OrderStatus.COMPENSATING
    assert [a for s, a in orders.calls if s is sg.Step.REFUND_PAYMENT] == [1, 2, 3]


async def test_when_its_own_work_keeps_failing_forward_the_engine_backs_off_then_compensates() -> None:
    orders = Orders(FakeClock(), failing=attempts_of(sg.Step.PROCESS_PAYMENT))
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED and "the engine failed 8 times in a row" in (saga.reason or "")
    assert order.status is o.OrderStatus.CANCELLED
    assert order.reason == "the order could not be processed"  # the customer sees no text of the engine's error
    # The reservation's outcome was never recorded; the compensation gives back what the order may hold.
    assert orders.order_events == ["OrderCompensationStarted", "InventoryReleased", "OrderCancelled"]
    backoffs = [sg.engine_backoff(order_id, n) for n in range(1, sg.STUCK_AFTER_FAILURES)]
    assert orders.clock.waited == pytest.approx(backoffs) and backoffs[1] == 2 * backoffs[0]


async def test_a_compensation_the_engine_cannot_carry_on_is_parked_for_an_operator() -> None:
    orders = Orders(FakeClock(), {sg.Step.CREATE_SHIPMENT: fails(1, retryable=False)},
                    failing=attempts_of(sg.Step.REFUND_PAYMENT))
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)  # ends: the saga waits for an operator
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.FAILED and saga.current_step == sg.Step.CANCEL_SHIPMENT
    assert not saga.in_flight  # the attempt written ahead is recorded as failed
    assert "the engine failed 8 times in a row" in (saga.last_error or "")
    assert order.status is o.OrderStatus.COMPENSATING


async def test_failures_count_in_a_row_only() -> None:
    payment, confirm = attempts_of(sg.Step.PROCESS_PAYMENT, 7), attempts_of(sg.Step.CONFIRM_ORDER, 7)
    patient = dataclasses.replace(POLICY, timeout=3600.0)  # the backoffs take minutes; the deadline is not tested
    orders = Orders(FakeClock(), failing=lambda events: payment(events) or confirm(events))
    order_id = orders.place(patient)
    await engine(orders, patient).drive(order_id)  # 7 failures, progress, 7 more: never 8 in a row
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPLETED and len(orders.clock.waited) == 14


async def test_an_operators_compensation_wakes_a_saga_waiting_for_a_retry() -> None:
    orders = Orders(FakeClock(hold=True), {sg.Step.PROCESS_PAYMENT: fails(10)})
    order_id = orders.place(POLICY)
    eng = engine(orders, POLICY)
    driver = eng.drive(order_id)
    await orders.clock.waiting.wait()  # the payment failed; the saga waits for its retry
    await compensated_by_hand(orders, eng, order_id, "changed my mind")
    orders.clock.hold = False
    await asyncio.wait_for(driver, 10)  # woken, it does not wait for the retry
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.reason == "changed my mind"
    assert order.status is o.OrderStatus.CANCELLED and orders.clock.at == START  # no retry was waited for
    assert [a for s, a in orders.calls if s is sg.Step.PROCESS_PAYMENT] == [1]


async def test_the_stores_passing_trouble_is_waited_out_and_never_counted() -> None:
    orders = Orders(FakeClock(), failing=attempts_of(sg.Step.PROCESS_PAYMENT, times=12))
    orders.error = lambda: asyncpg.exceptions.SerializationError("could not serialize access")
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)  # 12 conflicts in a row: more than 8, and no giving up
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPLETED and orders.clock.waited == [1.0] * 12


async def test_an_error_of_the_store_that_comes_back_every_time_counts() -> None:
    orders = Orders(FakeClock(), failing=attempts_of(sg.Step.PROCESS_PAYMENT))
    orders.error = lambda: asyncpg.exceptions.UndefinedColumnError('column "x" does not exist')
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPENSATED


async def test_an_operators_compensation_wakes_a_saga_from_the_engines_backoff() -> None:
    orders = Orders(FakeClock(hold=True), failing=attempts_of(sg.Step.PROCESS_PAYMENT))
    order_id = orders.place(POLICY)
    eng = engine(orders, POLICY)
    driver = eng.drive(order_id)
    await orders.clock.waiting.wait()  # the engine failed once and backs off
    await compensated_by_hand(orders, eng, order_id, "changed my mind")
    orders.clock.hold = False
    await asyncio.wait_for(driver, 10)
    saga = state(orders, order_id)[1]
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.reason == "changed my mind"
    assert orders.clock.at == START  # the backoff was cut short


async def test_a_command_that_lands_between_a_decision_to_wait_and_the_wait_is_not_lost() -> None:
    orders = Orders(FakeClock(hold=True), {sg.Step.PROCESS_PAYMENT: fails(10)})
    order_id = orders.place(POLICY)
    eng = engine(orders, POLICY)

    orders.between = lambda: compensated_by_hand(orders, eng, order_id, "changed my mind")
    # Releases of the order: the pass that calls reserve_inventory, its outcome (payment written ahead), the
    # pass that calls process_payment, its failed outcome, then the pass that decides to wait for the retry.
    orders.releases_to_gap = 5
    await asyncio.wait_for(eng.drive(order_id), 10)  # a lost wake-up would wait for the retry forever here
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.reason == "changed my mind"
    assert [a for s, a in orders.calls if s is sg.Step.PROCESS_PAYMENT] == [1]


async def test_a_cancel_that_lands_as_the_saga_completes_is_not_lost() -> None:
    orders = Orders(FakeClock())
    order_id = orders.place(POLICY)
    eng = engine(orders, POLICY)
    seen: list[sg.SagaStatus] = []

    async def cancel() -> None:  # another command, in the gap between the last outcome and the driver's end
        seen.append(state(orders, order_id)[1].status)
        await compensated_by_hand(orders, eng, order_id, "changed my mind")

    orders.between = cancel
    orders.releases_to_gap = 2 * len(sg.STEPS)  # each step's pass, then its outcome: the last is the confirmation
    await asyncio.wait_for(eng.drive(order_id), 10)
    order, saga = state(orders, order_id)
    assert seen == [sg.SagaStatus.COMPLETED]
    assert saga.status is sg.SagaStatus.COMPENSATED and order.status is o.OrderStatus.CANCELLED  # not left half done
    assert not eng.drivers


async def test_a_call_decided_before_a_compensation_landed_is_not_made() -> None:
    orders = Orders(FakeClock())
    order_id = orders.place(POLICY)
    eng = engine(orders, POLICY)

    orders.between = lambda: compensated_by_hand(orders, eng, order_id, "operator")
    # Releases of the order: the pass that calls reserve_inventory, its outcome (payment written ahead), then
    # the pass that decides to call process_payment.
    orders.releases_to_gap = 3
    await asyncio.wait_for(eng.drive(order_id), 10)
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPENSATED
    assert sg.Step.PROCESS_PAYMENT not in [s for s, _ in orders.calls]  # never charged


async def test_a_call_that_raises_keeps_its_error_for_operators_and_out_of_the_customers_order() -> None:
    def raises(action: sg.RunStep) -> sg.StepResult:
        raise ConnectionRefusedError("connect to 10.0.3.7:5432 refused")

    orders = Orders(FakeClock(), {sg.Step.PROCESS_PAYMENT: raises})
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPENSATED
    assert "10.0.3.7" in (saga.reason or "") and "ConnectionRefusedError" in (saga.reason or "")
    assert order.status is o.OrderStatus.CANCELLED and order.reason == "process_payment failed"
