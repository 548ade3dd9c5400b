"""Payment and shipping providers behind small interfaces, and the simulated ones of the API.

A provider call is idempotent by key: the saga derives keys from its id and step, so a replayed
step returns the first result. The simulated providers keep their ledgers (charges, refunds,
shipments, every attempt) in PostgreSQL. A compensation that reaches a provider before the call it
undoes ever landed voids the key, so that late call is refused rather than charging anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal
from typing import Protocol

from domain.order import ShippingAddress
from store.ledger import Entry, ProviderLedger


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderResult:
    ok: bool
    reference: str | None = None
    retryable: bool = False
    error: str | None = None
    effective: bool = True


class PaymentProvider(Protocol):
    async def charge(self, key: str, token: str, amount: Decimal, run: int) -> ProviderResult: ...

    async def refund(self, charge_key: str, key: str, run: int) -> ProviderResult: ...


class ShippingProvider(Protocol):
    async def create(self, key: str, order_id: uuid.UUID, address: ShippingAddress, run: int) -> ProviderResult: ...

    async def cancel(self, create_key: str, key: str, run: int) -> ProviderResult: ...


TRANSIENT = "payment provider temporarily unavailable"
ALWAYS_CHARGED = frozenset({"tok_visa", "tok_refundFailsOnce"})  # cards charged at once, without fail


class SimulatedPayments:
    """Card-processor test tokens: see the provider table in the API contract."""

    name = "payments"

    def __init__(self, ledger: ProviderLedger, slow_seconds: float = 30.0) -> None:
        self.ledger = ledger
        self.slow_seconds = slow_seconds

    async def charge(self, key: str, token: str, amount: Decimal, run: int) -> ProviderResult:
        if token in ALWAYS_CHARGED:  # nothing to decide between the call and its effect: one statement
            return self._charged(await self.ledger.effect_once(self._charge_entry(key, token, amount)))
        existing = await self.ledger.find(self.name, "charge", key)
        if existing is not None:
            return self._charged(existing)
        await self.ledger.attempt(self.name, "charge", key, "received")
        if token == "tok_slow":
            await self._slow_card()
        failure = await self._charge_failure(key, token)
        if failure is not None:
            await self.ledger.attempt(self.name, "charge", key, failure.error or "failed")
            return failure
        return self._charged(await self.ledger.put(self._charge_entry(key, token, amount)))

    async def _slow_card(self) -> None:
        await asyncio.sleep(self.slow_seconds)

    def _charge_entry(self, key: str, token: str, amount: Decimal) -> Entry:
        return Entry(self.name, "charge", key, f"pay_{uuid.uuid4().hex[:16]}", "succeeded", amount, {"token": token})

    async def _charge_failure(self, key: str, token: str) -> ProviderResult | None:
        if token in ("tok_visa", "tok_refundFailsOnce", "tok_slow"):
            return None
        if token == "tok_flaky" and await self.ledger.attempts(self.name, "charge", key) > 2:
            return None
        if token in ("tok_flaky", "tok_unavailable"):
            return ProviderResult(False, retryable=True, error=TRANSIENT)
        return ProviderResult(False, error="card declined")

    @staticmethod
    def _charged(entry: Entry) -> ProviderResult:
        if entry.status == "voided":
            return ProviderResult(False, error="payment was voided before it was charged")
        return ProviderResult(True, reference=entry.reference)

    async def refund(self, charge_key: str, key: str, run: int) -> ProviderResult:
        await self.ledger.attempt(self.name, "refund", key, "received")
        charge = await self.ledger.put(Entry(self.name, "charge", charge_key, "void", "voided", None, {}))
        if charge.status == "voided":
            return ProviderResult(True, effective=False)
        done = await self.ledger.find(self.name, "refund", key)
        if done is None:
            if charge.detail.get("token") == "tok_refundFailsOnce" and run == 1:
                await self.ledger.attempt(self.name, "refund", key, "refund failed")
                return ProviderResult(False, retryable=True, error="refund failed at the payment provider")
            await self.ledger.put(Entry(self.name, "refund", key, f"re_{uuid.uuid4().hex[:16]}", "succeeded",
                                        charge.amount, {"charge": charge.reference}))
        # A repeat too: the call before it may have stopped between the refund and the charge's new status.
        await self.ledger.set_status(self.name, "charge", charge_key, "refunded")
        return ProviderResult(True, reference=charge.reference)


UNDELIVERABLE = "00000"


class SimulatedShipping:
    """Ships anywhere but to postal code 00000 (undeliverable)."""

    name = "shipping"

    def __init__(self, ledger: ProviderLedger) -> None:
        self.ledger = ledger

    async def create(self, key: str, order_id: uuid.UUID, address: ShippingAddress, run: int) -> ProviderResult:
        entry = Entry(self.name, "shipment", key, f"shp_{uuid.uuid4().hex[:16]}", "created", None,
                      {"order_id": str(order_id)})
        if address.postal_code != UNDELIVERABLE:  # nothing to decide between the call and its effect
            return self._created(await self.ledger.effect_once(entry))
        existing = await self.ledger.find(self.name, "shipment", key)
        if existing is not None:
            return self._created(existing)
        await self.ledger.attempt(self.name, "shipment", key, "received")
        return ProviderResult(False, error="undeliverable address")

    @staticmethod
    def _created(entry: Entry) -> ProviderResult:
        if entry.status == "voided":
            return ProviderResult(False, error="shipment was cancelled before it was created")
        return ProviderResult(True, reference=entry.reference)

    async def cancel(self, create_key: str, key: str, run: int) -> ProviderResult:
        await self.ledger.attempt(self.name, "cancel", key, "received")
        shipment = await self.ledger.put(Entry(self.name, "shipment", create_key, "void", "voided", None, {}))
        if shipment.status == "voided":
            return ProviderResult(True, effective=False)
        if shipment.status != "cancelled":
            await self.ledger.set_status(self.name, "shipment", create_key, "cancelled")
        return ProviderResult(True, reference=shipment.reference)
