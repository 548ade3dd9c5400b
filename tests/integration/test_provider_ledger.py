"""The simulated providers' ledger on a real PostgreSQL: a call that cannot fail is received and takes
effect in one statement, once per key, however often and however concurrently it is made; the calls made
meanwhile share that statement, each with its own answer."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg

from actors.providers import SimulatedPayments, SimulatedShipping
from domain.order import ShippingAddress
from store.event_store import PostgresEventStore, create_pool
from store.ledger import Entry, ProviderLedger
from tests.integration.ray_support import eventually

ADDRESS = ShippingAddress("A", "1 Main St", "C", "12345", "US")


def charge(key: str, reference: str = "pay_1") -> Entry:
    return Entry("payments", "charge", key, reference, "succeeded", Decimal("9.99"), {"token": "tok_visa"})


async def received(event_store: PostgresEventStore, key: str) -> int:
    return int(await event_store.pool.fetchval(
        "SELECT COUNT(*) FROM provider_attempts WHERE key = $1 AND outcome = 'received'", key))


async def test_the_first_call_is_received_and_stored_and_a_repeat_returns_it(
        event_store: PostgresEventStore) -> None:
    ledger, key = ProviderLedger(event_store), f"{uuid.uuid4()}:process_payment"
    first = await ledger.effect_once(charge(key, "pay_first"))
    again = await ledger.effect_once(charge(key, "pay_second"))
    assert first == again == await ledger.find("payments", "charge", key)
    assert first.reference == "pay_first" and first.amount == Decimal("9.99")
    assert await received(event_store, key) == 1  # a repeat finds the effect: it is not a new attempt


async def test_concurrent_calls_with_one_key_take_effect_once(event_store: PostgresEventStore) -> None:
    ledger, key = ProviderLedger(event_store), f"{uuid.uuid4()}:process_payment"
    got = await asyncio.gather(*[ledger.effect_once(charge(key, f"pay_{n}")) for n in range(16)])
    stored = await ledger.find("payments", "charge", key)
    assert stored is not None and all(e == stored for e in got)  # the losers answer with the winner's charge


async def test_calls_made_together_share_a_statement_and_each_gets_its_own_entry(
        event_store: PostgresEventStore) -> None:
    ledger = ProviderLedger(event_store)
    keys = [f"{uuid.uuid4()}:process_payment" for _ in range(12)]
    got = await asyncio.gather(*[ledger.effect_once(charge(k, f"pay_{n}")) for n, k in enumerate(keys)])
    assert [e.key for e in got] == keys and [e.reference for e in got] == [f"pay_{n}" for n in range(12)]
    assert sum(ledger.flushes) == 12 and len(ledger.flushes) < 12  # fewer statements than calls
    assert [await received(event_store, k) for k in keys] == [1] * 12
    again = await asyncio.gather(*[ledger.effect_once(charge(k, "pay_again")) for k in keys])
    assert again == got  # each repeat finds its own key's first entry
    assert [await received(event_store, k) for k in keys] == [1] * 12


async def test_a_call_the_server_refuses_fails_alone_and_the_others_of_its_statement_take_effect(
        event_store: PostgresEventStore) -> None:
    ledger = ProviderLedger(event_store)
    keys = [f"{uuid.uuid4()}:process_payment" for _ in range(5)]
    # An amount that DECIMAL(12, 2) cannot hold: PostgreSQL refuses the whole statement it is in.
    bad = Entry("payments", "charge", keys[2], "pay_bad", "succeeded", Decimal("1e12"), {})
    calls = [ledger.effect_once(bad if n == 2 else charge(k)) for n, k in enumerate(keys)]
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[2], Exception) and "numeric field overflow" in str(got[2])
    assert ledger.flushes[0] == 5  # they were made together, and the server refused the statement that held them
    assert all(isinstance(e, Entry) and e.key == k for n, (e, k) in enumerate(zip(got, keys, strict=True)) if n != 2)
    assert await ledger.find("payments", "charge", keys[2]) is None
    assert [await received(event_store, k) for k in keys] == [1, 1, 0, 1, 1]  # no attempt without its outcome


async def settle() -> None:
    """Let every task that can run go on until it waits (here: for a connection, or for its answer)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_call_given_up_before_its_statement_was_sent_never_takes_effect(database: str) -> None:
    pool = await create_pool(database, 2)
    ledger = ProviderLedger(PostgresEventStore(pool))
    held = [await pool.acquire() for _ in range(2)]  # the statements wait for a connection
    try:
        keys = [f"{uuid.uuid4()}:process_payment" for _ in range(3)]
        waiting = asyncio.create_task(ledger.effect_once(charge(keys[0])))
        await settle()  # its statement is taken and waits for a connection
        second = asyncio.create_task(ledger.effect_once(charge(keys[1])))
        await settle()  # so does the second's: two statements are under way, the most there may be
        queued = asyncio.create_task(ledger.effect_once(charge(keys[2])))
        await settle()  # it waits in the queue
        assert [c.entry.key for c in ledger._queue] == [keys[2]]  # the other two are in their statements
        waiting.cancel()  # given up while its statement waited for a connection
        queued.cancel()  # given up in the queue
        await settle()
        for conn in held:
            await pool.release(conn)
        held = []
        assert (await second).key == keys[1]
        assert waiting.cancelled() and queued.cancelled()
        assert list(ledger.flushes) == [1]  # the second's statement alone was sent
        for key in (keys[0], keys[2]):
            assert await ledger.find("payments", "charge", key) is None
            assert await pool.fetchval("SELECT COUNT(*) FROM provider_attempts WHERE key = $1", key) == 0
    finally:
        for conn in held:
            await pool.release(conn)
        await pool.close()


