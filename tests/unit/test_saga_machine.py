"""The fulfilment saga as a pure state machine, driven against in-memory fakes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from domain import saga as sg
from domain.errors import TransitionForbidden
from domain.events import DomainEvent, Metadata, Recorded
from domain.fulfilment import order_events_for
from tests.unit.test_order_domain import created, given

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = sg.SagaPolicy(retry_attempts=3, retry_delay=5.0, timeout=300.0, compensation_timeout=60.0)
SAGA_ID = uuid.uuid4()
Provider = Callable[[sg.RunStep], sg.StepResult]


class Run:
    """Drives a saga to rest with fake providers and a fake clock; collects the order events."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self.providers = providers or {}
        self.clock = NOW
        self.saga: sg.Saga | None = None
        self.version = 0
        self.order_events: list[str] = []
        self.history: list[DomainEvent] = []
        self.apply(sg.decide_start(uuid.uuid4(), self.clock, POLICY))

    def apply(self, events: list[DomainEvent]) -> None:
        self.history += events
        for e in events:
            self.version += 1
            meta = Metadata(uuid.uuid4(), uuid.uuid4(), SAGA_ID, None, self.clock)
            self.saga = sg.evolve(self.saga, Recorded(SAGA_ID, sg.AGGREGATE_TYPE, self.version, e, meta))

    def until_rest(self, max_steps: int = 100) -> sg.Saga:
        order = given(created())
        assert order is not None
        for _ in range(max_steps):
            assert self.saga is not None
            action = sg.next_action(self.saga, self.clock, POLICY)
            if isinstance(action, sg.Idle):
                return self.saga
            if isinstance(action, sg.Wait):
                self.clock = action.until
            elif isinstance(action, sg.TimedOut):
                self.apply(sg.decide_timeout())
            else:
                self.apply(sg.decide_attempt(action))
                result = self.providers.get(action.step, lambda a: sg.StepResult(True))(action)
                if result.ok:
                    from domain.fulfilment import StepData

                    self.order_events += [type(e).__name__ for e in order_events_for(
                        order, action.step, action.action, result.effective, StepData("pay", "shp"), "r")]
                self.apply(sg.decide_outcome(self.saga, action, result, self.clock, POLICY))
        raise AssertionError("saga did not come to rest")


def fails(retryable: bool, times: int = 1_000) -> Provider:
    calls = {"n": 0}

    def provider(action: sg.RunStep) -> sg.StepResult:
        calls["n"] += 1
        if calls["n"] <= times:
            return sg.StepResult(False, retryable=retryable, error="boom")
        return sg.StepResult(True)

    return provider


def down(times: int, then: Provider | None = None) -> Provider:
    """What the step calls is unavailable for ``times`` calls (a shard lost, a timeout), then ``then``."""
    calls = {"n": 0}

    def provider(action: sg.RunStep) -> sg.StepResult:
        calls["n"] += 1
        if calls["n"] <= times:
            return sg.StepResult(False, retryable=True, error="ServiceUnavailable: shard lost", unavailable=True)
        return then(action) if then is not None else sg.StepResult(True)

    return provider


def test_the_happy_path_yields_the_four_step_events_in_order() -> None:
    run = Run()
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPLETED
    assert run.order_events == ["InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderConfirmed"]


def test_a_business_failure_is_not_retried_and_compensates_newest_first() -> None:
    run = Run({"create_shipment": fails(retryable=False)})
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPENSATED
    assert saga.compensated == ("cancel_shipment", "refund_payment", "release_inventory", "cancel_order")
    assert run.order_events[-3:] == ["PaymentRefunded", "InventoryReleased", "OrderCancelled"]


def test_transient_failures_are_retried_with_exponential_backoff() -> None:
    run = Run({"process_payment": fails(retryable=True, times=2)})
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPLETED
    assert run.clock - NOW == dt.timedelta(seconds=5 + 10)


def test_retries_exhausted_start_compensation() -> None:
    saga = Run({"process_payment": fails(retryable=True)}).until_rest()
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.attempts_total >= 3


