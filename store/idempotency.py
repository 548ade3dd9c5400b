"""Idempotency keys of HTTP POSTs: the first response is stored and replayed for the same key and body.

A key is claimed before the work starts, and the request that holds the claim renews it while it works
(``held``). A second request with the key while the first is still in flight is told to retry; a claim
that nobody renews any more (its request died with its process or node) is taken over ``stale_after``
seconds after its last renewal (the work itself is idempotent, its ids derive from the key). Server errors are not stored, so a
retry after a 503 does the work again: the claim is released, not forgotten, and the retry takes it over, with the
same body only (the failed request may have done its work under the key's ids). Keys are kept for ``keep_hours``
(at least 24).

Each key has a salt of its own, made when the key is first claimed and kept until the key is purged: the ids the
work derives from the key include it, so a key used again after its purge is a new request with new ids, not
the old one's order or cart (whose ids would otherwise be the same forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from store.errors import postgres_errors
from store.event_store import PostgresEventStore

log = logging.getLogger(__name__)


class KeyReused(Exception):
    """The key was used before with a different request body."""


class KeyInFlight(Exception):
    """A request with this key is being processed right now."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: Any
    headers: dict[str, str]


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


class IdempotencyStore:
    def __init__(self, events: PostgresEventStore, stale_after: float = 15.0, keep_hours: float = 48.0) -> None:
        self.pool = events.pool
        self.stale_after = stale_after
        self.keep_hours = max(keep_hours, 24.0)

    async def claim(self, scope: str, key: str, fp: str) -> StoredResponse | None:
        """Claim ``key``; returns the stored response when the request was already answered."""
        stored, _ = await self.claim_salted(scope, key, fp)
        return stored

    async def claim_salted(self, scope: str, key: str, fp: str) -> tuple[StoredResponse | None, uuid.UUID | None]:
        """As :meth:`claim`, with the key's salt once claimed (None for a key claimed before keys had salts).
        A claim its request released (a server error) is taken over at once; one left by a crash, after
        ``stale_after``; both with the same body only. Another body is KeyReused, as for an answered key: the
        request that failed may have done its work (an order placed, then the answer lost), and the retry
        works with its ids, so it must be the same request."""
        with postgres_errors():
            async with self.pool.acquire() as conn:
                claimed = await conn.fetchrow(
                    """INSERT INTO idempotency_keys (scope, key, fingerprint, salt) VALUES ($1, $2, $3, gen_random_uuid())
                       ON CONFLICT (scope, key) DO UPDATE SET created_at = NOW(), released = FALSE
                       WHERE idempotency_keys.status IS NULL AND idempotency_keys.fingerprint = $3
                         AND (idempotency_keys.released
                              OR idempotency_keys.created_at < NOW() - make_interval(secs => $4))
                       RETURNING salt""", scope, key, fp, self.stale_after)
                if claimed is not None:
                    return None, claimed["salt"]
                row = await conn.fetchrow(
                    "SELECT fingerprint, status, body, headers FROM idempotency_keys WHERE scope = $1 AND key = $2",
                    scope, key)
        if row is None:  # purged between the two statements
            return await self.claim_salted(scope, key, fp)
        if row["fingerprint"] != fp:
            raise KeyReused(key)
        if row["status"] is None:
            raise KeyInFlight(key)
        return StoredResponse(row["status"], row["body"], row["headers"] or {}), None

    @contextlib.asynccontextmanager
    async def held(self, scope: str, key: str) -> AsyncIterator[None]:
        """Keep the claim of a request at work fresh, three times per ``stale_after``."""
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.stale_after / 3)
                try:
                    await self.pool.execute(
                        """UPDATE idempotency_keys SET created_at = NOW()
                           WHERE scope = $1 AND key = $2 AND status IS NULL""", scope, key)
                except Exception as e:  # the next turn tries again; the claim lasts stale_after meanwhile
                    log.warning("an idempotency claim could not be renewed: %s: %s", type(e).__name__, e)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        with postgres_errors():
            await self.pool.execute(
                "UPDATE idempotency_keys SET status = $3, body = $4, headers = $5 WHERE scope = $1 AND key = $2",
                scope, key, response.status, response.body, response.headers)

    async def release(self, scope: str, key: str) -> None:
        """Release an unanswered claim (the request failed with a server error): the next claim takes it over,
        with its salt, so that the retry's ids are the ones the failed request may have used."""
        with postgres_errors():
            await self.pool.execute(
                "UPDATE idempotency_keys SET released = TRUE WHERE scope = $1 AND key = $2 AND status IS NULL",
                scope, key)

    async def purge(self) -> int:
        with postgres_errors():
            status = await self.pool.execute(
                "DELETE FROM idempotency_keys WHERE created_at < NOW() - make_interval(hours => $1::int)",
                int(self.keep_hours))
        return int(status.split()[-1])
