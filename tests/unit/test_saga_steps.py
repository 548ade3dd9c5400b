"""What a saga step's call came back with, as the saga engine sees it: an inventory shard lost is an outage
(waited out, not counted against the step's attempts); one there but too slow, or a refusal, is counted.
Driven in-process with an inventory client that fails as Ray's calls do."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from actors.calls import ActorLost, ServiceTimeout
from actors.saga_steps import StepRunner
from domain import fulfilment as ff
from domain import inventory as inv
from domain import saga as sg
from domain.events import Metadata, Recorded
from store.errors import StoreUnavailable
from tests.unit.test_order_domain import created, given

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Inventory:
    """Every call raises ``error``; undo (a refused reserve gives back what it holds) is counted."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.undone: list[tuple[uuid.UUID, bool]] = []

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    async def undo(self, product_id: uuid.UUID, reservation_id: uuid.UUID, owner: str,
                   correlation_id: uuid.UUID | None = None, void: bool = False) -> None:
        self.undone.append((reservation_id, void))


def saga_of(order_id: uuid.UUID) -> sg.Saga:
    s = None
    for version, e in enumerate(sg.decide_start(order_id, NOW, sg.SagaPolicy()), start=1):
        s = sg.evolve(s, Recorded(uuid.uuid4(), sg.AGGREGATE_TYPE, version, e,
                                  Metadata(uuid.uuid4(), uuid.uuid4(), order_id, None, NOW)))
    assert s is not None
    return s


@pytest.mark.parametrize(("error", "outage"), [
    (ActorLost("inventory-shard-0 is unavailable"), True),
    (StoreUnavailable("PostgreSQL unavailable"), True),
    (ServiceTimeout("shard 0 did not answer reserve"), False),
    (inv.InsufficientStock(uuid.uuid4(), 3, 1), False),
])
async def test_a_step_counts_what_its_call_met_unless_it_was_an_outage(error: Exception, outage: bool) -> None:
    order = given(created())
    assert order is not None
    inventory = Inventory(error)
    steps = StepRunner(inventory, None, None, 900.0, b"k" * 32)  # type: ignore[arg-type]
    for step in ("reserve_inventory", "confirm_order"):
        result, _ = await steps.run(order, saga_of(order.order_id), sg.RunStep(step, sg.Phase.EXECUTE, 1, 1, 300.0))
        assert not result.ok and result.unavailable is outage, step
        assert result.retryable is not isinstance(error, inv.InsufficientStock)
        # the service's own trouble is kept for operators, not shown on the customer's order; a refusal is shown
        assert result.internal is not isinstance(error, inv.InsufficientStock)
    # a reserve refused gives back what the order holds, and closes no id: the step itself was the reserver;
    # a reserve that found the shard lost or slow gives back nothing (its reservation may still be made)
    given_back = [r.reservation_id for r in ff.held_reservations(order, b"k" * 32)]
    if isinstance(error, inv.InsufficientStock):
        assert given_back and set(given_back) <= {rid for rid, _ in inventory.undone}
        assert not any(void for _, void in inventory.undone)
    else:
        assert inventory.undone == []


async def test_a_compensation_closes_the_orders_unused_ids_but_not_those_of_an_earlier_scheme() -> None:
    order = given(created())
    assert order is not None and not order.reservations  # its reserve never answered
    inventory = Inventory(AssertionError("not called"))
    steps = StepRunner(inventory, None, None, 900.0, b"k" * 32)  # type: ignore[arg-type]
    result, _ = await steps.run(order, saga_of(order.order_id),
                                sg.RunStep("release_inventory", sg.Phase.COMPENSATE, 1, 1, 60.0))
    assert result.ok
    planned = {r.reservation_id for r in ff.planned_reservations(order, b"k" * 32)}
    legacy = {r.reservation_id for r in ff.legacy_reservations(order)}
    assert {rid for rid, void in inventory.undone if void} == planned
    assert {rid for rid, void in inventory.undone if not void} == legacy - planned
