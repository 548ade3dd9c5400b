"""The order fulfilment saga as a pure state machine.

From the saga's state and the clock, :func:`next_action` says what to do next (run a step, wait for a
retry, time out, or nothing); :func:`decide_outcome` turns the outcome of a step into events. Steps run
in order; a step that fails for good (a business failure, or a transient one after its retries) starts
compensation, which undoes every *attempted* step newest first, then cancels the order. A compensation
that still fails after its retries parks the saga as FAILED until an operator retries or compensates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid

from domain.errors import TransitionForbidden
from domain.events import DomainEvent, Metadata, Recorded, event

AGGREGATE_TYPE = "OrderFulfillmentSaga"
SAGA_TYPE = "order_fulfillment"

class Step(enum.StrEnum):
    """Every step the saga runs, as its events name it: the forward steps, their compensations, and the
    cancel that ends a compensation."""

    RESERVE_INVENTORY = "reserve_inventory"
    PROCESS_PAYMENT = "process_payment"
    CREATE_SHIPMENT = "create_shipment"
    CONFIRM_ORDER = "confirm_order"
    RELEASE_INVENTORY = "release_inventory"
    REFUND_PAYMENT = "refund_payment"
    CANCEL_SHIPMENT = "cancel_shipment"
    CANCEL_ORDER = "cancel_order"


STEPS = (Step.RESERVE_INVENTORY, Step.PROCESS_PAYMENT, Step.CREATE_SHIPMENT, Step.CONFIRM_ORDER)
COMPENSATION = {
    Step.RESERVE_INVENTORY: Step.RELEASE_INVENTORY,
    Step.PROCESS_PAYMENT: Step.REFUND_PAYMENT,
    Step.CREATE_SHIPMENT: Step.CANCEL_SHIPMENT,
}
CANCEL_ORDER = Step.CANCEL_ORDER


class SagaStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"


TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})


class Phase(enum.StrEnum):
    EXECUTE = "execute"
    COMPENSATE = "compensate"


@dataclasses.dataclass(frozen=True, slots=True)
class SagaPolicy:
    """Retries, backoff and timeouts; the service's settings supply them."""

    retry_attempts: int = 3
    retry_delay: float = 5.0
    timeout: float = 300.0
    compensation_timeout: float = 60.0

    def backoff(self, attempt: int) -> dt.timedelta:
        return dt.timedelta(seconds=self.retry_delay * 2 ** (attempt - 1))

    def outage_backoff(self, outages: int) -> dt.timedelta:
        """The wait after the ``outages``-th call in a row that found what it calls unavailable: doubling, at
        most OUTAGE_RETRY_CAP."""
        return min(dt.timedelta(seconds=OUTAGE_RETRY_CAP), self.backoff(min(outages, 17)))  # bounded exponent


# A step whose call found the service below it unavailable (a shard lost or restarting, the store down; not
# one there but too slow) is tried again without counting against its retry_attempts: an outage is waited
# out, going forward until the saga's deadline, and without end in a compensation. Waits grow to this many
# seconds.
OUTAGE_RETRY_CAP = 60.0


# --- events -----------------------------------------------------------------------------------


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SagaStarted(DomainEvent):
    order_id: uuid.UUID
    deadline: dt.datetime


@event
@dataclasses.dataclass(frozen=True, slots=True)
class StepAttempted(DomainEvent):
    """Written before the external call (write-ahead), so a crash leaves a trace of it."""

    step: str
    action: Phase
    attempt: int
    run: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class StepSucceeded(DomainEvent):
    step: str
    action: Phase
    attempt: int


@event
@dataclasses.dataclass(frozen=True, slots=True)
class StepFailed(DomainEvent):
    step: str
    action: Phase
    attempt: int
    error: str
    retry_at: dt.datetime | None
    unavailable: bool = False  # an outage of what the step calls: not counted against its retry_attempts


@event
@dataclasses.dataclass(frozen=True, slots=True)
class CompensationStarted(DomainEvent):
    reason: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SagaCompleted(DomainEvent):
    pass


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SagaCompensated(DomainEvent):
    pass


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SagaParked(DomainEvent):
    """A step could not finish after its retries; an operator must retry or compensate."""

    step: str
    action: Phase
    error: str


