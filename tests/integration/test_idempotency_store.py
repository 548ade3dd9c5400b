"""The idempotency key store on a real PostgreSQL. Ages are set with SQL on the test's own keys, never slept."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from store.event_store import PostgresEventStore
from store.idempotency import IdempotencyStore, KeyInFlight, KeyReused, StoredResponse, fingerprint
from tests.integration.ray_support import eventually

SCOPE = "customer:{} POST /api/v1/cart"
FIRST = fingerprint("POST", "/api/v1/cart", b'{"a": 1}')
OTHER = fingerprint("POST", "/api/v1/cart", b'{"a": 2}')
ANSWER = StoredResponse(201, {"id": "1"}, {"location": "/api/v1/cart/1"})


def fresh() -> tuple[str, str]:
    """A scope of a caller of its own and a new key."""
    return SCOPE.format(uuid.uuid4()), str(uuid.uuid4())


async def age(event_store: PostgresEventStore, scope: str, key: str, seconds: float) -> None:
    await event_store.pool.execute(
        "UPDATE idempotency_keys SET created_at = NOW() - make_interval(secs => $3) WHERE scope = $1 AND key = $2",
        scope, key, seconds)


async def stored_keys(event_store: PostgresEventStore, scope: str) -> set[str]:
    rows = await event_store.pool.fetch("SELECT key FROM idempotency_keys WHERE scope = $1", scope)
    return {row["key"] for row in rows}


# --- replay and refusal ----------------------------------------------------------------------------


async def test_a_key_replays_its_first_answer_for_an_equal_body(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    assert await store.claim(scope, key, FIRST) is None
    await store.complete(scope, key, ANSWER)
    assert await store.claim(scope, key, fingerprint("POST", "/api/v1/cart", b'{ "a":1 }')) == ANSWER


async def test_a_repeat_while_the_key_is_in_flight_is_told_to_retry(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    with pytest.raises(KeyInFlight):
        await store.claim(scope, key, FIRST)


async def test_of_many_claims_of_a_key_at_once_exactly_one_wins(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await asyncio.gather(*[event_store.pool.fetchval("SELECT 1") for _ in range(20)])  # so the claims do run at once
    outcomes = await asyncio.gather(*[store.claim(scope, key, FIRST) for _ in range(20)], return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["KeyInFlight"] * 19 + ["NoneType"]


async def test_an_answered_key_refuses_another_body(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await store.complete(scope, key, ANSWER)
    with pytest.raises(KeyReused):
        await store.claim(scope, key, OTHER)


async def test_a_key_in_flight_refuses_another_body(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    with pytest.raises(KeyReused):
        await store.claim(scope, key, OTHER)


async def test_the_same_key_from_another_caller_is_a_claim_of_its_own(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    key, alice, bob = str(uuid.uuid4()), SCOPE.format(uuid.uuid4()), SCOPE.format(uuid.uuid4())
    await store.claim(alice, key, FIRST)
    await store.complete(alice, key, ANSWER)
    assert await store.claim(bob, key, FIRST) is None  # neither in flight nor alice's answer
    await store.complete(bob, key, StoredResponse(201, {"id": "2"}, {}))
    assert await store.claim(alice, key, FIRST) == ANSWER


# --- release after a server error ------------------------------------------------------------------


async def test_a_released_claim_lets_the_retry_claim_and_answer(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await store.release(scope, key)  # the work failed with a 5xx
    assert await store.claim(scope, key, FIRST) is None
    await store.complete(scope, key, ANSWER)
    assert await store.claim(scope, key, FIRST) == ANSWER


async def test_releasing_an_answered_key_keeps_its_answer(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await store.complete(scope, key, ANSWER)
    await store.release(scope, key)
    assert await store.claim(scope, key, FIRST) == ANSWER


# --- claims left by a crash ------------------------------------------------------------------------


async def test_a_claim_left_by_a_crash_stays_in_flight_until_stale_after(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=10.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await age(event_store, scope, key, 5)
    with pytest.raises(KeyInFlight):
        await store.claim(scope, key, FIRST)


async def test_a_claim_left_by_a_crash_is_taken_over_after_stale_after(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=10.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await age(event_store, scope, key, 20)
    assert await store.claim(scope, key, FIRST) is None


async def test_a_claim_taken_over_is_in_flight_again(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=10.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await age(event_store, scope, key, 20)
    await store.claim(scope, key, FIRST)
    with pytest.raises(KeyInFlight):
        await store.claim(scope, key, FIRST)


async def test_an_old_answered_key_is_replayed_not_taken_over(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=10.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await store.complete(scope, key, ANSWER)
    await age(event_store, scope, key, 20)
    assert await store.claim(scope, key, FIRST) == ANSWER


async def test_a_claim_left_by_a_crash_is_not_taken_over_with_another_body(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, stale_after=10.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    await age(event_store, scope, key, 20)
    with pytest.raises(KeyReused):
        await store.claim(scope, key, OTHER)


# --- retention -------------------------------------------------------------------------------------


async def test_purge_removes_keys_older_than_the_retention_and_keeps_newer_ones(
        event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, keep_hours=48)
    scope = SCOPE.format(uuid.uuid4())
    for key, hours in (("fresh", 0), ("younger", 47), ("older", 49)):
        await store.claim(scope, key, FIRST)
        await store.complete(scope, key, ANSWER)
        await age(event_store, scope, key, hours * 3600)
    assert await store.purge() >= 1
    assert await stored_keys(event_store, scope) == {"fresh", "younger"}


async def test_purge_keeps_keys_for_a_day_at_least(event_store: PostgresEventStore) -> None:
    store = IdempotencyStore(event_store, keep_hours=1)
    scope = SCOPE.format(uuid.uuid4())
    for key, hours in (("younger", 23), ("older", 25)):
        await store.claim(scope, key, FIRST)
        await age(event_store, scope, key, hours * 3600)
    await store.purge()
    assert await stored_keys(event_store, scope) == {"younger"}


async def test_a_claim_its_request_keeps_renewing_is_not_taken_over(event_store: PostgresEventStore) -> None:
    # Renewed every second: a claim is taken over only after 3 s without one, a margin that a slow machine's
    # stall between the renewal seen below and the claim after it does not use up.
    store = IdempotencyStore(event_store, stale_after=3.0)
    scope, key = fresh()
    await store.claim(scope, key, FIRST)
    async with store.held(scope, key):  # the request is still at work
        await age(event_store, scope, key, 20)

        async def renewed() -> bool:  # since the claim was aged
            return bool(await event_store.pool.fetchval(
                "SELECT created_at > NOW() - interval '10 seconds' FROM idempotency_keys WHERE scope = $1 AND key = $2",
                scope, key))

        await eventually(renewed, bool, timeout=10)
        with pytest.raises(KeyInFlight):
            await store.claim(scope, key, FIRST)
    await age(event_store, scope, key, 20)  # its request is gone: nobody renews the claim
    assert await store.claim(scope, key, FIRST) is None


# --- the key's salt --------------------------------------------------------------------------------


async def test_a_key_keeps_its_salt_through_a_release_and_a_takeover_and_gets_a_new_one_after_its_purge(
        event_store: PostgresEventStore) -> None:
    """The ids a keyed request derives include the salt: a retry's must be the failed request's (it may have
    made the order), and a key used again once purged must not reach the old request's order or cart."""
    store = IdempotencyStore(event_store, stale_after=10.0, keep_hours=48)
    scope, key = fresh()
    stored, salt = await store.claim_salted(scope, key, FIRST)
    assert stored is None and salt is not None
    await store.release(scope, key)  # a 5xx: the retry does the work again, with the same ids
    assert await store.claim_salted(scope, key, FIRST) == (None, salt)
    await age(event_store, scope, key, 20)  # its request died: taken over, with the same ids
    assert await store.claim_salted(scope, key, FIRST) == (None, salt)
    await store.complete(scope, key, ANSWER)
    assert await store.claim_salted(scope, key, FIRST) == (ANSWER, None)
    await age(event_store, scope, key, 49 * 3600)
    await store.purge()
    again, new_salt = await store.claim_salted(scope, key, FIRST)
    assert again is None and new_salt not in (None, salt)
    other_scope, _ = fresh()
    assert (await store.claim_salted(other_scope, key, FIRST))[1] not in (salt, new_salt)


async def test_a_released_claim_is_taken_over_with_its_own_body_only(event_store: PostgresEventStore) -> None:
    """A request that failed with a server error may have done its work under the key's ids (an order placed,
    its answer lost): a retry with another body would be answered with that work, so it is refused."""
    store = IdempotencyStore(event_store)
    scope, key = fresh()
    _, salt = await store.claim_salted(scope, key, FIRST)
    await store.release(scope, key)
    with pytest.raises(KeyReused):
        await store.claim_salted(scope, key, OTHER)
    assert await store.claim_salted(scope, key, FIRST) == (None, salt)
    with pytest.raises(KeyInFlight):  # taken over: in flight again
        await store.claim(scope, key, FIRST)
    await store.complete(scope, key, ANSWER)
    with pytest.raises(KeyReused):  # answered: the body it was answered for is the key's
        await store.claim(scope, key, OTHER)