async def waiting_on_locks(pool: asyncpg.Pool, sessions: int) -> None:
    """Until that many sessions wait for a lock (a probe of the server's own view, not a sleep)."""
    async def waiting() -> int:
        return int(await pool.fetchval(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))
    await eventually(waiting, lambda n: n >= sessions, timeout=30)


async def test_two_ledgers_racing_on_the_same_keys_store_one_entry_each_and_answer_alike(database: str) -> None:
    """As two live instances of an order shard would: each its own pool, the same keys in opposite orders, both
    held up by a third session's entries for two of the keys until both statements wait for them."""
    pools = [await create_pool(database, 4) for _ in range(3)]
    try:
        ledgers = [ProviderLedger(PostgresEventStore(p)) for p in pools[:2]]
        keys = [f"{uuid.uuid4()}:process_payment" for _ in range(20)]
        async with pools[2].acquire() as holder:
            held = holder.transaction()
            await held.start()
            for key in (keys[0], keys[-1]):
                await holder.execute("""INSERT INTO provider_ledger (provider, operation, key, reference, status)
                                        VALUES ('payments', 'charge', $1, 'pay_held', 'succeeded')""", key)
            racing = asyncio.gather(*[ledgers[0].effect_once(charge(k, f"pay_a{n}")) for n, k in enumerate(keys)],
                                    *[ledgers[1].effect_once(charge(k, f"pay_b{n}"))
                                      for n, k in reversed(list(enumerate(keys)))])
            await waiting_on_locks(pools[2], 2)  # both statements wait for the held keys
            await held.commit()
        got = await racing
        first, second = got[:20], got[20:][::-1]
        assert first == second  # the losers answer with the winner's entry
        assert [e.key for e in first] == keys
        assert first[0].reference == first[-1].reference == "pay_held"  # read again after the holder committed
        stored = await pools[0].fetchval(
            "SELECT COUNT(*) FROM provider_ledger WHERE provider = 'payments' AND key = ANY($1)", keys)
        assert stored == 20
    finally:
        for p in pools:
            await p.close()


