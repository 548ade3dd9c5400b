"""Errors cross a Ray call whole: every error of the domain and the store pickles as the call that made it
(type, message, attributes), and the actor client raises the actor's own error out of Ray's RayTaskError,
a timeout inside the actor as ServiceUnavailable. No Ray cluster: Ray's error types only."""

from __future__ import annotations

import asyncio
import math
import pickle
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ray.exceptions import RayActorError, RayTaskError

import domain.cart
import domain.errors
import domain.inventory
import domain.order
import store.errors
import store.idempotency
import store.projections
from actors import lanes as lanes_module
from actors.base import BATCH_ERRORS
from actors.call_batches import BatchRunner
from actors.client import ActorLost, ActorRef, Lanes, ServiceTimeout, ServiceUnavailable, call
from actors.watch import Watch
from domain import inventory as inv
from domain.errors import Remade, TransitionForbidden
from store.errors import ConcurrencyConflict, StoreUnavailable

PID, RID = uuid.uuid4(), uuid.uuid4()
EXAMPLES: list[Exception] = [
    domain.errors.DomainError("refused"), domain.errors.NotFound("no such thing"),
    TransitionForbidden("order is CANCELLED", status="CANCELLED"),
    domain.cart.CartError("cart"), domain.cart.EmptyCart("empty"), domain.cart.CartFull("full"),
    domain.order.OrderError("order"), domain.order.OrderAlreadyExists("exists"), domain.order.EmptyOrder("no lines"),
    domain.order.OrderTooLarge("too large"),
    inv.InventoryError("inventory"), inv.UnknownProduct(f"unknown product {PID}"), inv.UnknownReservation("unknown"),
    inv.InsufficientStock(PID, 5, 2), inv.VersionMismatch(PID, 3, 4), inv.ReservationNotActive(RID, "expired"),
    inv.ReservationIdConflict(RID), inv.ProductIdTaken(RID), inv.ReservationAlreadyCommitted(RID), inv.InvalidStock("negative"),
    inv.StockBelowReserved("below"),
    store.errors.StoreError("store"), ConcurrencyConflict(PID, 7), store.errors.DuplicateCommand("cmd"),
    StoreUnavailable("PostgreSQL unavailable"),
    store.projections.ProjectionFailed("orders", {"event_id": str(RID), "position": 9, "event_type": "X"}, "boom"),
    store.projections.RebuildInProgress("rebuilding"), store.projections.RowsRaced("raced"),
]


def remade_classes() -> set[type[Exception]]:
    found: set[type[Exception]] = set()
    for module in (domain.errors, domain.cart, domain.order, domain.inventory, store.errors, store.idempotency,
                   store.projections):
        found |= {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Remade) and v is not Remade}
    return found


def test_every_error_of_the_domain_and_the_store_has_an_example_here() -> None:
    assert remade_classes() <= {type(e) for e in EXAMPLES}


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_pickles_with_its_type_message_and_attributes(error: Exception) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert {k: v for k, v in vars(again).items()} == {k: v for k, v in vars(error).items()}