def test_a_compensation_that_keeps_failing_parks_the_saga_and_an_operator_retry_resumes_it() -> None:
    refund = fails(retryable=True, times=3)
    run = Run({"create_shipment": fails(retryable=False), "refund_payment": refund})
    parked = run.until_rest()
    assert parked.status is sg.SagaStatus.FAILED and parked.current_step == "refund_payment"
    run.apply(sg.decide_retry(parked, run.clock, POLICY))
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.run == 2


def test_an_operator_retry_of_a_saga_parked_going_forward_goes_forward_long_after_its_deadline() -> None:
    run = Run({"process_payment": fails(retryable=True, times=1)})
    run.apply(sg.decide_attempt(sg.RunStep("reserve_inventory", sg.Phase.EXECUTE, 1, 1, 300.0)))
    assert run.saga is not None
    run.apply(sg.decide_stuck(run.saga, "the engine kept failing", compensate=False))
    assert run.saga.status is sg.SagaStatus.FAILED and run.saga.phase is sg.Phase.EXECUTE
    run.clock = NOW + dt.timedelta(minutes=30)  # the operator comes back well past the first deadline
    run.apply(sg.decide_retry(run.saga, run.clock, POLICY))
    assert isinstance(sg.next_action(run.saga, run.clock, POLICY), sg.RunStep)  # not TimedOut: no refund
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPLETED and saga.run == 2


def test_an_outage_longer_than_the_retry_budget_is_waited_out_and_the_order_completes() -> None:
    run = Run({"confirm_order": down(times=6)})  # waits 5, 10, 20, 40, 60, 60 s: within the 300 s deadline
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPLETED and saga.attempts_total == 4 + 6
    assert "PaymentRefunded" not in run.order_events and run.clock - NOW < dt.timedelta(seconds=300)


def test_business_failures_after_an_outage_still_get_their_whole_budget_and_no_more() -> None:
    run = Run({"process_payment": down(times=2, then=fails(retryable=True, times=3))})
    saga = run.until_rest()
    assert saga.status is sg.SagaStatus.COMPENSATED  # the third business failure, not the first, gave up
    steps = [e for e in run.history if isinstance(e, sg.StepFailed) and e.step == "process_payment"]
    assert [e.unavailable for e in steps] == [True, True, False, False, False]
    ok = Run({"process_payment": down(times=2, then=fails(retryable=True, times=2))}).until_rest()
    assert ok.status is sg.SagaStatus.COMPLETED


def test_an_outage_past_the_deadline_still_times_the_order_out() -> None:
    saga = Run({"reserve_inventory": down(times=1_000)}).until_rest()
    assert saga.status is sg.SagaStatus.COMPENSATED and saga.reason == "saga timed out"


def test_a_compensation_waits_out_an_outage_instead_of_parking() -> None:
    run = Run({"create_shipment": fails(retryable=False), "refund_payment": down(times=20)})
    saga = run.until_rest(max_steps=200)
    assert saga.status is sg.SagaStatus.COMPENSATED and "PaymentRefunded" in run.order_events


def test_a_forward_retry_has_time_only_while_the_reservations_it_made_hold() -> None:
    run = Run({"process_payment": fails(retryable=True, times=1)})
    for step in ("reserve_inventory", "process_payment"):
        run.apply(sg.decide_attempt(sg.RunStep(step, sg.Phase.EXECUTE, 1, 1, 300.0)))
        if step == "reserve_inventory":
            assert run.saga is not None
            run.apply(sg.decide_outcome(run.saga, sg.RunStep(step, sg.Phase.EXECUTE, 1, 1, 300.0),
                                        sg.StepResult(True), run.clock, POLICY))
    assert run.saga is not None
    run.apply(sg.decide_stuck(run.saga, "the engine kept failing", compensate=False))
    holds_until = run.saga.deadline + dt.timedelta(seconds=900)
    run.clock = holds_until - dt.timedelta(seconds=60)  # the reservations hold another minute
    [resumed] = sg.decide_retry(run.saga, run.clock, POLICY, holds_until)
    assert isinstance(resumed, sg.SagaResumed) and resumed.deadline == holds_until
    run.clock = holds_until + dt.timedelta(seconds=1)  # they have lapsed: no charge, no shipment
    run.apply(sg.decide_retry(run.saga, run.clock, POLICY, holds_until))
    assert isinstance(sg.next_action(run.saga, run.clock, POLICY), sg.TimedOut)
    assert run.until_rest().status is sg.SagaStatus.COMPENSATED and "PaymentProcessed" not in run.order_events


