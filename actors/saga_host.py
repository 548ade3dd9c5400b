"""What the saga engine needs around it: the order entity it drives, the host that holds the orders
(mailbox, store, providers: the order shard), and a clock, which the engine's unit tests replace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
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

    async def tick(self, seconds: float, phase: float = 0.0) -> None:
        """Until the next moment ``phase`` past a multiple of ``seconds`` (now, if it is one) on the event
        loop's clock (the machine's monotonic clock): whoever waits for the same tick goes on then, within the
        loop's resolution (1 ms on Ray's). A phase of its own per shard keeps the shards of a machine apart."""
        now = asyncio.get_running_loop().time()
        beats = math.ceil((now - phase) / seconds - 1e-9)  # whole beats; on one (to a float's rounding): now
        await asyncio.sleep(max(0.0, phase + beats * seconds - now))