class Handle:
    """An actor handle whose method raises in the actor, as Ray reports it to the caller."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause

    def __getattr__(self, method: str) -> Any:
        async def failing() -> None:
            raise RayTaskError(method, "Traceback (in the actor)", self.cause).as_instanceof_cause()

        return type("Method", (), {"remote": staticmethod(lambda *a, **k: asyncio.ensure_future(failing()))})()


def ref_to(cause: BaseException) -> ActorRef:
    ref = ActorRef("inventory-shard-0", "test")
    ref._handle = Handle(cause)
    return ref


@pytest.mark.parametrize("error", [inv.InsufficientStock(PID, 5, 2), TransitionForbidden("no", status="PAID"),
                                   StoreUnavailable("down"), ServiceUnavailable("inventory shard 1 is unavailable")],
                         ids=lambda e: type(e).__name__)
async def test_the_client_raises_the_actors_own_error(error: Exception) -> None:
    with pytest.raises(type(error)) as raised:
        await call(ref_to(error), "reserve")
    assert type(raised.value) is type(error) and str(raised.value) == str(error)
    assert not isinstance(raised.value, RayTaskError)  # its message is the domain's, not Ray's traceback


async def test_a_timeout_inside_the_actor_is_a_dependency_that_is_unavailable() -> None:
    with pytest.raises(ServiceUnavailable):
        await call(ref_to(TimeoutError("command timed out")), "reserve")


async def test_any_other_failure_of_the_actor_stays_a_failure() -> None:
    with pytest.raises(RayTaskError):
        await call(ref_to(KeyError("a bug")), "reserve")


class Shard:
    async def reserve(self, error: BaseException) -> None:
        raise error


def remote_method(run: Callable[..., Awaitable[Any]]) -> Any:
    """An actor method as a handle has it, ``.options(...).remote(*args)``: a future of ``run(*args)``."""
    method_ = type("Method", (), {"remote": staticmethod(lambda *a: asyncio.ensure_future(run(*a)))})()
    return type("Options", (), {"options": staticmethod(lambda **kwargs: method_)})()


def restarts_as(ref: ActorRef, handle: Any) -> None:
    """The actor behind ``ref`` is ``handle``, also when looked up again (the same actor, restarted)."""
    ref._handle = handle
    ref.handle = lambda: handle  # type: ignore[method-assign]


class BatchHandle:
    """A shard's handle whose batches run on the shard's BatchRunner, the answers pickled as Ray does."""

    def __init__(self) -> None:
        self.runner = BatchRunner(Shard(), {"reserve"}, BATCH_ERRORS)

    def __getattr__(self, method: str) -> Any:
        async def run(calls: list[Any]) -> Any:
            return pickle.loads(pickle.dumps(await self.runner.run(pickle.loads(pickle.dumps(calls)))))

        return remote_method(run)


@pytest.mark.parametrize("error", [ServiceUnavailable("inventory shard 1 is unavailable"), *EXAMPLES[:3],
                                   ConcurrencyConflict(PID, 7), StoreUnavailable("PostgreSQL unavailable")],
                         ids=lambda e: type(e).__name__)
async def test_a_batched_call_raises_the_shards_own_error(error: Exception) -> None:
    ref = ActorRef("inventory-shard-0", "test")
    ref._handle = BatchHandle()
    with pytest.raises(type(error)) as raised:
        await Lanes([ref], ("commands",), 5.0, Watch("test")).call(0, "commands", "reserve", error)
    assert type(raised.value) is type(error) and str(raised.value) == str(error)


async def test_a_batched_call_that_fails_unexpectedly_is_reported_by_its_text() -> None:
    ref = ActorRef("inventory-shard-0", "test")
    ref._handle = BatchHandle()
    with pytest.raises(RuntimeError, match="KeyError"):
        await Lanes([ref], ("commands",), 5.0, Watch("test")).call(0, "commands", "reserve", KeyError("x"))


class LostOnce:
    """A shard that dies with the first ``lost`` batches it gets (the calls' outcome unknown), then answers."""

    def __init__(self, while_lost: Any, lost: float = 1) -> None:
        self.runner = BatchRunner(Shard(), {"reserve"}, BATCH_ERRORS)
        self.sent: list[list[Any]] = []
        self.while_lost = while_lost
        self.lost = lost

    def __getattr__(self, method: str) -> Any:
        async def run(calls: list[Any]) -> Any:
            self.sent.append([c[2][0] for c in calls])
            if len(self.sent) <= self.lost:
                self.while_lost()
                raise RayActorError()
            return await self.runner.run(calls)

        def options(**kwargs: Any) -> Any:
            assert kwargs == {"max_task_retries": 0}  # Ray does not send it again on its own
            return type("Method", (), {"remote": staticmethod(lambda calls: asyncio.ensure_future(run(calls)))})()

        return type("Method", (), {"options": staticmethod(options)})()


async def test_a_batch_sent_again_after_its_shard_was_lost_leaves_out_the_calls_given_up_meanwhile() -> None:
    ref = ActorRef("inventory-shard-0", "test")
    lanes = Lanes([ref], ("commands",), 5.0, Watch("test"))
    calls: list[asyncio.Future[Any]] = []
    handle = LostOnce(lambda: calls[1].cancel())  # a saga cancelled while the shard was lost
    restarts_as(ref, handle)
    calls += [asyncio.ensure_future(lanes.call(0, "commands", "reserve", ConcurrencyConflict(PID, n)))
              for n in range(3)]
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(d).__name__ for d in done] == ["ConcurrencyConflict", "CancelledError", "ConcurrencyConflict"]
    assert [[str(e) for e in batch] for batch in handle.sent] == [
        [str(ConcurrencyConflict(PID, n)) for n in range(3)], [str(ConcurrencyConflict(PID, n)) for n in (0, 2)]]


