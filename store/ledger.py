"""Provider ledgers in PostgreSQL: what each payment or shipping provider did, by idempotency key,
and every attempt made, so exactly-once effects can be proven across restarts."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from store.errors import postgres_errors
from store.event_store import PostgresEventStore


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    provider: str
    operation: str
    key: str
    reference: str
    status: str
    amount: Decimal | None
    detail: dict[str, Any]


class ProviderLedger:
    def __init__(self, events: PostgresEventStore) -> None:
        self.pool = events.pool

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

    async def find(self, provider: str, operation: str, key: str) -> Entry | None:
        with postgres_errors():
            row = await self.pool.fetchrow(
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
        one round trip instead of four, and atomic: an attempt is never logged without its outcome."""
        with postgres_errors():
            row = await self.pool.fetchrow(
                """WITH earlier AS (
                       SELECT provider, operation, key, reference, status, amount, detail FROM provider_ledger
                       WHERE provider = $1 AND operation = $2 AND key = $3),
                   attempt AS (
                       INSERT INTO provider_attempts (provider, operation, key, outcome)
                       SELECT $1, $2, $3, 'received' WHERE NOT EXISTS (SELECT 1 FROM earlier)),
                   stored AS (
                       INSERT INTO provider_ledger (provider, operation, key, reference, status, amount, detail)
                       SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM earlier)
                       ON CONFLICT DO NOTHING
                       RETURNING provider, operation, key, reference, status, amount, detail)
                   SELECT * FROM stored UNION ALL SELECT * FROM earlier""",
                entry.provider, entry.operation, entry.key, entry.reference, entry.status, entry.amount, entry.detail)
        if row is not None:
            return Entry(**dict(row))
        # Another session stored the key's entry after this statement's snapshot was taken: read it.
        found = await self.find(entry.provider, entry.operation, entry.key)
        if found is None:
            raise LookupError(entry.key)
        return found

    async def set_status(self, provider: str, operation: str, key: str, status: str) -> None:
        with postgres_errors():
            await self.pool.execute(
                """UPDATE provider_ledger SET status = $4, updated_at = NOW()
                   WHERE provider = $1 AND operation = $2 AND key = $3""", provider, operation, key, status)
