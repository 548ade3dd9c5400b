from __future__ import annotations

import uuid

import pytest

from store.event_store import PostgresEventStore
from store.idempotency import IdempotencyStore, KeyInFlight, KeyReused, StoredResponse, fingerprint


async def test_a_key_replays_its_first_response_and_refuses_another_body(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    key, fp = str(uuid.uuid4()), fingerprint("POST", "/x", b'{"a": 1}')
    assert await store.claim("POST /x", key, fp) is None
    with pytest.raises(KeyInFlight):
        await store.claim("POST /x", key, fp)
    await store.complete("POST /x", key, StoredResponse(202, {"order_id": "1"}, {"location": "/o/1"}))
    assert await store.claim("POST /x", key, fingerprint("POST", "/x", b'{ "a":1 }')) == StoredResponse(
        202, {"order_id": "1"}, {"location": "/o/1"})
    with pytest.raises(KeyReused):
        await store.claim("POST /x", key, fingerprint("POST", "/x", b'{"a": 2}'))


async def test_a_claim_abandoned_by_a_crash_is_taken_over(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=0.0)
    key, fp = str(uuid.uuid4()), fingerprint("POST", "/y", b"{}")
    assert await store.claim("POST /y", key, fp) is None
    assert await store.claim("POST /y", key, fp) is None
