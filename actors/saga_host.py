"""What the saga engine needs around it: the order entity it drives, the host that holds the orders
(mailbox, store, providers: the order shard), and a clock, which the engine's unit tests replace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from domain import fulfilment as ff
from domain import order as o
from domain import saga as sg
from domain.events import DomainEvent


@dataclasses.dataclass(slots=True)
class OrderEntity:
    """An order and its saga: one entity, one mailbox."""

    order: o.Order | None
    saga: sg.Saga | None

    @property
    def version(self) -> int:
        return (self.order.version if self.order else 0) + (self.saga.version if self.saga else 0)


class Held(Protocol):
    """An order entity whose mailbox the engine holds."""

    id: uuid.UUID
    state: OrderEntity


class SagaHost(Protocol):
    def entity(self, order_id: uuid.UUID) -> AbstractAsyncContextManager[Any]:
        """The order's entity (a ``Held``), with its mailbox held."""

    async def record(self, ent: Any, saga_events: list[DomainEvent], order_events: list[DomainEvent]) -> bool:
        """Append atomically; False (state reloaded) when another write came first."""

    async def run_step(self, order: o.Order, saga: sg.Saga, action: sg.RunStep) -> tuple[sg.StepResult, ff.StepData]:
        """The external call behind a step."""


class Clock:
    """Wall time and real sleeps."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def tick(self, seconds: float) -> None:
        """Until the next multiple of ``seconds`` on the event loop's clock: whoever waits for it in this
        process goes on at that same moment."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(seconds - loop.time() % seconds)
