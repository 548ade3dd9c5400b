"""What every actor of the service shares: starting itself, and for shards, hosting entities."""

from __future__ import annotations

import abc
import asyncio
import gc
import os
import uuid
from typing import Any, ClassVar

import ray

from actors import metrics as m
from actors.call_batches import Answer, BatchRunner, Call, Key
from actors.client import ServiceUnavailable
from actors.entities import EntityHost
from actors.watch import Watch
from commerce import collector, logs
from commerce.settings import ResolvedSettings
from domain.errors import DomainError
from store.errors import StoreError

# The shape of the actors' calls (their arguments, their answers, the errors they raise); a start refuses
# running actors of another (actors.deploy.check_layout). 2: frozen views and raised domain errors;
# 4: batched calls to the shards (run_batch, withdraw), each call with its caller's deadline; 5: create_order's
# `new`, and order shards told of prices (price_changed); 6: set_stock's expected_version, reserve's held_before,
# undo's void, keep_starting.
PROTOCOL = 6
# Errors a batched call raises to its caller as they are, as an unbatched call's reach it out of RayTaskError.
BATCH_ERRORS = (DomainError, StoreError, TimeoutError, ServiceUnavailable)
START_RETRY = 1.0  # seconds before a failed start is tried again on its own; doubled up to START_RETRY_MAX
START_RETRY_MAX = 30.0


class ServiceActor(abc.ABC):
    """An actor that starts (connects, recovers) on its own, right after Ray creates or restarts it."""

    def __init__(self, settings: ResolvedSettings) -> None:
        logs.install()
        collector.tune()
        self.settings = settings
        self.watch = Watch(type(self).__name__)
        self._started: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            ray.get_runtime_context().current_actor.keep_starting.remote()  # without waiting for a first call

    async def keep_starting(self) -> None:
        """Start, and while a dependency is down, try again with a growing delay: an actor that Ray restarted
        while PostgreSQL was away resumes its work (sagas, expiries, projections) once it is back, even when
        no call reaches it. Each failure is the watch's (logged, and in /health while it persists)."""
        delay = START_RETRY
        while not await self.watch.run("starting", self.start):
            await asyncio.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX)

    async def start(self) -> bool:
        if self._started is None:
            self._started = asyncio.create_task(self._start_once())
        task = self._started
        try:
            await asyncio.shield(task)
        except Exception:
            if self._started is task:
                self._started = None  # a dependency was down: the next call tries again
            raise
        return True

    async def _start_once(self) -> None:
        await self._start()
        # What the start made (modules, pools, the service's own objects) lives as long as the process: frozen,
        # it is out of the collector's way, and a full collection walks only what came after. Walking it all
        # stalled an order shard's event loop for 61 ms of CPU on average, every 10 s or so under load
        # (docs/benchmarks.md, fifth round). Collected first, so that no garbage is frozen; what is frozen and
        # becomes garbage later (a connection the pool closes) stays, once, not in proportion to the load.
        # Serve's replicas do the same at the end of their start.
        gc.collect()
        gc.freeze()

    @abc.abstractmethod
    async def _start(self) -> None:
        """Connect, start timers and resume work; runs once per actor process."""


class Shard(ServiceActor):
    """A shard hosting entities: passivation timer, the cap knob, the common metrics, and batched calls."""

    KIND: ClassVar[str]
    KIND_NAME: ClassVar[str]  # as the admin API names it
    BATCHED: ClassVar[frozenset[str]]  # the methods its clients may call in batches (actors.call_batches)
    host: EntityHost[Any]
    metrics: m.OrderMetrics | m.InventoryMetrics

    def __init__(self, settings: ResolvedSettings, index: int) -> None:
        self.index = index
        self.batch_runner = BatchRunner(self, self.BATCHED, BATCH_ERRORS)
        super().__init__(settings)

    async def run_batch(self, calls: list[Call]) -> list[Answer]:
        """Many calls of one caller at once, each as if called alone."""
        await self.start()
        return await self.batch_runner.run(calls)

    async def withdraw(self, keys: list[Key]) -> None:
        """Calls of a batch whose caller gave up: cancelled if running, dropped if they come later."""
        self.batch_runner.withdraw(keys)

    async def _passivation_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.settings.passivate_after / 4, 1.0))
            await self.watch.run("passivating idle entities", lambda: self.host.passivate_idle(self.settings.passivate_after))

    def failing(self) -> dict[str, str]:
        """Background work failing again and again: the shard's own, and its entities' snapshots."""
        return {**self.watch.failing(), **self.host.watch.failing()}

    async def set_max_active(self, limit: int) -> dict[str, Any]:
        """Change the cap on entities in memory (an operator knob); resets the peak gauge."""
        await self.start()
        self.host.max_active = max(limit, 1)
        self.host.peak_active = self.host.active
        return await self.stats()

    async def layout(self) -> dict[str, int]:
        """The shard counts this actor was made with, and the shape of its calls (another start must not mix
        its own with them)."""
        return {"order_shards": self.settings.order_shards, "inventory_shards": self.settings.inventory_shards,
                "protocol": PROTOCOL}

    async def describe(self) -> dict[str, Any]:
        """Where this shard runs and how busy it is (an operator's view; restarts come from Ray's actor table)."""
        await self.start()
        context = ray.get_runtime_context()
        return {"kind": self.KIND_NAME, "shard": self.index, "actor_id": context.get_actor_id(),
                "node_id": context.get_node_id(), "pid": os.getpid(), "active_entities": self.host.active,
                "max_active_entities": self.host.max_active, "mailbox_depth": self.host.waiting,
                **await self.workload()}

    async def workload(self) -> dict[str, int]:
        return {"sagas_running": 0, "conflicts": 0}

    async def locate(self, entity_id: uuid.UUID) -> dict[str, Any]:
        """Whether the entity is in this shard's memory now (an operator's "where is entity X")."""
        await self.start()
        return {"shard": self.index, "kind": self.KIND, "active": self.host.is_active(entity_id)}

    async def metrics_samples(self) -> list[m.Family]:
        return await m.shard_samples(self)

    async def metrics_text(self) -> str:
        await self.start()
        self.metrics.active_entities.labels(self.KIND).set(self.host.active)
        return m.render(self.metrics.registry)

    async def stats(self) -> dict[str, Any]:
        await self.start()
        return {"shard": self.index, "active": self.host.active, "peak_active": self.host.peak_active,
                "activations": self.host.activations}
