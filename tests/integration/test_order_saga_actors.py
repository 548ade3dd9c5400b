"""The fulfilment saga through the real actors, PostgreSQL and the simulated providers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.client import InventoryClient, OrderClient
from store.event_store import PostgresEventStore
from tests.integration.ray_support import eventually, order_of, stock_of

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
TERMINAL = {"CONFIRMED", "CANCELLED"}


async def stocked(inventory: InventoryClient, on_hand: int = 10, price: str = "29.99") -> uuid.UUID:
    pid = uuid.uuid4()
    await inventory.set_stock(pid, on_hand, price, "Mug")
    return pid


async def place(orders: OrderClient, pid: uuid.UUID, token: str = "tok_visa", qty: int = 1,
                address: dict[str, str] | None = None) -> uuid.UUID:
    order_id = uuid.uuid4()
    await orders.create_order(order_id, uuid.uuid4(), [(pid, qty)], address or ADDRESS, token)
    return order_id


async def settled(orders: OrderClient, order_id: uuid.UUID, statuses: set[str] = TERMINAL,
                  timeout: float = 60.0) -> dict[str, Any]:
    return await eventually(lambda: order_of(orders, order_id), lambda o: o["status"] in statuses, timeout)


async def event_types(store: PostgresEventStore, aggregate_id: uuid.UUID) -> list[str]:
    return [r.event_type for r in await store.load_stream(aggregate_id)]


@pytest.mark.ray
async def test_happy_path_confirms_the_order_and_sells_the_stock(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=10)
    order_id = await place(orders, pid, qty=2)
    order = await settled(orders, order_id)
    assert order["status"] == "CONFIRMED"
    assert order["total_amount"] == "59.98"
    assert await event_types(actor_store, order_id) == [
        "OrderCreated", "InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderConfirmed"]
    stock = await stock_of(inventory, pid)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (8, 0, 8)


async def saga_row(store: PostgresEventStore, order_id: uuid.UUID) -> dict[str, Any]:
    row = await store.pool.fetchrow("SELECT * FROM sagas WHERE order_id = $1", order_id)
    return dict(row) if row else {}


async def saga_status(store: PostgresEventStore, order_id: uuid.UUID, statuses: set[str],
                      timeout: float = 60.0) -> dict[str, Any]:
    return await eventually(lambda: saga_row(store, order_id), lambda r: r.get("status") in statuses, timeout)


async def ledger(store: PostgresEventStore, saga_id: str) -> list[tuple[str, str]]:
    rows = await store.pool.fetch(
        "SELECT operation, status FROM provider_ledger WHERE key LIKE $1 || ':%' ORDER BY operation", saga_id)
    return [(r["operation"], r["status"]) for r in rows]


@pytest.mark.ray
async def test_declined_card_cancels_the_order_and_returns_the_stock(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=3)
    order_id = await place(orders, pid, token="tok_chargeDeclined")
    order = await settled(orders, order_id)
    assert order["status"] == "CANCELLED" and "declined" in order["reason"]
    assert (await event_types(actor_store, order_id))[-2:] == ["InventoryReleased", "OrderCancelled"]
    attempts = await actor_store.pool.fetchval(
        "SELECT COUNT(*) FROM provider_attempts WHERE key = $1 AND outcome = 'received'",
        f"{order['saga_id']}:process_payment")
    assert attempts == 1  # a business failure is not retried
    assert (await stock_of(inventory, pid))["available"] == 3


@pytest.mark.ray
async def test_flaky_payment_succeeds_on_the_third_attempt(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory)
    order_id = await place(orders, pid, token="tok_flaky")
    order = await settled(orders, order_id)
    assert order["status"] == "CONFIRMED"
    attempts = await actor_store.pool.fetchval(
        "SELECT COUNT(*) FROM provider_attempts WHERE key = $1 AND outcome = 'received'",
        f"{order['saga_id']}:process_payment")
    assert attempts == 3
    history = await actor_store.pool.fetch(
        "SELECT attempt, outcome FROM saga_steps WHERE saga_id = $1 AND step = 'process_payment' ORDER BY seq",
        uuid.UUID(order["saga_id"]))
    assert [(r["attempt"], r["outcome"]) for r in history] == [
        (1, "started"), (1, "failed"), (2, "started"), (2, "failed"), (3, "started"), (3, "succeeded")]


@pytest.mark.ray
async def test_unavailable_payment_exhausts_retries_and_compensates(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, token="tok_unavailable")
    order = await settled(orders, order_id)
    assert order["status"] == "CANCELLED"
    assert (await saga_status(actor_store, order_id, {"COMPENSATED"}))["status"] == "COMPENSATED"
    assert await event_types(actor_store, order_id) == [
        "OrderCreated", "InventoryReserved", "OrderCompensationStarted", "InventoryReleased", "OrderCancelled"]
    assert (await stock_of(inventory, pid))["available"] == 5


@pytest.mark.ray
async def test_failed_refund_parks_the_saga_until_an_operator_retries(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, token="tok_refundFailsOnce", address={**ADDRESS, "postal_code": "00000"})
    parked = await saga_status(actor_store, order_id, {"FAILED"})
    assert parked["current_step"] == "refund_payment"
    assert (await order_of(orders, order_id))["status"] == "COMPENSATING"
    await orders.retry_saga(order_id)
    assert (await saga_status(actor_store, order_id, {"COMPENSATED"}))["status"] == "COMPENSATED"
    order = await settled(orders, order_id)
    assert order["status"] == "CANCELLED"
    assert (await event_types(actor_store, order_id))[-3:] == ["PaymentRefunded", "InventoryReleased", "OrderCancelled"]
    assert ("charge", "refunded") in await ledger(actor_store, order["saga_id"])


@pytest.mark.ray
async def test_operator_compensates_a_saga_stuck_in_a_slow_charge(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, token="tok_slow")
    await eventually(lambda: saga_row(actor_store, order_id), lambda r: r.get("current_step") == "process_payment")
    await orders.compensate_saga(order_id, "operator gave up")
    order = await settled(orders, order_id, timeout=20)
    assert order["status"] == "CANCELLED"
    assert "PaymentRefunded" not in await event_types(actor_store, order_id)
    assert await ledger(actor_store, order["saga_id"]) == [("charge", "voided")]
    assert (await stock_of(inventory, pid))["available"] == 5


@pytest.mark.ray
async def test_customer_cancel_of_a_confirmed_order_undoes_every_step(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, qty=2)
    await settled(orders, order_id)
    await orders.cancel_order(order_id, "changed my mind")
    order = await settled(orders, order_id, {"CANCELLED"})
    assert order["reason"] == "changed my mind"
    assert (await event_types(actor_store, order_id))[-4:] == [
        "ShipmentCancelled", "PaymentRefunded", "InventoryReleased", "OrderCancelled"]
    stock = await stock_of(inventory, pid)
    assert (stock["on_hand"], stock["reserved"]) == (5, 0)
    assert (await orders.cancel_order(order_id, "again")).accepted is False


@pytest.mark.ray
async def test_multi_sku_order_releases_what_it_reserved_when_one_sku_is_short(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    plenty, scarce = await stocked(inventory, on_hand=10), await stocked(inventory, on_hand=1)
    order_id = uuid.uuid4()
    await orders.create_order(order_id, uuid.uuid4(), [(plenty, 3), (scarce, 2)], ADDRESS, "tok_visa")
    order = await settled(orders, order_id)
    assert order["status"] == "CANCELLED"
    assert (await stock_of(inventory, plenty))["available"] == 10
    assert (await stock_of(inventory, scarce))["available"] == 1
    assert await event_types(actor_store, order_id) == ["OrderCreated", "OrderCompensationStarted", "OrderCancelled"]


@pytest.mark.ray
async def test_an_operator_command_delivered_twice_applies_once(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid, token="tok_refundFailsOnce", address={**ADDRESS, "postal_code": "00000"})
    await saga_status(actor_store, order_id, {"FAILED"})
    command = uuid.uuid4()
    first = (await orders.retry_saga(order_id, command)).json()
    second = (await orders.retry_saga(order_id, command)).json()  # a redelivery: no 409, no second resume
    assert first["saga_id"] == second["saga_id"]
    await saga_status(actor_store, order_id, {"COMPENSATED"})
    saga_events = await event_types(actor_store, uuid.UUID(first["saga_id"]))
    assert saga_events.count("SagaResumed") == 1


@pytest.mark.ray
async def test_a_cancel_delivered_twice_is_accepted_twice_and_compensates_once(
        orders: OrderClient, inventory: InventoryClient, actor_store: PostgresEventStore) -> None:
    pid = await stocked(inventory, on_hand=5)
    order_id = await place(orders, pid)
    await settled(orders, order_id)
    command = uuid.uuid4()
    assert (await orders.cancel_order(order_id, "twice", command)).accepted is True
    assert (await orders.cancel_order(order_id, "twice", command)).accepted is True
    await settled(orders, order_id, {"CANCELLED"})
    assert (await event_types(actor_store, order_id)).count("OrderCompensationStarted") == 1