def reserved(run: Run) -> dt.datetime:
    """The saga's reserve step run and succeeded; the deadline it ran under."""
    reserve = sg.RunStep("reserve_inventory", sg.Phase.EXECUTE, 1, 1, 300.0)
    run.apply(sg.decide_attempt(reserve))
    assert run.saga is not None
    deadline = run.saga.deadline
    run.apply(sg.decide_outcome(run.saga, reserve, sg.StepResult(True), run.clock, POLICY))
    return deadline


def test_a_second_forward_retry_is_bounded_by_the_reservations_the_first_run_made() -> None:
    """The reservations expire at the deadline the reserve step ran under plus their TTL; a retry that moved
    the deadline does not move them."""
    ttl = dt.timedelta(seconds=900)
    run = Run()
    first_deadline = reserved(run)
    for at in (500, 1150):  # parked going forward, retried; parked again, retried again
        assert run.saga is not None
        run.apply(sg.decide_stuck(run.saga, "the engine kept failing", compensate=False))
        run.clock = NOW + dt.timedelta(seconds=at)
        run.apply(sg.decide_retry(run.saga, run.clock, POLICY, run.saga.holds_from + ttl))
    assert run.saga is not None and run.saga.holds_from == first_deadline
    assert run.saga.deadline == first_deadline + ttl  # not 1,150 s + the timeout: the stock is not held then


def test_a_saga_from_a_snapshot_older_than_its_reservations_basis_still_bounds_its_retries() -> None:
    """A snapshot written before sagas kept the deadline their reservations count from decodes without it;
    the first resume keeps the deadline it is about to move."""
    from domain.codec import from_primitive, to_primitive

    ttl = dt.timedelta(seconds=900)
    run = Run()
    first_deadline = reserved(run)
    assert run.saga is not None
    run.apply(sg.decide_stuck(run.saga, "the engine kept failing", compensate=False))
    old = to_primitive(run.saga)
    del old["reserved_under"]
    run.saga = from_primitive(sg.Saga, old)
    assert run.saga is not None and run.saga.reserved_under is None
    for at in (500, 1150):
        run.clock = NOW + dt.timedelta(seconds=at)
        run.apply(sg.decide_retry(run.saga, run.clock, POLICY, run.saga.holds_from + ttl))
        assert run.saga is not None
        run.apply(sg.decide_stuck(run.saga, "the engine kept failing", compensate=False))
    assert run.saga is not None and run.saga.holds_from == first_deadline
    assert run.saga.deadline == first_deadline + ttl


def test_the_saga_timeout_starts_compensation() -> None:
    slow = Run({"process_payment": fails(retryable=True)})
    slow.clock = NOW + dt.timedelta(seconds=301)
    assert isinstance(sg.next_action(slow.saga, slow.clock, POLICY), sg.TimedOut)  # type: ignore[arg-type]


def test_an_interrupted_attempt_is_resumed_not_counted_again() -> None:
    run = Run()
    assert run.saga is not None
    action = sg.next_action(run.saga, NOW, POLICY)
    assert isinstance(action, sg.RunStep)
    run.apply(sg.decide_attempt(action))
    again = sg.next_action(run.saga, NOW, POLICY)
    assert isinstance(again, sg.RunStep) and again.attempt == action.attempt


def test_operator_transitions_follow_the_status() -> None:
    run = Run()
    done = run.until_rest()
    assert sg.decide_compensate(done, "x") == [sg.CompensationStarted("x")]
    with pytest.raises(TransitionForbidden):
        sg.decide_retry(done, NOW, POLICY)
    run.apply(sg.decide_compensate(done, "x"))
    compensated = run.until_rest()
    with pytest.raises(TransitionForbidden):
        sg.decide_compensate(compensated, "again")


