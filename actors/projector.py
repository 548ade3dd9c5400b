"""The projector: tails the event store into the read models and reports its lag.

It also pings every shard now and then, so a shard that Ray restarted resumes its sagas even when
no request reaches it, folds the changes of the sagas' statuses into their counts as often, and purges
idempotency keys past their retention once an hour. A failing
projection is parked before the failing event (its position does not move), retried with a delay
that doubles up to a minute, and its error and event id show in /health and in
``commerce_projection_errors``. While ``commerce projections rebuild`` holds a projection's lock, its
runner applies nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from typing import Any

import ray
from prometheus_client import CollectorRegistry, Gauge

from actors import metrics as m
from actors.base import ServiceActor
from actors.directory import ActorDirectory
from commerce.settings import ResolvedSettings
from store.durable_carts import CartJournal
from store.event_store import SERVICE, PostgresEventStore, create_pool
from store.idempotency import IdempotencyStore
from store.projections import NewEvents, ProjectionRunner, all_projections, tail
from store.reservations import DirectReservations
from store.sagas import FOLD_BATCH, SagaStore

SUPERVISE_INTERVAL = 2.0
FOLD_INTERVAL = 2.0
FOLD_BATCHES = 20  # statements of FOLD_BATCH changes in a round at most: a million changes, then a vacuum
PURGE_INTERVAL = 3600.0


class Projector(ServiceActor):
    def __init__(self, settings: ResolvedSettings) -> None:
        self.registry = CollectorRegistry()
        self.lag_events = Gauge("commerce_projection_lag_events", "Events not yet projected", ["projection"],
                                registry=self.registry)
        self.lag_seconds = Gauge("commerce_projection_lag_seconds", "Age of the oldest unprojected event",
                                 ["projection"], registry=self.registry)
        self.errors = Gauge("commerce_projection_errors", "1 while a projection is stopped by an error",
                            ["projection"], registry=self.registry)
        super().__init__(settings)

    async def _start(self) -> None:
        pool = await create_pool(self.settings.database_url, 4, SERVICE)
        self.store = PostgresEventStore(pool)
        self.sagas = SagaStore(self.store)
        self.runners = [ProjectionRunner(self.store, p) for p in all_projections()]
        self.news = NewEvents(pool, [r.projection.name for r in self.runners])
        self.directory = ActorDirectory(self.settings.namespace, self.settings.order_shards,
                                        self.settings.inventory_shards)
        # a runner parks a failing projection itself and backs off; once caught up, it waits for news of
        # its next event, asked after for all runners at once
        self._tasks = [asyncio.create_task(tail(r, self.news, self._stepped)) for r in self.runners]
        self._tasks += [asyncio.create_task(self._supervise()), asyncio.create_task(self._fold_saga_counts())]

    def _stepped(self, runner: ProjectionRunner) -> None:
        self.errors.labels(runner.projection.name).set(1 if runner.error else 0)

    async def _supervise(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL)
            await self.watch.run("pinging the shards", lambda: self.directory.each("ping"))
            if time.monotonic() - last_purge > PURGE_INTERVAL and await self.watch.run("purging", self._purge):
                last_purge = time.monotonic()

    async def _fold_saga_counts(self) -> None:
        """Every FOLD_INTERVAL, the changes of the sagas' statuses folded into their counts, and their table
        vacuumed. A backlog (this actor down for long) goes a round of FOLD_BATCHES statements at a time, each
        round vacuumed and the next one at once, the table's empty pages given back after it."""
        async def fold() -> None:
            while folded := await self.sagas.fold_counts(FOLD_BATCHES):
                await self.sagas.vacuum_count_changes(give_back=folded >= FOLD_BATCH)
                if folded < FOLD_BATCHES * FOLD_BATCH:
                    return

        while True:
            await asyncio.sleep(FOLD_INTERVAL)
            await self.watch.run("folding the sagas' counts", fold)

    async def _purge(self) -> None:
        await IdempotencyStore(self.store).purge()  # keys older than their retention
        await DirectReservations(self.store.pool).purge()  # reservation ids past a sale's return window
        await CartJournal(self.store.pool).purge(dt.datetime.now(dt.UTC))  # carts expired in Redis too

    async def describe(self) -> dict[str, Any]:
        await self.start()
        context = ray.get_runtime_context()
        return {"kind": "projector", "shard": 0, "actor_id": context.get_actor_id(), "node_id": context.get_node_id(),
                "pid": os.getpid(), "active_entities": 0, "max_active_entities": 0, "mailbox_depth": 0,
                "sagas_running": 0, "conflicts": 0}

    async def ping(self) -> dict[str, Any]:
        await self.start()
        return {"projections": await self.status(), "failing": self.watch.failing()}

    async def status(self) -> dict[str, Any]:
        """Each projection's position, lag, error and the id of the event it is parked on (for /health)."""
        await self.start()
        out: dict[str, Any] = {}
        for r in self.runners:
            out[r.projection.name] = status = await r.status()
            self.lag_events.labels(r.projection.name).set(status["lag_events"])
            self.lag_seconds.labels(r.projection.name).set(status["lag_seconds"])
        return out

    async def metrics_samples(self) -> list[m.Family]:
        return await m.projector_samples(self)

    async def metrics_text(self) -> str:
        await self.status()
        return m.render(self.registry)
