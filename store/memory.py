"""An in-memory event store with the same contract as the PostgreSQL one, for unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence

from domain import events as ev
from store.errors import ConcurrencyConflict, DuplicateCommand
from store.event_store import CommandContext, Snapshot, StreamAppend, build_records


class InMemoryEventStore:
    def __init__(self) -> None:
        self._log: list[ev.Recorded] = []
        self._streams: dict[uuid.UUID, list[ev.Recorded]] = {}
        self._event_ids: set[uuid.UUID] = set()
        self._snapshots: dict[uuid.UUID, Snapshot] = {}
        self._deadlines: dict[uuid.UUID, tuple[str, dt.datetime | None, int]] = {}
        self._lock = asyncio.Lock()

    async def append(self, appends: Sequence[StreamAppend], ctx: CommandContext) -> list[ev.Recorded]:
        records = build_records(appends, ctx)
        async with self._lock:
            for a in appends:
                if a.events and len(self._streams.get(a.aggregate_id, [])) != a.expected_version:
                    raise ConcurrencyConflict(a.aggregate_id, a.expected_version)
            if any(r.metadata.event_id in self._event_ids for r in records):
                raise DuplicateCommand(str(ctx.command_id))
            stored = []
            for r in records:
                r = dataclasses.replace(r, position=len(self._log) + 1)
                self._log.append(r)
                self._streams.setdefault(r.aggregate_id, []).append(r)
                self._event_ids.add(r.metadata.event_id)
                stored.append(r)
            for a in appends:
                if a.deadline is not None:
                    self._schedule(a.aggregate_id, a.aggregate_type, a.deadline.due_at, a.expected_version + len(a.events))
            return stored

    def _schedule(self, aggregate_id: uuid.UUID, aggregate_type: str, due_at: dt.datetime | None, version: int) -> None:
        current = self._deadlines.get(aggregate_id)
        if current is None or current[2] <= version:  # no deadline is kept too, with its version
            self._deadlines[aggregate_id] = (aggregate_type, due_at, version)

    async def schedule(self, aggregate_id: uuid.UUID, aggregate_type: str, due_at: dt.datetime | None,
                       version: int) -> None:
        self._schedule(aggregate_id, aggregate_type, due_at, version)

    async def due(self, aggregate_type: str, now: dt.datetime, limit: int = 1000,
                  shard: tuple[int, int] | None = None) -> list[uuid.UUID]:
        index, count = shard or (0, 1)
        found = sorted((t, aid) for aid, (kind, t, _) in self._deadlines.items()
                       if kind == aggregate_type and t is not None and t <= now and aid.int % count == index)
        return [aid for _, aid in found[:limit]]

    async def next_due(self, aggregate_type: str, shard: tuple[int, int] | None = None) -> dt.datetime | None:
        index, count = shard or (0, 1)
        return min((t for aid, (kind, t, _) in self._deadlines.items()
                    if kind == aggregate_type and t is not None and aid.int % count == index), default=None)

    async def aggregate_type(self, aggregate_id: uuid.UUID) -> str | None:
        stream = self._streams.get(aggregate_id)
        return stream[0].aggregate_type if stream else None

    async def load_stream(self, aggregate_id: uuid.UUID, after_version: int = 0) -> list[ev.Recorded]:
        return [r for r in self._streams.get(aggregate_id, []) if r.version > after_version]

    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[ev.Recorded]:
        return self._log[after_position:after_position + limit]

    async def query(self, *, aggregate_id: uuid.UUID | None = None, aggregate_type: str | None = None,
                    event_type: str | None = None, after_position: int = 0, limit: int = 100) -> list[ev.Recorded]:
        found = [
            r for r in self._log[after_position:]
            if (aggregate_id is None or r.aggregate_id == aggregate_id)
            and (aggregate_type is None or r.aggregate_type == aggregate_type)
            and (event_type is None or r.event_type == event_type)
        ]
        return found[:limit]

    async def contains(self, event_id: uuid.UUID) -> bool:
        return event_id in self._event_ids

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = self._snapshots.get(snapshot.aggregate_id)
        if current is None or current.version < snapshot.version:
            self._snapshots[snapshot.aggregate_id] = snapshot

    async def load_snapshot(self, aggregate_id: uuid.UUID) -> Snapshot | None:
        return self._snapshots.get(aggregate_id)
