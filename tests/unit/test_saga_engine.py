"""The saga engine on a clock of its own, over orders kept in memory: no Ray, no store, no waiting."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from actors.saga_engine import Clock, OrderEntity, SagaEngine
from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from domain.events import DomainEvent, Metadata, Recorded
from tests.unit.test_order_domain import created, given

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Provider = Callable[[sg.RunStep], sg.StepResult]


class FakeClock(Clock):
    """Time moves only when the engine waits, by exactly what it waits."""

    def __init__(self) -> None:
        self.at = START
        self.slept: list[float] = []  # backoffs of the engine's own failures
        self.waited: list[float] = []  # waits for a step's retry

    def now(self) -> dt.datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        if not event.is_set():
            self.waited.append(seconds)
            self.at += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0)


class Held:
    def __init__(self, entity_id: uuid.UUID, state: OrderEntity) -> None:
        self.id = entity_id
        self.state = state
        self.lock = asyncio.Lock()


class Orders:
    """A SagaHost in memory: events are applied as the store would fold them."""

    def __init__(self, clock: FakeClock, providers: dict[sg.Step, Provider] | None = None,
                 failing_records: int = 0) -> None:
        self.clock = clock
        self.providers = providers or {}
        self.failing_records = failing_records
        self.entities: dict[uuid.UUID, Held] = {}
        self.calls: list[tuple[sg.Step, int]] = []

    def place(self, policy: sg.SagaPolicy) -> uuid.UUID:
        order = given(created())
        assert order is not None
        held = Held(order.order_id, OrderEntity(order, None))
        self.entities[order.order_id] = held
        self._apply(held, sg.with_next_attempt(order.saga_id, None, sg.decide_start(
            order.saga_id, order.order_id, self.clock.now(), policy), self.clock.now(), policy), [])
        return order.order_id

    @contextlib.asynccontextmanager
    async def entity(self, order_id: uuid.UUID) -> AsyncIterator[Held]:
        held = self.entities[order_id]
        async with held.lock:
            yield held

    async def record(self, ent: Held, saga_events: list[DomainEvent], order_events: list[DomainEvent]) -> bool:
        if self.failing_records and not any(isinstance(e, sg.SagaParked) for e in saga_events):
            self.failing_records -= 1
            raise RuntimeError("a bug in the engine's own work")
        self._apply(ent, saga_events, order_events)
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
    return SagaEngine(orders, policy, lambda order_id: orders.entities[order_id].state.order.saga_id,  # type: ignore[union-attr]
                      clock=orders.clock)


def state(orders: Orders, order_id: uuid.UUID) -> tuple[o.Order, sg.Saga]:
    ent = orders.entities[order_id].state
    assert ent.order is not None and ent.saga is not None
    return ent.order, ent.saga


POLICY = sg.SagaPolicy(retry_attempts=3, retry_delay=5.0, timeout=300.0, compensation_timeout=60.0)


async def test_a_saga_runs_every_step_once_and_confirms_the_order() -> None:
    orders = Orders(FakeClock())
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    order, saga = state(orders, order_id)
    assert saga.status is sg.SagaStatus.COMPLETED and order.status is o.OrderStatus.CONFIRMED
    assert orders.calls == [(step, 1) for step in sg.STEPS] and orders.clock.waited == []


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


async def test_when_its_own_work_keeps_failing_the_engine_backs_off_with_jitter_then_parks_the_saga() -> None:
    orders = Orders(FakeClock(), failing_records=100)
    order_id = orders.place(POLICY)
    saga_id = state(orders, order_id)[1].saga_id
    await engine(orders, POLICY).drive(order_id)  # ends: the saga waits for an operator
    saga = state(orders, order_id)[1]
    assert saga.status is sg.SagaStatus.FAILED and "the engine failed 8 times in a row" in (saga.last_error or "")
    expected = [sg.engine_backoff(saga_id, n) for n in range(1, sg.PARK_AFTER_FAILURES)]
    assert orders.clock.slept == pytest.approx(expected) and expected[1] == 2 * expected[0]


async def test_the_engine_recovers_when_its_own_work_fails_only_for_a_while() -> None:
    orders = Orders(FakeClock(), failing_records=3)
    order_id = orders.place(POLICY)
    await engine(orders, POLICY).drive(order_id)
    assert state(orders, order_id)[1].status is sg.SagaStatus.COMPLETED
    assert len(orders.clock.slept) == 3