@event
@dataclasses.dataclass(frozen=True, slots=True)
class SagaResumed(DomainEvent):
    """An operator resumed a FAILED saga from its failed step; a saga resumed going forward gets a new
    deadline (its first one has passed, most likely, by the time an operator acts)."""

    run: int
    deadline: dt.datetime | None = None  # None: a compensation resumed (or an event recorded before deadlines)


# --- state ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Saga:
    """A fulfilment saga as its events describe it.

    ``attempted`` lists the execute steps that may have had an effect (an attempt was written ahead);
    compensation undoes all of them, since a crash may have hidden a success.
    """

    saga_id: uuid.UUID
    order_id: uuid.UUID
    status: SagaStatus
    phase: Phase
    deadline: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    run: int = 1
    attempt: int = 0
    attempts_total: int = 0
    in_flight: bool = False
    retry_at: dt.datetime | None = None
    attempted: tuple[str, ...] = ()
    succeeded: tuple[str, ...] = ()
    compensated: tuple[str, ...] = ()
    reason: str | None = None
    last_error: str | None = None
    outages: int = 0  # failures of the current step that were outages (StepFailed.unavailable)
    reserved_under: dt.datetime | None = None  # the deadline its reserve step was first tried under

    @property
    def holds_from(self) -> dt.datetime:
        """The deadline from which the order's reservations' expiry counts (a retry may move the deadline
        since; the reservations keep theirs)."""
        return self.reserved_under or self.deadline

    @property
    def current_step(self) -> str | None:
        if self.phase is Phase.EXECUTE:
            return next((s for s in STEPS if s not in self.succeeded), None)
        return next((s for s in compensation_plan(self) if s not in self.compensated), None)


def compensation_plan(saga: Saga) -> list[Step]:
    """Compensations of every attempted step, newest first, then the order's cancellation."""
    undo = [COMPENSATION[s] for s in reversed(STEPS) if s in saga.attempted and s in COMPENSATION]
    return undo + [CANCEL_ORDER]


# --- actions ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RunStep:
    step: str
    action: Phase
    attempt: int
    run: int
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    until: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class TimedOut:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do: the saga is finished, or parked for an operator."""


Action = RunStep | Wait | TimedOut | Idle


@dataclasses.dataclass(frozen=True, slots=True)
class StepResult:
    """What a step's call came back with. ``effective`` is False when a compensation found nothing to undo;
    ``unavailable`` when the call did not get an answer from what it calls (retryable, and an outage);
    ``internal`` when ``error`` is the service's own trouble (an exception's text, naming its parts): the
    saga keeps it for operators, the customer's order does not show it."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    effective: bool = True
    unavailable: bool = False
    internal: bool = False

    @classmethod
    def raised(cls, error: BaseException, unavailable: bool = False) -> StepResult:
        """The call raised ``error`` (the service's own trouble): retryable, its text kept for operators only."""
        return cls(False, retryable=True, error=f"{type(error).__name__}: {error}", unavailable=unavailable,
                   internal=True)


def next_action(saga: Saga, now: dt.datetime, policy: SagaPolicy) -> Action:
    if saga.status in TERMINAL or saga.status is SagaStatus.FAILED:
        return Idle()
    executing = saga.phase is Phase.EXECUTE
    if executing and now >= saga.deadline:
        return TimedOut()
    if saga.retry_at is not None and now < saga.retry_at:
        return Wait(min(saga.retry_at, saga.deadline) if executing else saga.retry_at)
    step = saga.current_step
    if step is None:  # every step recorded but the closing event is missing
        return Idle()
    timeout = (saga.deadline - now).total_seconds() if executing else policy.compensation_timeout
    # An attempt interrupted by a crash (written ahead, no outcome) is resumed, not counted again.
    attempt = saga.attempt if saga.in_flight else saga.attempt + 1
    return RunStep(step, saga.phase, attempt, saga.run, timeout)


def decide_start(order_id: uuid.UUID, now: dt.datetime, policy: SagaPolicy) -> list[DomainEvent]:
    """An order's fulfilment begins; it must end by the policy's deadline."""
    return [SagaStarted(order_id, now + dt.timedelta(seconds=policy.timeout))]


def decide_attempt(action: RunStep) -> list[DomainEvent]:
    """The attempt is written ahead of its call, so that a crash during the call is seen on resume."""
    return [StepAttempted(action.step, action.action, action.attempt, action.run)]


def decide_timeout() -> list[DomainEvent]:
    return [CompensationStarted("saga timed out")]