async def test_callers_wait_for_a_lost_shard_to_come_back_within_their_deadlines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes_module, "RESEND_AFTER", 0.001)
    ref = ActorRef("inventory-shard-0", "test")
    lanes = Lanes([ref], ("commands",), 5.0, Watch("test"))
    handle = LostOnce(lambda: None, lost=6)  # restarting elsewhere: several sends fail before it answers
    restarts_as(ref, handle)
    with pytest.raises(ConcurrencyConflict):  # the shard's own answer, not "unavailable"
        await lanes.call(0, "commands", "reserve", ConcurrencyConflict(PID, 1))
    assert len(handle.sent) == 7


async def test_a_shard_that_does_not_come_back_fails_its_callers_at_their_deadline_and_is_sent_no_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes_module, "RESEND_AFTER", 0.001)
    monkeypatch.setattr(lanes_module, "RESEND_AFTER_AT_MOST", 0.01)
    ref = ActorRef("inventory-shard-0", "test")
    lanes = Lanes([ref], ("commands",), 2.0, Watch("test"))  # long enough for sends again on a slow machine
    handle = LostOnce(lambda: None, lost=math.inf)
    restarts_as(ref, handle)
    with pytest.raises(ActorLost):  # an outage, which a saga waits out, not a shard too slow
        await lanes.call(0, "commands", "reserve", ConcurrencyConflict(PID, 1))
    assert len(handle.sent) > 2  # sent again while its caller waited
    # The sender stops, as nobody waits any more.
    await asyncio.wait_for(asyncio.gather(*lanes._batches[0, "commands"]._senders), 5.0)
    sent = len(handle.sent)
    await asyncio.sleep(0)
    assert len(handle.sent) == sent


class Hanging:
    """A shard that is there and takes every batch, but answers none."""

    def __getattr__(self, method: str) -> Any:
        async def hang(*args: Any) -> None:
            await asyncio.Event().wait()

        return remote_method(hang)


async def test_a_shard_that_is_there_but_does_not_answer_in_time_is_slow_not_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Also after it was lost once: what counts is what the call met while it waited."""
    monkeypatch.setattr(lanes_module, "RESEND_AFTER", 0.001)
    ref = ActorRef("inventory-shard-0", "test")
    lanes = Lanes([ref], ("commands",), 0.2, Watch("test"))
    lost = LostOnce(lambda: None, lost=math.inf)
    restarts_as(ref, lost)
    with pytest.raises(ActorLost):
        await lanes.call(0, "commands", "reserve", ConcurrencyConflict(PID, 1))
    await asyncio.wait_for(asyncio.gather(*lanes._batches[0, "commands"]._senders), 5.0)
    restarts_as(ref, Hanging())  # back, but stuck
    with pytest.raises(ServiceTimeout):  # counted against a saga step's attempts
        await lanes.call(0, "commands", "reserve", ConcurrencyConflict(PID, 1))


class GoneOnWithdraw:
    """A shard that died after a batch left: its withdrawal fails."""

    def __getattr__(self, method: str) -> Any:
        async def gone(*args: Any) -> None:
            raise RayActorError()

        return remote_method(gone)


async def test_a_withdrawal_that_fails_is_counted_and_reported_by_the_owners_watch() -> None:
    ref, watch = ActorRef("inventory-shard-0", "test"), Watch("order shard")
    lanes = Lanes([ref], ("commands",), 5.0, watch)
    for _ in range(3):
        ref._handle = GoneOnWithdraw()  # the handle of a batch that left; the shard is gone since
        lanes._withdraw(ref, [("caller", 1)])
        await asyncio.gather(*lanes._withdrawals)
    assert watch.failures["withdrawing calls"] == 3
    assert "withdrawing calls" in watch.failing()  # persists: health says so