def test_an_outcome_carries_the_write_ahead_of_the_next_step_when_it_can_start_at_once() -> None:
    run = Run()
    assert run.saga is not None
    first = sg.next_action(run.saga, NOW, POLICY)
    assert isinstance(first, sg.RunStep)
    run.apply(sg.decide_attempt(first))
    ok = sg.with_next_attempt(SAGA_ID, run.saga, sg.decide_outcome(run.saga, first, sg.StepResult(True), NOW, POLICY),
                              NOW, POLICY)
    assert [type(e).__name__ for e in ok] == ["StepSucceeded", "StepAttempted"]
    assert ok[-1] == sg.StepAttempted("process_payment", sg.Phase.EXECUTE, 1, 1)
    retry = sg.with_next_attempt(SAGA_ID, run.saga, sg.decide_outcome(
        run.saga, first, sg.StepResult(False, retryable=True, error="x"), NOW, POLICY), NOW, POLICY)
    assert [type(e).__name__ for e in retry] == ["StepFailed"]


def test_every_step_is_named_once_and_a_step_no_saga_runs_is_refused_loudly() -> None:
    from actors.saga_steps import StepRunner
    from domain import order as o
    from domain.fulfilment import StepData, step_key

    runner = StepRunner(None, None, None, 1.0, b"key")  # type: ignore[arg-type]
    assert set(runner._steps) == set(sg.Step)  # every step has the call that runs it
    assert set(sg.STEPS) | set(sg.COMPENSATION.values()) | {sg.CANCEL_ORDER} == set(sg.Step)
    assert step_key(SAGA_ID, sg.Step.PROCESS_PAYMENT) == f"{SAGA_ID}:process_payment"  # keys as before
    order = o.Order.__new__(o.Order)
    with pytest.raises(ValueError):
        order_events_for(order, "reserve_inventroy", sg.Phase.EXECUTE, True, StepData(), "x")  # a typo
    with pytest.raises(ValueError):
        order_events_for(order, sg.Step.REFUND_PAYMENT, sg.Phase.EXECUTE, True, StepData(), "x")


# --- each event's whole effect on the state ------------------------------------------------------

LATER = NOW + dt.timedelta(seconds=42)
DEADLINE = NOW + dt.timedelta(seconds=300)
NEW_DEADLINE = LATER + dt.timedelta(seconds=300)
BEFORE = sg.Saga(
    saga_id=SAGA_ID, order_id=uuid.UUID(int=7), status=sg.SagaStatus.RUNNING, phase=sg.Phase.EXECUTE,
    deadline=DEADLINE, created_at=NOW, updated_at=NOW, version=3, run=1, attempt=2, attempts_total=4, in_flight=True,
    retry_at=NOW + dt.timedelta(seconds=5), attempted=(sg.Step.RESERVE_INVENTORY,), succeeded=(), compensated=(),
    reason=None, last_error="gateway timeout", outages=1, reserved_under=None,
)
PARKED_FORWARD = replace(BEFORE, status=sg.SagaStatus.FAILED, in_flight=False, retry_at=None)
COMPENSATING = replace(BEFORE, status=sg.SagaStatus.COMPENSATING, phase=sg.Phase.COMPENSATE, attempt=1,
                       reason="payment declined", attempted=(sg.Step.RESERVE_INVENTORY, sg.Step.PROCESS_PAYMENT))


class Noted(DomainEvent):
    """An event the saga does not know (written by a later version, say)."""