async def test_a_detail_that_json_cannot_hold_fails_its_own_call_only(event_store: PostgresEventStore) -> None:
    ledger = ProviderLedger(event_store)
    keys = [f"{uuid.uuid4()}:process_payment" for _ in range(3)]
    odd = Entry("payments", "charge", keys[1], "pay_odd", "succeeded", Decimal("1.00"), {"token": object()})
    got = await asyncio.gather(*[ledger.effect_once(odd if n == 1 else charge(k)) for n, k in enumerate(keys)],
                               return_exceptions=True)
    assert isinstance(got[1], TypeError)
    assert [e.key for e in (got[0], got[2]) if isinstance(e, Entry)] == [keys[0], keys[2]]
    assert await ledger.find("payments", "charge", keys[1]) is None


async def test_a_charge_voided_before_it_landed_is_refused(event_store: PostgresEventStore) -> None:
    ledger, key = ProviderLedger(event_store), f"{uuid.uuid4()}:process_payment"
    payments = SimulatedPayments(ledger)
    # The refund reached the provider first (the charge's answer was lost, or the charge is late).
    refund = await payments.refund(key, f"{key}:refund", run=1)
    assert refund.ok and not refund.effective
    late = await payments.charge(key, "tok_visa", Decimal("5.00"), run=1)
    assert not late.ok and "voided" in (late.error or "")
    assert [e.status for e in [await ledger.find("payments", "charge", key)] if e] == ["voided"]


async def test_a_refund_repeated_after_a_stop_between_its_two_writes_marks_the_charge_refunded(
        event_store: PostgresEventStore) -> None:
    ledger, key = ProviderLedger(event_store), f"{uuid.uuid4()}:process_payment"
    payments = SimulatedPayments(ledger)
    charged = await payments.charge(key, "tok_visa", Decimal("5.00"), run=1)
    # The first refund wrote its entry and stopped before the charge's status changed.
    await ledger.put(Entry("payments", "refund", f"{key}:refund", "re_first", "succeeded", Decimal("5.00"),
                           {"charge": charged.reference}))
    again = await payments.refund(key, f"{key}:refund", run=2)
    assert again.ok and again.effective and again.reference == charged.reference
    assert [e.status for e in [await ledger.find("payments", "charge", key)] if e] == ["refunded"]
    refund = await ledger.find("payments", "refund", f"{key}:refund")
    assert refund is not None and refund.reference == "re_first"  # the first refund stands, none is added


async def test_a_replayed_charge_and_shipment_return_their_first_reference(event_store: PostgresEventStore) -> None:
    ledger = ProviderLedger(event_store)
    saga = uuid.uuid4()
    payments, shipping = SimulatedPayments(ledger), SimulatedShipping(ledger)
    paid = [await payments.charge(f"{saga}:process_payment", "tok_visa", Decimal("1.00"), run=n) for n in (1, 2)]
    shipped = [await shipping.create(f"{saga}:create_shipment", saga, ADDRESS, run=n) for n in (1, 2)]
    assert paid[0].ok and paid[0] == paid[1] and (paid[0].reference or "").startswith("pay_")
    assert shipped[0].ok and shipped[0] == shipped[1] and (shipped[0].reference or "").startswith("shp_")
    assert await received(event_store, f"{saga}:process_payment") == 1
    assert await received(event_store, f"{saga}:create_shipment") == 1


async def test_an_undeliverable_address_is_received_and_refused_without_a_shipment(
        event_store: PostgresEventStore) -> None:
    ledger, saga = ProviderLedger(event_store), uuid.uuid4()
    address = ShippingAddress("A", "1 Main St", "C", "00000", "US")
    result = await SimulatedShipping(ledger).create(f"{saga}:create_shipment", saga, address, run=1)
    assert not result.ok and result.error == "undeliverable address"
    assert await ledger.find("shipping", "shipment", f"{saga}:create_shipment") is None
    assert await received(event_store, f"{saga}:create_shipment") == 1
