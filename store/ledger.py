"""Provider ledgers in PostgreSQL: what each payment or shipping provider did, by idempotency key,
and every attempt made, so exactly-once effects can be proven across restarts.

A call that cannot fail (``effect_once``) is written together with the calls made meanwhile: while a statement
is in flight (at most MAX_FLUSHES), the calls that arrive queue, and the next statement writes them all, its
own transaction. A call's answer comes only after its statement committed. As in the order shards' group
commit (``actors/order_commits.py``), a statement refused for its data (SQLSTATE classes 22 and 23) is split in
halves and each written again, down to the offending call, which fails alone; one that fails otherwise
(PostgreSQL lost, a timeout) fails all its calls. A call given up before its statement is sent is never made."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import json
from decimal import Decimal
from typing import Any

import asyncpg

from store.errors import DATA_ERRORS, answering, postgres_errors
from store.event_store import PostgresEventStore, columns

MAX_BATCH = 256  # calls per statement
MAX_FLUSHES = 2  # statements in flight at once


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    provider: str
    operation: str
    key: str
    reference: str
    status: str
    amount: Decimal | None
    detail: dict[str, Any]


Key = tuple[str, str, str]


def _key(entry: Entry) -> Key:
    return entry.provider, entry.operation, entry.key


@dataclasses.dataclass(slots=True)
class _Call:
    entry: Entry
    detail: str  # the entry's detail as JSON (in an array of jsonb, asyncpg would read a list as a dimension)
    done: asyncio.Future[Entry]  # cancelled once its caller gave up


class ProviderLedger:
    def __init__(self, events: PostgresEventStore, max_batch: int = MAX_BATCH) -> None:
        self.pool = events.pool
        self.max_batch = max_batch
        self._queue: list[_Call] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self.flushes: collections.deque[int] = collections.deque(maxlen=100)  # sizes of the last statements tried

    async def attempt(self, provider: str, operation: str, key: str, outcome: str) -> None:
        with postgres_errors():
            await self.pool.execute(
                "INSERT INTO provider_attempts (provider, operation, key, outcome) VALUES ($1, $2, $3, $4)",
                provider, operation, key, outcome)

    async def attempts(self, provider: str, operation: str, key: str) -> int:
        with postgres_errors():
            n = await self.pool.fetchval(
                """SELECT COUNT(*) FROM provider_attempts
                   WHERE provider = $1 AND operation = $2 AND key = $3 AND outcome = 'received'""",
                provider, operation, key)
        return int(n)

    async def find(self, provider: str, operation: str, key: str,
                   conn: asyncpg.Connection | asyncpg.Pool | None = None) -> Entry | None:
        with postgres_errors():
            row = await (conn or self.pool).fetchrow(
                """SELECT provider, operation, key, reference, status, amount, detail FROM provider_ledger
                   WHERE provider = $1 AND operation = $2 AND key = $3""", provider, operation, key)
        return Entry(**dict(row)) if row else None

    async def put(self, entry: Entry) -> Entry:
        """Record an effect once; a second put with the key returns the first entry unchanged."""
        with postgres_errors():
            await self.pool.execute(
                """INSERT INTO provider_ledger (provider, operation, key, reference, status, amount, detail)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
                entry.provider, entry.operation, entry.key, entry.reference, entry.status, entry.amount, entry.detail)
        found = await self.find(entry.provider, entry.operation, entry.key)
        if found is None:
            raise LookupError(entry.key)
        return found

    async def effect_once(self, entry: Entry) -> Entry:
        """A call received and its effect recorded, in one statement: the attempt is logged and the entry
        stored unless the key has an entry already; returns the key's entry, new or earlier (voided, say).

        The same as ``find``, ``attempt`` and ``put`` one after the other for a call that cannot fail, in
        one statement instead of four, shared with the calls made meanwhile, and atomic: an attempt is never
        logged without its outcome. A call given up before its statement is sent is never made."""
        loop = asyncio.get_running_loop()
        call = _Call(entry, json.dumps(entry.detail), loop.create_future())  # a detail JSON cannot hold fails here
        self._queue.append(call)
        if len(self._flushers) < MAX_FLUSHES:  # a context of its own: it works for every caller, not the first
            self._flushers.add(loop.create_task(self._flush_queue(), context=contextvars.Context()))
        try:
            return await asyncio.shield(call.done)
        except asyncio.CancelledError:
            self._queue = [c for c in self._queue if c is not call]
            if not call.done.cancel():  # answered meanwhile: its outcome is nobody's to read now
                call.done.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    async def _flush_queue(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                await self._flush(batch)
        finally:
            self._flushers.discard(asyncio.current_task())

    async def _flush(self, batch: list[_Call]) -> None:
        with answering([c.done for c in batch], "provider call"):
            await self._write_or_split(batch)

    async def _write_or_split(self, batch: list[_Call]) -> None:
        try:
            await self._write(batch)
        except DATA_ERRORS as e:
            live = [c for c in batch if not c.done.done()]
            if len({_key(c.entry) for c in live}) <= 1:  # one key: its first call is at fault, the others go again
                if live:
                    live[0].done.set_exception(e)
                    await self._write_or_split(live[1:])
                return
            half = len(batch) // 2
            await self._write_or_split(batch[:half])
            await self._write_or_split(batch[half:])

    async def _write(self, batch: list[_Call]) -> None:
        """The calls still awaited, in one statement (its own transaction), each answered with its key's entry.
        A key twice in the batch is written once: the second call finds the first's entry, as it would after it."""
        with postgres_errors():
            async with self.pool.acquire() as conn:
                statement = await conn.prepare(_EFFECT_MANY)  # a first use asks the server: a wait of its own
                first: dict[Key, _Call] = {}
                for c in batch:
                    if not c.done.done():  # not given up while the statement waited for a connection
                        first.setdefault(_key(c.entry), c)
                if not first:
                    return
                self.flushes.append(len(first))
                rows = await statement.fetch(*columns([(c.entry.provider, c.entry.operation, c.entry.key,
                                                         c.entry.reference, c.entry.status, c.entry.amount, c.detail)
                                                        for c in first.values()], 7))
                found: dict[Key, Entry | None] = {
                    (r["provider"], r["operation"], r["key"]): Entry(**dict(r)) for r in rows}
                for key in first.keys() - found.keys():
                    # Another session stored the key's entry after this statement's snapshot was taken: read it.
                    found[key] = await self.find(*key, conn)
        for c in batch:
            if not c.done.done():
                entry = found[_key(c.entry)]
                if entry is None:  # the statement committed: only this key's calls lack their answer
                    c.done.set_exception(LookupError(c.entry.key))
                else:
                    c.done.set_result(entry)

    async def set_status(self, provider: str, operation: str, key: str, status: str) -> None:
        with postgres_errors():
            await self.pool.execute(
                """UPDATE provider_ledger SET status = $4, updated_at = NOW()
                   WHERE provider = $1 AND operation = $2 AND key = $3""", provider, operation, key, status)


# The calls' rows in the order of their keys, so that two statements over the same keys (two live instances of
# a shard) take their locks in one order; ``earlier`` and ``stored`` see one snapshot, as a single call does.
_EFFECT_MANY = """
    WITH call AS (
        SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[],
                             $6::numeric[], $7::text[]) AS c(provider, operation, key, reference, status, amount, detail)),
    earlier AS (
        SELECT l.provider, l.operation, l.key, l.reference, l.status, l.amount, l.detail
        FROM provider_ledger l JOIN call c USING (provider, operation, key)),
    fresh AS (
        SELECT * FROM call c WHERE NOT EXISTS (
            SELECT 1 FROM earlier e WHERE (e.provider, e.operation, e.key) = (c.provider, c.operation, c.key))),
    attempt AS (
        INSERT INTO provider_attempts (provider, operation, key, outcome)
        SELECT provider, operation, key, 'received' FROM fresh ORDER BY provider, operation, key),
    stored AS (
        INSERT INTO provider_ledger (provider, operation, key, reference, status, amount, detail)
        SELECT provider, operation, key, reference, status, amount, detail::jsonb FROM fresh
        ORDER BY provider, operation, key
        ON CONFLICT DO NOTHING
        RETURNING provider, operation, key, reference, status, amount, detail)
    SELECT * FROM stored UNION ALL SELECT * FROM earlier"""