# (name, the state before, the event, what the event changes besides updated_at and version)
EFFECTS: list[tuple[str, sg.Saga, DomainEvent, dict[str, object]]] = [
    ("a first attempt of the next step", BEFORE, sg.StepAttempted(sg.Step.PROCESS_PAYMENT, sg.Phase.EXECUTE, 1, 1),
     {"attempt": 1, "in_flight": True, "retry_at": None, "attempts_total": 5,
      "attempted": (sg.Step.RESERVE_INVENTORY, sg.Step.PROCESS_PAYMENT)}),
    ("a retry of the reserve step, which dates the reservations", BEFORE,
     sg.StepAttempted(sg.Step.RESERVE_INVENTORY, sg.Phase.EXECUTE, 3, 1),
     {"attempt": 3, "in_flight": True, "retry_at": None, "attempts_total": 5, "reserved_under": DEADLINE}),
    ("a compensation's attempt, not an execute step", COMPENSATING,
     sg.StepAttempted(sg.Step.REFUND_PAYMENT, sg.Phase.COMPENSATE, 2, 1),
     {"attempt": 2, "in_flight": True, "retry_at": None, "attempts_total": 5}),
    ("a step's success", BEFORE, sg.StepSucceeded(sg.Step.RESERVE_INVENTORY, sg.Phase.EXECUTE, 2),
     {"attempt": 0, "in_flight": False, "retry_at": None, "last_error": None, "outages": 0,
      "succeeded": (sg.Step.RESERVE_INVENTORY,)}),
    ("a compensation's success", COMPENSATING, sg.StepSucceeded(sg.Step.REFUND_PAYMENT, sg.Phase.COMPENSATE, 1),
     {"attempt": 0, "in_flight": False, "retry_at": None, "last_error": None, "outages": 0,
      "compensated": (sg.Step.REFUND_PAYMENT,)}),
    ("a failure during an outage", BEFORE,
     sg.StepFailed(sg.Step.RESERVE_INVENTORY, sg.Phase.EXECUTE, 2, "down", LATER, unavailable=True),
     {"in_flight": False, "retry_at": LATER, "last_error": "down", "outages": 2}),
    ("a failure that counts", BEFORE, sg.StepFailed(sg.Step.RESERVE_INVENTORY, sg.Phase.EXECUTE, 2, "no", None),
     {"in_flight": False, "retry_at": None, "last_error": "no", "outages": 1}),
    ("the start of compensation", BEFORE, sg.CompensationStarted("payment declined"),
     {"status": sg.SagaStatus.COMPENSATING, "phase": sg.Phase.COMPENSATE, "attempt": 0, "in_flight": False,
      "retry_at": None, "reason": "payment declined", "outages": 0}),
    ("parking", COMPENSATING, sg.SagaParked(sg.Step.REFUND_PAYMENT, sg.Phase.COMPENSATE, "refund refused"),
     {"status": sg.SagaStatus.FAILED, "retry_at": None, "last_error": "refund refused"}),
    ("a resume going forward, with a new deadline", PARKED_FORWARD, sg.SagaResumed(2, NEW_DEADLINE),
     {"status": sg.SagaStatus.RUNNING, "run": 2, "attempt": 0, "retry_at": None, "outages": 0,
      "deadline": NEW_DEADLINE, "reserved_under": DEADLINE}),
    ("a compensation resumed", replace(COMPENSATING, status=sg.SagaStatus.FAILED), sg.SagaResumed(2),
     {"status": sg.SagaStatus.COMPENSATING, "run": 2, "attempt": 0, "retry_at": None, "outages": 0,
      "reserved_under": DEADLINE}),
    ("completion", BEFORE, sg.SagaCompleted(), {"status": sg.SagaStatus.COMPLETED}),
    ("the end of compensation", COMPENSATING, sg.SagaCompensated(), {"status": sg.SagaStatus.COMPENSATED}),
    ("an event the saga does not know", BEFORE, Noted(), {}),
]


@pytest.mark.parametrize(("before", "event", "changes"), [case[1:] for case in EFFECTS], ids=[c[0] for c in EFFECTS])
def test_an_event_changes_exactly_its_fields_and_stamps_its_time_and_version(
        before: sg.Saga, event: DomainEvent, changes: dict[str, object]) -> None:
    meta = Metadata(uuid.uuid4(), uuid.uuid4(), SAGA_ID, None, LATER)
    after = sg.evolve(before, Recorded(SAGA_ID, sg.AGGREGATE_TYPE, before.version + 1, event, meta))
    assert after == replace(before, updated_at=LATER, version=before.version + 1, **changes)  # type: ignore[arg-type]
