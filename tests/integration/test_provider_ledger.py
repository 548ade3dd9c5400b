"""The simulated providers' ledger on a real PostgreSQL: a call that cannot fail is received and takes
effect in one statement, once per key, however often and however concurrently it is made."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from actors.providers import SimulatedPayments, SimulatedShipping
from domain.order import ShippingAddress
from store.event_store import PostgresEventStore
from store.ledger import Entry, ProviderLedger

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
