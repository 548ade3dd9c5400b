"""Group commit for an order shard. Every record of an order and its saga (the saga's events, the order's
events, the saga's row and step history) queues for a flush; while flushes are in flight (at most
MAX_FLUSHES), the records that arrive queue, and the next flush writes them all in one statement, its own
transaction (``record_sagas``: every stream's events, the saga rows and the step history). A record is
acknowledged only once its flush has committed.

A flush that the store refuses for a stale version, a command already applied or an error of the data
(SQLSTATE classes 22 and 23; asyncpg raises an argument it cannot encode as a DataError too) is split in
halves and each written again, down to the offending record, which fails alone. A flush that fails
otherwise (PostgreSQL lost, a timeout, a failover) fails all its members: their outcome is unknown, and the
shard marks those orders stale, so that the next command reads them again. A record whose caller gave up
before its flush started is never written."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import uuid
from collections.abc import Sequence

from domain import events as ev
from domain import saga as sg
from store.errors import DATA_ERRORS, ConcurrencyConflict, DuplicateCommand, answering, postgres_errors
from store.event_store import CommandContext, PostgresEventStore, StreamAppend
from store.sagas import SagaStore, prepare

MAX_BATCH = 256  # records per transaction: bounds a flush's statement and the work a refused flush redoes
# Flushes in flight at once: one waiting on a lock does not hold up the shard's other orders. 2 rather than 4:
# fuller flushes, 5-12 % more orders/s and 0.6-1.1 ms less CPU per order in alternating runs (docs/benchmarks.md).
MAX_FLUSHES = 2
# split, and written again: what one record can cause; anything else is the whole flush's
_REFUSED = (ConcurrencyConflict, DuplicateCommand, *DATA_ERRORS)


@dataclasses.dataclass(slots=True)
class Pending:
    """One record waiting for its flush, and where its outcome goes."""

    appends: list[StreamAppend]
    records: list[ev.Recorded]  # built before the write: ids, versions and times are the command's own
    saga: sg.Saga  # the saga after these records (its row)
    done: asyncio.Future[list[ev.Recorded]]


class GroupCommit:
    def __init__(self, store: PostgresEventStore, sagas: SagaStore, max_batch: int = MAX_BATCH,
                 max_flushes: int = MAX_FLUSHES) -> None:
        self.store = store
        self.sagas = sagas
        self.max_batch = max_batch
        self.max_flushes = max_flushes
        self._queue: list[Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self.flushes: collections.deque[int] = collections.deque(maxlen=100)  # sizes of the last flushes tried
        self.split = 0  # flushes refused as a whole and split

    async def record(self, ctx: CommandContext, saga: sg.Saga | None, saga_id: uuid.UUID,
                     saga_events: Sequence[ev.DomainEvent],
                     others: Sequence[StreamAppend] = ()) -> tuple[sg.Saga, list[ev.Recorded]]:
        """Append the saga's events and the other streams' events, and update the saga's row, atomically,
        in the next flush; the saga after them, and the stored records. Raises what the store raised for
        this record: ConcurrencyConflict, DuplicateCommand, StoreUnavailable (the outcome is unknown)."""
        appends, records, after = prepare(ctx, saga, saga_id, saga_events, others)
        pending = Pending(appends, records, after, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._start_flushes()
        try:
            stored = await asyncio.shield(pending.done)
        except asyncio.CancelledError:
            if any(p is pending for p in self._queue):  # not in a flush yet: it never will be
                self._queue = [p for p in self._queue if p is not pending]
                pending.done.cancel()
            else:  # in a flush: its outcome is nobody's to read now
                pending.done.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        return after, stored

    def _start_flushes(self) -> None:
        """One more flusher, up to MAX_FLUSHES; each takes its batch when it runs, so the records queued
        until then (those of the same turn of the event loop, or of a busy while) share its transaction."""
        if len(self._flushers) < self.max_flushes:
            task = asyncio.get_running_loop().create_task(self._flush_queue())
            self._flushers.add(task)

    async def _flush_queue(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                await self._flush(batch)
        finally:  # no longer counted from the moment it stops taking batches (a record queued next starts one)
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _flush(self, batch: list[Pending]) -> None:
        with answering([p.done for p in batch], "record"):
            await self._write_or_split(batch)

    async def _write_or_split(self, batch: list[Pending]) -> None:
        try:
            stored = await self._write(batch)
        except _REFUSED as e:
            if len(batch) == 1:
                batch[0].done.set_exception(e)
                return
            self.split += 1
            half = len(batch) // 2
            await self._write_or_split(batch[:half])
            await self._write_or_split(batch[half:])
            return
        for p, records in zip(batch, stored, strict=True):
            p.done.set_result(records)

    async def _write(self, batch: list[Pending]) -> list[list[ev.Recorded]]:
        """One transaction for the whole batch, all or nothing; each member's stored records."""
        self.flushes.append(len(batch))
        appends = [a for p in batch for a in p.appends]
        records = [r for p in batch for r in p.records]
        with postgres_errors():
            stored = await self.sagas.write_with_events(appends, records, [(p.saga, p.records) for p in batch])
        out, start = [], 0
        for p in batch:
            out.append(stored[start:start + len(p.records)])
            start += len(p.records)
        return out
