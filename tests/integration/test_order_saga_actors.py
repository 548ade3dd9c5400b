"""The fulfilment saga through the real actors, PostgreSQL and the simulated providers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.client import InventoryClient, OrderClient
from store.event_store import PostgresEventStore
from tests.integration.ray_support import eventually

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
    return await eventually(lambda: orders.get_order(order_id), lambda o: o["status"] in statuses, timeout)


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
    stock = await inventory.get_stock(pid)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (8, 0, 8)
