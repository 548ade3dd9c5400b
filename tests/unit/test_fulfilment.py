"""The process manager's decisions (domain.fulfilment): what a step's outcome, a timeout or an operator's
command records for the saga and the order, with no Ray, no store and a fixed clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from domain.errors import TransitionForbidden
from domain.events import DomainEvent, Metadata, Recorded
from tests.unit.test_order_domain import created, given

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = sg.SagaPolicy(retry_attempts=2, retry_delay=5.0, timeout=300.0, compensation_timeout=60.0)


def saga_after(*batches: list[DomainEvent]) -> sg.Saga:
    saga, version, saga_id = None, 0, uuid.uuid4()
    for events in batches:
        for e in events:
            version += 1
            saga = sg.evolve(saga, Recorded(saga_id, sg.AGGREGATE_TYPE, version, e,
                                            Metadata(uuid.uuid4(), uuid.uuid4(), saga_id, None, NOW)))
    assert saga is not None
    return saga


def started() -> tuple[o.Order, sg.Saga, sg.RunStep]:
    """An order whose saga has written its first attempt (reserve_inventory) ahead."""
    order = given(created())
    assert order is not None
    saga = saga_after(sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, NOW,
                                                                                 POLICY), NOW, POLICY))
    action = sg.next_action(saga, NOW, POLICY)
    assert isinstance(action, sg.RunStep) and action.step is sg.Step.RESERVE_INVENTORY and saga.in_flight
    return order, saga, action


def names(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_step_that_succeeds_records_its_order_event_and_writes_the_next_step_ahead() -> None:
    order, saga, action = started()
    held = (o.ReservedLine(order.lines[0].product_id, uuid.uuid4(), order.lines[0].quantity),)
    decision = ff.decide_outcome(order, saga, action, sg.StepResult(True), ff.StepData(reservations=held), NOW, POLICY)
    assert not decision.stale
    assert names(decision.saga_events) == ["StepSucceeded", "StepAttempted"]
    assert decision.saga_events[-1] == sg.StepAttempted(sg.Step.PROCESS_PAYMENT, sg.Phase.EXECUTE, 1, 1)
    assert decision.order_events == [o.InventoryReserved(held)]


def test_a_business_failure_starts_compensation_on_the_saga_and_on_the_order() -> None:
    order, saga, action = started()
    failed = sg.StepResult(False, retryable=False, error="insufficient stock")
    decision = ff.decide_outcome(order, saga, action, failed, ff.StepData(), NOW, POLICY)
    assert "CompensationStarted" in names(decision.saga_events)
    assert names(decision.order_events) == ["OrderCompensationStarted"]  # nothing reserved: no step event


def test_the_order_shows_a_business_failure_but_not_the_services_own_trouble() -> None:
    order, saga, action = started()
    declined = sg.StepResult(False, retryable=False, error="insufficient stock")
    decision = ff.decide_outcome(order, saga, action, declined, ff.StepData(), NOW, POLICY)
    assert decision.order_events == [o.OrderCompensationStarted("reserve_inventory failed: insufficient stock")]

    last = dataclasses.replace(action, attempt=POLICY.retry_attempts)  # a retryable failure, tried for the last time
    leaked = "StoreUnavailable: could not connect to 10.0.3.7:5432"
    broken = sg.StepResult(False, retryable=True, error=leaked, internal=True)
    decision = ff.decide_outcome(order, dataclasses.replace(saga, attempt=last.attempt), last, broken,
                                 ff.StepData(), NOW, POLICY)
    [started_on_saga] = [e for e in decision.saga_events if isinstance(e, sg.CompensationStarted)]
    assert leaked in started_on_saga.reason  # the operator's view keeps what happened
    assert decision.order_events == [o.OrderCompensationStarted("reserve_inventory failed")]


def test_a_cancelled_order_keeps_the_reason_it_showed_while_compensating() -> None:
    order, saga, _ = started()
    batches = [sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, NOW, POLICY), NOW, POLICY),
               sg.with_next_attempt(order.saga_id, saga, sg.decide_stuck(saga, "KeyError: 'x'"), NOW, POLICY)]
    shown = dataclasses.replace(order, status=o.OrderStatus.COMPENSATING, reason="the order could not be processed")
    while True:  # every compensation succeeds, down to the order's cancel
        saga = saga_after(*batches)
        action = sg.next_action(saga, NOW, POLICY)
        assert isinstance(action, sg.RunStep) and action.action is sg.Phase.COMPENSATE
        decision = ff.decide_outcome(shown, saga, action, sg.StepResult(True), ff.StepData(), NOW, POLICY)
        if action.step == sg.Step.CANCEL_ORDER:
            break
        batches.append(decision.saga_events)
    assert "KeyError" in (saga.reason or "")
    assert decision.order_events == [o.OrderCancelled("the order could not be processed")]


def test_a_retryable_failure_records_only_the_failure() -> None:
    order, saga, action = started()
    decision = ff.decide_outcome(order, saga, action, sg.StepResult(False, retryable=True, error="down"),
                                 ff.StepData(), NOW, POLICY)
    assert names(decision.saga_events) == ["StepFailed"] and decision.order_events == []


def test_an_outcome_that_comes_back_after_the_saga_moved_on_is_stale() -> None:
    order, saga, action = started()
    moved = saga_after(sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, NOW,
                                                                                  POLICY), NOW, POLICY),
                       sg.decide_compensate(saga, "operator"))
    decision = ff.decide_outcome(order, moved, action, sg.StepResult(True), ff.StepData(), NOW, POLICY)
    assert decision == ff.Decision([], [], stale=True)


def test_an_operator_compensation_shows_on_the_order_once() -> None:
    order, saga, _ = started()
    decision = ff.implied(order, sg.decide_compensate(saga, "changed my mind"))
    assert decision.order_events == [o.OrderCompensationStarted("changed my mind")]
    compensating = o.evolve(order, Recorded(order.order_id, o.AGGREGATE_TYPE, order.version + 1,
                                            decision.order_events[0],
                                            Metadata(uuid.uuid4(), uuid.uuid4(), order.order_id, None, NOW)))
    assert ff.implied(compensating, sg.decide_compensate(saga, "again")).order_events == []  # already shows


def test_a_customer_cancel_compensates_once_and_is_refused_while_the_saga_compensates_on_its_own() -> None:
    order, saga, _ = started()
    decision = ff.decide_cancel(order, saga, "changed my mind", NOW)
    assert names(decision.saga_events) == ["CompensationStarted"]
    assert decision.order_events == [o.OrderCompensationStarted("changed my mind")]
    cancelled = given(created(), o.OrderCompensationStarted("x"), o.OrderCancelled("x"))
    assert cancelled is not None and ff.decide_cancel(cancelled, saga, "again", NOW) is None
    compensating = given(created(), o.OrderCompensationStarted("payment failed"))
    assert compensating is not None
    with pytest.raises(TransitionForbidden):
        ff.decide_cancel(compensating, saga, "too late", NOW)
    # The saga compensates already (an older stream whose order does not show it): nothing to record, accepted.
    moving = saga_after(sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, NOW, POLICY),
                                             NOW, POLICY), sg.decide_compensate(saga, "first"))
    assert ff.decide_cancel(order, moving, "second", NOW) == ff.Decision([], [])


def test_an_order_confirmed_longer_ago_than_the_cancel_window_is_not_undone_by_a_customer_or_an_operator(
        ) -> None:
    order, saga, _ = started()
    confirmed = given(created(), o.OrderConfirmed())
    assert confirmed is not None
    done = dataclasses.replace(saga, status=sg.SagaStatus.COMPLETED)
    in_time = confirmed.updated_at + o.CANCEL_WINDOW
    for decide in (ff.decide_cancel, ff.decide_compensate):
        decision = decide(confirmed, done, "changed my mind", in_time)
        assert decision is not None and names(decision.saga_events) == ["CompensationStarted"]
        with pytest.raises(TransitionForbidden):
            decide(confirmed, done, "changed my mind", in_time + dt.timedelta(seconds=1))


def test_a_saga_the_engine_cannot_take_further_is_compensated_or_parked() -> None:
    order, saga, action = started()  # its first step is written ahead
    start = sg.with_next_attempt(order.saga_id, None, sg.decide_start(order.order_id, NOW, POLICY),
                                 NOW, POLICY)
    forward = sg.decide_stuck(saga, "boom")  # still executing: compensate, as a failed step would
    assert names(forward) == ["StepFailed", "CompensationStarted"]
    assert names(ff.implied(order, forward).order_events) == ["OrderCompensationStarted"]
    compensating = saga_after(start, forward)
    assert compensating.status is sg.SagaStatus.COMPENSATING and not compensating.in_flight
    backward = sg.decide_stuck(compensating, "boom again")  # a compensation that cannot go on waits for an operator
    assert names(backward) == ["SagaParked"]
    parked = saga_after(start, forward, backward)
    assert parked.status is sg.SagaStatus.FAILED and parked.last_error == "boom again"
    assert sg.decide_stuck(parked, "again") == []  # parked already: nothing more
    resumed = saga_after(start, forward, backward, sg.decide_retry(parked, NOW, POLICY))
    again = sg.next_action(resumed, NOW, POLICY)  # an operator's retry runs the compensation again, as a new run
    assert isinstance(again, sg.RunStep) and again.action is sg.Phase.COMPENSATE and again.run == 2


def test_the_engine_backs_off_doubling_with_a_jitter_fixed_by_the_order() -> None:
    one, other = uuid.UUID(int=1), uuid.UUID(int=999)
    waits = [sg.engine_backoff(one, n) for n in range(1, 12)]
    assert waits[:4] == [1.0005, 2.001, 4.002, 8.004] and waits[-1] == 300 * 1.0005  # doubling, then capped
    assert sg.engine_backoff(one, 3) == sg.engine_backoff(one, 3)  # the same order waits the same
    assert sg.engine_backoff(other, 3) > sg.engine_backoff(one, 3)  # another order waits apart from it
    assert all(1.0 <= sg.engine_backoff(uuid.uuid4(), 1) < 1.5 for _ in range(100))
