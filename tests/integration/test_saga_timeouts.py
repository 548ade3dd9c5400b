"""Saga and compensation timeouts through the real actors, with timeouts short enough to watch, and the
slow-card path: a charge that lands after its key was voided is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.client import InventoryClient, OrderClient
from actors.deploy import deploy_actors, remove_actors
from actors.providers import SimulatedPayments
from commerce.runtime import run_migrations
from store.event_store import PostgresEventStore, create_pool
from store.ledger import ProviderLedger
from tests.integration.ray_support import eventually, order_of, stock_of
from tests.integration.ray_support import test_settings as settings_for
from tests.integration.test_order_saga_actors import ADDRESS, place, settled, stocked
from tests.support import Servers, create_database, drop_database


async def actors_with(servers: Servers, **timeouts: float) -> AsyncIterator[tuple[OrderClient, InventoryClient,
                                                                                   PostgresEventStore]]:
    dsn = await create_database(servers.database_url, "commerce_timeouts")
    await run_migrations(dsn)
    settings = settings_for(dsn, servers.redis_url, order_shards=1, inventory_shards=1, **timeouts)
    await asyncio.to_thread(deploy_actors, settings)
    pool = await create_pool(dsn, 4)
    try:
        yield (OrderClient(settings.namespace, 1), InventoryClient(settings.namespace, 1), PostgresEventStore(pool))
    finally:
        await pool.close()
        await asyncio.to_thread(remove_actors, settings)
        await drop_database(servers.database_url, dsn)


@pytest.fixture
async def short_saga(servers: Servers, ray_session: Path) -> AsyncIterator[Any]:
    async for deployed in actors_with(servers, saga_timeout=5.0):
        yield deployed


@pytest.fixture
async def short_compensation(servers: Servers, ray_session: Path) -> AsyncIterator[Any]:
    async for deployed in actors_with(servers, saga_compensation_timeout=0.001, saga_retry_delay=0.05):
        yield deployed


async def ledger(store: PostgresEventStore, saga_id: str) -> list[tuple[str, str]]:
    rows = await store.pool.fetch("SELECT operation, status FROM provider_ledger WHERE key LIKE $1 || ':%' "
                                  "ORDER BY operation", saga_id)
    return [(r["operation"], r["status"]) for r in rows]


@pytest.mark.ray
async def test_a_saga_past_its_timeout_compensates_and_its_slow_charge_never_lands(short_saga: Any) -> None:
    orders, inventory, store = short_saga
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, token="tok_slow")  # the charge takes 30 s; the saga may take 5
    order = await settled(orders, order_id, timeout=60)
    assert (order["status"], order["reason"]) == ("CANCELLED", "saga timed out")
    assert await ledger(store, order["saga_id"]) == [("charge", "voided")]
    stock = await stock_of(inventory, pid)
    assert (stock["on_hand"], stock["reserved"]) == (5, 0)


@pytest.mark.ray
async def test_a_compensation_step_that_keeps_timing_out_parks_the_saga_for_an_operator(
        short_compensation: Any) -> None:
    orders, inventory, store = short_compensation
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, address={**ADDRESS, "postal_code": "00000"})  # shipping fails

    async def saga() -> dict[str, Any]:
        row = await store.pool.fetchrow("SELECT status, current_step FROM sagas WHERE order_id = $1",
                                        order_id)
        return dict(row) if row else {}

    parked = await eventually(saga, lambda s: s.get("status") == "FAILED", timeout=60)
    assert parked["current_step"] in ("cancel_shipment", "refund_payment", "release_inventory")
    # The step it parked on timed out on each of its 3 attempts (an earlier compensation may have timed out
    # once too on a busy machine, then succeeded on its retry).
    errors = await store.pool.fetch(
        """SELECT st.error FROM saga_steps st JOIN sagas s USING (saga_id)
           WHERE s.order_id = $1 AND st.action = 'compensate' AND st.outcome = 'failed' AND st.step = $2""",
        order_id, parked["current_step"])
    assert len(errors) == 3 and all("timed out" in (e["error"] or "") for e in errors)
    assert (await order_of(orders, order_id))["status"] == "COMPENSATING"


class SlowCard(SimulatedPayments):
    """A card whose charge waits until the test lets it answer, rather than for a time that a slow machine
    could outlast."""

    def __init__(self, ledger: ProviderLedger) -> None:
        super().__init__(ledger)
        self.waiting, self.answers = asyncio.Event(), asyncio.Event()

    async def _slow_card(self) -> None:
        self.waiting.set()
        await self.answers.wait()


async def test_a_charge_that_lands_after_its_key_was_voided_is_refused(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_slowcard")
    await run_migrations(dsn)
    pool = await create_pool(dsn, 4)
    try:
        led = ProviderLedger(PostgresEventStore(pool))
        payments = SlowCard(led)
        key = f"{uuid.uuid4()}:process_payment"
        charge = asyncio.create_task(payments.charge(key, "tok_slow", Decimal("5.00"), 1))
        await asyncio.wait_for(payments.waiting.wait(), 60)  # the card is slow: its attempt is recorded
        assert await led.attempts("payments", "charge", key) == 1
        refund = await payments.refund(key, f"{key}:refund", 1)
        assert refund.ok and not refund.effective  # nothing had been charged: the key is voided
        payments.answers.set()
        late = await charge
        assert not late.ok and "voided" in (late.error or "")
        entry = await led.find("payments", "charge", key)
        assert entry is not None and entry.status == "voided"
    finally:
        await pool.close()
        await drop_database(servers.database_url, dsn)