def decide_outcome(saga: Saga, action: RunStep, result: StepResult, now: dt.datetime, policy: SagaPolicy) -> list[DomainEvent]:
    """Events for the outcome of ``action``: success, a scheduled retry, compensation, or parking."""
    if result.ok:
        events: list[DomainEvent] = [StepSucceeded(action.step, action.action, action.attempt)]
        if action.action is Phase.EXECUTE and action.step == STEPS[-1]:
            events.append(SagaCompleted())
        elif action.action is Phase.COMPENSATE and action.step == CANCEL_ORDER:
            events.append(SagaCompensated())
        return events
    error = result.error or "step failed"
    if result.unavailable:
        retry_at = now + policy.outage_backoff(saga.outages + 1)
        return [StepFailed(action.step, action.action, action.attempt, error, retry_at, unavailable=True)]
    counted = action.attempt - saga.outages  # this step's failures that were not outages, this one included
    if result.retryable and counted < policy.retry_attempts:
        retry_at = now + policy.backoff(counted)
        return [StepFailed(action.step, action.action, action.attempt, error, retry_at)]
    failed = StepFailed(action.step, action.action, action.attempt, error, None)
    if action.action is Phase.EXECUTE:
        return [failed, CompensationStarted(f"{action.step} failed: {error}")]
    return [failed, SagaParked(action.step, action.action, error)]


def decide_stuck(saga: Saga, error: str, compensate: bool = True) -> list[DomainEvent]:
    """The engine itself cannot take the saga further (its own work keeps raising). A saga still executing
    is compensated, as a failed step would have it; a compensation that cannot go on (or, with
    ``compensate`` False, any saga) is parked for an operator, who retries or compensates it. A step
    written ahead is recorded as failed first."""
    if saga.status in TERMINAL or saga.status is SagaStatus.FAILED:
        return []
    step = saga.current_step or ""
    failed: list[DomainEvent] = [StepFailed(step, saga.phase, saga.attempt, error, None)] if saga.in_flight else []
    if compensate and saga.phase is Phase.EXECUTE:
        return [*failed, CompensationStarted(f"the saga could not go on: {error}")]
    return [*failed, SagaParked(step, saga.phase, error)]


# The engine gives up on its own work for a saga after this many failures in a row (see decide_stuck).
STUCK_AFTER_FAILURES = 8


