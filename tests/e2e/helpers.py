from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.e2e.conftest import ADMIN
from tests.integration.ray_support import eventually

API = "/api/v1"
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


async def product(http: httpx.AsyncClient, on_hand: int = 10, price: str = "29.99", name: str = "Mug") -> str:
    pid = str(uuid.uuid4())
    r = await http.put(f"{API}/inventory/{pid}", json={"on_hand": on_hand, "price": price, "name": name},
                       headers=ADMIN)
    assert r.status_code == 200, r.text
    return pid


def order_body(pid: str, qty: int = 1, token: str = "tok_visa", customer: str | None = None,
               address: dict[str, str] | None = None) -> dict[str, Any]:
    return {"customer_id": customer or str(uuid.uuid4()), "items": [{"product_id": pid, "quantity": qty}],
            "payment_token": token, "shipping_address": address or ADDRESS}


async def place(http: httpx.AsyncClient, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post(f"{API}/orders", json=body, headers=headers)


async def order_status(http: httpx.AsyncClient, order_id: str, statuses: set[str],
                       timeout: float = 60.0) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return (await http.get(f"{API}/orders/{order_id}")).json()  # type: ignore[no-any-return]

    return await eventually(get, lambda o: o.get("status") in statuses, timeout)


async def saga(http: httpx.AsyncClient, saga_id: str) -> dict[str, Any]:
    r = await http.get(f"{API}/admin/sagas/{saga_id}", headers=ADMIN)
    return r.json()  # type: ignore[no-any-return]


async def saga_status(http: httpx.AsyncClient, saga_id: str, statuses: set[str], timeout: float = 60.0) -> dict[str, Any]:
    return await eventually(lambda: saga(http, saga_id), lambda s: s.get("status") in statuses, timeout)


async def confirmed_order(http: httpx.AsyncClient, on_hand: int, quantity: int) -> str:
    """Stock a new product and have an order for it confirmed, with the client's own credentials (an
    admin's); returns the product's id."""
    pid = str(uuid.uuid4())
    assert (await http.put(f"{API}/inventory/{pid}", json={"on_hand": on_hand, "price": "1.00"})).status_code == 200
    placed = await http.post(f"{API}/orders", json=order_body(pid, quantity))
    assert placed.status_code == 202, placed.text
    await order_status(http, placed.json()["order_id"], {"CONFIRMED"})
    return pid