def engine_backoff(order_id: uuid.UUID, failures: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after the engine's ``failures``-th failure in a row on an order's saga: doubling up
    to ``cap``, stretched by up to half by a jitter the order fixes (sagas failing together spread out)."""
    jitter = (order_id.int % 1000) / 2000
    return float(min(cap, base * 2.0 ** max(failures - 1, 0)) * (1 + jitter))


def decide_compensate(saga: Saga, reason: str) -> list[DomainEvent]:
    """Operator or customer asks to undo the saga: allowed while RUNNING, FAILED or COMPLETED."""
    if saga.status is SagaStatus.COMPENSATED:
        raise TransitionForbidden(f"saga {saga.saga_id} is already compensated", saga.status)
    if saga.status is SagaStatus.COMPENSATING:
        return []
    if saga.status is SagaStatus.FAILED and saga.phase is Phase.COMPENSATE:
        return [SagaResumed(saga.run + 1)]
    return [CompensationStarted(reason)]


def decide_retry(saga: Saga, now: dt.datetime, policy: SagaPolicy,
                 holds_until: dt.datetime | None = None) -> list[DomainEvent]:
    """Operator resumes a FAILED saga from its failed step. Going forward, it has the policy's time again, but
    once its reserve step was tried, no longer than the reservations it made (or may have made) hold
    (``holds_until``): past that, it would charge and ship an order whose stock it no longer holds. With no
    time left, it keeps its deadline, and times out into its compensation."""
    if saga.status is not SagaStatus.FAILED:
        raise TransitionForbidden(f"saga {saga.saga_id} is {saga.status}, not FAILED", saga.status)
    deadline: dt.datetime | None = None
    if saga.phase is Phase.EXECUTE:
        deadline = now + dt.timedelta(seconds=policy.timeout)
        if holds_until is not None and Step.RESERVE_INVENTORY in saga.attempted:
            deadline = min(deadline, holds_until)
        if deadline <= now:
            deadline = None
    return [SagaResumed(saga.run + 1, deadline)]


def preview(saga_id: uuid.UUID, saga: Saga | None, events: list[DomainEvent], at: dt.datetime) -> Saga | None:
    """The state ``events`` would lead to, before they are stored (placeholder metadata)."""
    placeholder = uuid.UUID(int=0)
    version = saga.version if saga else 0
    for i, e in enumerate(events, start=1):
        meta = Metadata(placeholder, placeholder, placeholder, None, at)
        saga = evolve(saga, Recorded(saga_id, AGGREGATE_TYPE, version + i, e, meta))
    return saga


def with_next_attempt(saga_id: uuid.UUID, saga: Saga | None, events: list[DomainEvent], now: dt.datetime,
                      policy: SagaPolicy) -> list[DomainEvent]:
    """``events`` plus the write-ahead of the step they lead to, when that step can start at once.

    Recording an outcome and the next attempt in one transaction halves the commits of a saga.
    """
    after = preview(saga_id, saga, events, now)
    if after is None:
        return events
    action = next_action(after, now, policy)
    return events + decide_attempt(action) if isinstance(action, RunStep) else events


# --- evolve -----------------------------------------------------------------------------------


def evolve(saga: Saga | None, recorded: Recorded) -> Saga | None:
    """The saga after one of its events. Each branch makes one new state, its time and version stamped with the
    event's: a copy of a frozen Saga costs its twenty fields, and a saga's events are folded at every step."""
    e, at, v = recorded.event, recorded.at, recorded.version
    if isinstance(e, SagaStarted):
        return Saga(recorded.aggregate_id, e.order_id, SagaStatus.RUNNING, Phase.EXECUTE, e.deadline, at, at, v)
    if saga is None:
        return None
    if isinstance(e, StepAttempted):
        attempted = saga.attempted
        if e.action is Phase.EXECUTE and e.step not in attempted:
            attempted = attempted + (e.step,)
        reserved_under = saga.reserved_under
        if e.step == Step.RESERVE_INVENTORY and e.action is Phase.EXECUTE and reserved_under is None:
            reserved_under = saga.deadline
        return dataclasses.replace(
            saga, updated_at=at, version=v, attempt=e.attempt, in_flight=True, retry_at=None, attempted=attempted,
            attempts_total=saga.attempts_total + 1, reserved_under=reserved_under,
        )
    if isinstance(e, StepSucceeded):
        executed = e.action is Phase.EXECUTE
        return dataclasses.replace(
            saga, updated_at=at, version=v, attempt=0, in_flight=False, retry_at=None, last_error=None, outages=0,
            succeeded=saga.succeeded + (e.step,) if executed else saga.succeeded,
            compensated=saga.compensated if executed else saga.compensated + (e.step,),
        )
    if isinstance(e, StepFailed):
        return dataclasses.replace(saga, updated_at=at, version=v, in_flight=False, retry_at=e.retry_at,
                                   last_error=e.error, outages=saga.outages + e.unavailable)
    if isinstance(e, CompensationStarted):
        return dataclasses.replace(
            saga, updated_at=at, version=v, status=SagaStatus.COMPENSATING, phase=Phase.COMPENSATE, attempt=0,
            in_flight=False, retry_at=None, reason=e.reason, outages=0,
        )
    if isinstance(e, SagaParked):
        return dataclasses.replace(saga, updated_at=at, version=v, status=SagaStatus.FAILED, retry_at=None,
                                   last_error=e.error)
    if isinstance(e, SagaResumed):
        status = SagaStatus.RUNNING if saga.phase is Phase.EXECUTE else SagaStatus.COMPENSATING
        # The deadline the reservations count from, kept before a resume moves it (a saga decoded from a
        # snapshot older than the field, whose reserve step was tried, has it only so).
        reserved_under = saga.reserved_under or (
            saga.deadline if Step.RESERVE_INVENTORY in saga.attempted else None)
        return dataclasses.replace(saga, updated_at=at, version=v, status=status, run=e.run, attempt=0,
                                   retry_at=None, deadline=e.deadline or saga.deadline, outages=0,
                                   reserved_under=reserved_under)
    if isinstance(e, SagaCompleted):
        return dataclasses.replace(saga, updated_at=at, version=v, status=SagaStatus.COMPLETED)
    if isinstance(e, SagaCompensated):
        return dataclasses.replace(saga, updated_at=at, version=v, status=SagaStatus.COMPENSATED)
    return dataclasses.replace(saga, updated_at=at, version=v)  # an event it does not know: its time and version
