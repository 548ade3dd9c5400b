"""Orders, the fulfilment saga and the admin endpoints over real HTTP through Ray Serve."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.e2e.conftest import ADMIN, customer_headers
from tests.e2e.helpers import ADDRESS, API, order_body, order_status, place, product, saga, saga_status
from tests.integration.ray_support import eventually

pytestmark = pytest.mark.ray


async def test_an_accepted_order_is_visible_at_once_and_confirms(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    r = await place(http, order_body(pid, qty=2))
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "PENDING" and r.headers["location"] == f"{API}/orders/{body['order_id']}"
    seen = await http.get(r.headers["location"])
    assert seen.status_code == 200 and seen.json()["order_id"] == body["order_id"]
    order = await order_status(http, body["order_id"], {"CONFIRMED", "CANCELLED"})
    assert order["status"] == "CONFIRMED"
    assert order["items"] == [{"product_id": pid, "quantity": 2, "unit_price": "29.99"}]
    assert order["total_amount"] == "59.98" and order["saga_id"] == body["saga_id"]
    events = (await http.get(f"{API}/orders/{body['order_id']}/events")).json()["items"]
    assert [e["event_type"] for e in events] == [
        "OrderCreated", "InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderConfirmed"]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    stock = (await http.get(f"{API}/inventory/{pid}")).json()
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (3, 0, 3)


async def test_an_order_placed_after_a_price_change_has_the_new_price(http: httpx.AsyncClient) -> None:
    """Order shards remember prices (actors/prices.py); a change reaches them before the PUT answers."""
    pid = await product(http, on_hand=100, price="29.99")

    async def place_many() -> list[str]:  # enough orders to reach every order shard (their ids pick them)
        placed = await asyncio.gather(*[place(http, order_body(pid)) for _ in range(12)])
        return [r.json()["order_id"] for r in placed]

    async def prices_of(order_ids: list[str]) -> set[str]:
        orders = [(await http.get(f"{API}/orders/{order_id}")).json() for order_id in order_ids]
        return {item["unit_price"] for o in orders for item in o["items"]}

    before = await place_many()  # each shard now knows 29.99 (told, or read from the catalog)
    r = await http.put(f"{API}/inventory/{pid}", json={"on_hand": 100, "price": "19.99"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["price"] == "19.99"
    after = await place_many()  # within a second of the first ones: a shard not told would still say 29.99
    assert await prices_of(before) == {"29.99"}
    assert await prices_of(after) == {"19.99"}


async def test_the_same_idempotency_key_twice_places_one_order(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=5)
    body, key = order_body(pid), str(uuid.uuid4())
    first, second = await asyncio.gather(place(http, body, key), place(http, body, key))
    codes = sorted([first.status_code, second.status_code])
    assert codes in ([202, 202], [202, 409])  # a concurrent repeat may be told the first is in flight
    for r in (first, second):
        if r.status_code == 409:
            assert r.headers["retry-after"] == "1" and r.json()["type"].endswith("/request-in-progress")
    again = await place(http, body, key)
    winner = first if first.status_code == 202 else second
    assert again.status_code == 202 and again.json() == winner.json()
    assert again.headers["idempotent-replayed"] == "true"
    order_id = winner.json()["order_id"]
    await order_status(http, order_id, {"CONFIRMED"})
    # Had the work run twice, it would show here, once every saga is done: in the stock, the customer's
    # orders in the event store, and the payment provider's charges.
    assert (await http.get(f"{API}/inventory/{pid}")).json()["on_hand"] == 4
    created = (await http.get(f"{API}/admin/events", params={"event_type": "OrderCreated", "limit": 500})).json()
    mine = [e for e in created["items"] if e["data"]["customer_id"] == body["customer_id"]]
    while created["next_position"] is not None:
        created = (await http.get(f"{API}/admin/events", params={
            "event_type": "OrderCreated", "limit": 500, "after_position": created["next_position"]})).json()
        mine += [e for e in created["items"] if e["data"]["customer_id"] == body["customer_id"]]
    assert [e["aggregate_id"] for e in mine] == [order_id]
    charges = (await http.get(f"{API}/admin/events", params={"aggregate_id": order_id,
                                                              "event_type": "PaymentProcessed"})).json()["items"]
    assert len(charges) == 1


async def test_the_same_idempotency_key_with_another_body_is_refused(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    key = str(uuid.uuid4())
    assert (await place(http, order_body(pid), key)).status_code == 202
    r = await place(http, order_body(pid, qty=2), key)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


async def test_an_unknown_product_is_not_found_and_changes_nothing(http: httpx.AsyncClient) -> None:
    body = order_body(str(uuid.uuid4()))
    r = await place(http, body)
    assert r.status_code == 404
    listed = await http.get(f"{API}/orders", params={"customer_id": body["customer_id"]})
    assert listed.json()["items"] == []


@pytest.mark.parametrize(("patch", "status"), [
    ({"items": []}, 422),
    ({"items": [{"product_id": "not-a-uuid", "quantity": 1}]}, 422),
    ({"items": [{"product_id": str(uuid.uuid4()), "quantity": 0}]}, 422),
    ({"items": [{"product_id": str(uuid.uuid4()), "quantity": 10001}]}, 422),
    ({"shipping_address": {**ADDRESS, "country": "usa"}}, 422),
    ({"price": "1.00"}, 422),
])
async def test_invalid_orders_are_refused_with_a_problem(http: httpx.AsyncClient, patch: dict[str, object],
                                                         status: int) -> None:
    body = {**order_body(str(uuid.uuid4())), **patch}
    r = await place(http, body)
    assert r.status_code == status
    problem = r.json()
    assert problem["status"] == status and {"type", "title", "detail"} <= set(problem)


async def test_malformed_json_and_non_objects_are_bad_requests(http: httpx.AsyncClient) -> None:
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        r = await http.post(f"{API}/orders", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, raw


async def test_a_body_over_64_kib_is_too_large(http: httpx.AsyncClient) -> None:
    r = await http.post(f"{API}/orders", content=b'{"x": "' + b"a" * 70_000 + b'"}',
                        headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413


async def test_orders_list_pages_newest_first_with_a_cursor(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=10)
    customer = str(uuid.uuid4())
    ids = []
    for _ in range(5):
        ids.append((await place(http, order_body(pid, customer=customer))).json()["order_id"])
    await eventually(lambda: http.get(f"{API}/orders", params={"customer_id": customer, "limit": 500}),
                     lambda r: len(r.json()["items"]) == 5)
    seen, cursor = [], None
    while True:
        params = {"customer_id": customer, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{API}/orders", params=params)).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert (await http.get(f"{API}/orders", params={"cursor": "garbage!"})).status_code == 422
    assert (await http.get(f"{API}/orders", params={"limit": 501})).status_code == 422


async def test_declined_card_cancels_with_a_reason(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=2)
    r = await place(http, order_body(pid, token="tok_chargeDeclined"))
    order = await order_status(http, r.json()["order_id"], {"CANCELLED"})
    assert "declined" in order["reason"]
    assert (await http.get(f"{API}/inventory/{pid}")).json()["available"] == 2


async def test_flaky_payment_confirms_after_three_attempts(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    r = await place(http, order_body(pid, token="tok_flaky"))
    await order_status(http, r.json()["order_id"], {"CONFIRMED"})
    history = (await saga(http, r.json()["saga_id"]))["steps"]
    payment = [s for s in history if s["step"] == "process_payment" and s["outcome"] != "started"]
    assert [(s["attempt"], s["outcome"]) for s in payment] == [(1, "failed"), (2, "failed"), (3, "succeeded")]


async def test_unavailable_payment_compensates(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    r = await place(http, order_body(pid, token="tok_unavailable"))
    await order_status(http, r.json()["order_id"], {"CANCELLED"})
    assert (await saga_status(http, r.json()["saga_id"], {"COMPENSATED"}))["status"] == "COMPENSATED"


async def test_refund_failure_parks_the_saga_and_an_operator_retry_finishes_it(http: httpx.AsyncClient,
                                                                              anonymous: httpx.AsyncClient) -> None:
    pid = await product(http)
    r = await place(http, order_body(pid, token="tok_refundFailsOnce", address={**ADDRESS, "postal_code": "00000"}))
    saga_id = r.json()["saga_id"]
    parked = await saga_status(http, saga_id, {"FAILED"})
    assert parked["current_step"] == "refund_payment"
    failed = await http.get(f"{API}/admin/sagas", params={"status": "FAILED", "order_id": r.json()["order_id"]},
                            headers=ADMIN)
    assert [s["saga_id"] for s in failed.json()["items"]] == [saga_id]
    health = await http.get("/health")
    assert health.status_code == 503 and health.json()["checks"]["sagas"]["status"] == "fail"
    assert "waiting for an operator" in health.json()["checks"]["sagas"]["error"]
    public = await anonymous.get("/health")  # the checks without their details
    assert public.status_code == 503 and public.json()["checks"]["sagas"] == {"status": "fail"}
    assert (await http.post(f"{API}/admin/sagas/{saga_id}/retry", headers=ADMIN)).status_code == 202
    await saga_status(http, saga_id, {"COMPENSATED"})
    assert (await http.get("/health")).json()["checks"]["sagas"]["status"] == "ok"
    assert (await anonymous.get("/health")).json()["checks"]["sagas"] == {"status": "ok"}
    assert (await http.post(f"{API}/admin/sagas/{saga_id}/retry", headers=ADMIN)).status_code == 409
    assert (await http.post(f"{API}/admin/sagas/{saga_id}/compensate", headers=ADMIN)).status_code == 409
    order = await order_status(http, r.json()["order_id"], {"CANCELLED"})
    assert order["status"] == "CANCELLED"


async def test_operator_compensates_a_running_saga(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=3)
    r = await place(http, order_body(pid, token="tok_slow"))
    saga_id = r.json()["saga_id"]
    await eventually(lambda: saga(http, saga_id), lambda s: s.get("current_step") == "process_payment")
    assert (await http.post(f"{API}/admin/sagas/{saga_id}/compensate", headers=ADMIN)).status_code == 202
    await saga_status(http, saga_id, {"COMPENSATED"}, timeout=20)
    assert (await http.get(f"{API}/inventory/{pid}")).json()["available"] == 3


async def test_cancel_of_a_confirmed_order_compensates_and_a_second_cancel_is_200(http: httpx.AsyncClient) -> None:
    pid = await product(http, on_hand=3)
    order_id = (await place(http, order_body(pid))).json()["order_id"]
    await order_status(http, order_id, {"CONFIRMED"})
    r = await http.post(f"{API}/orders/{order_id}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 202
    order = await order_status(http, order_id, {"CANCELLED"})
    assert order["reason"] == "changed my mind"
    types = [e["event_type"] for e in (await http.get(f"{API}/orders/{order_id}/events")).json()["items"]]
    assert types[-4:] == ["ShipmentCancelled", "PaymentRefunded", "InventoryReleased", "OrderCancelled"]
    assert (await http.post(f"{API}/orders/{order_id}/cancel")).status_code == 200
    assert (await http.post(f"{API}/orders/{uuid.uuid4()}/cancel")).status_code == 404


async def test_admin_endpoints_need_the_bearer_token(http: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/admin/sagas"), ("GET", "/admin/events"),
                         ("POST", f"/admin/sagas/{uuid.uuid4()}/retry"),
                         ("PUT", f"/inventory/{uuid.uuid4()}")):
        r = await http.request(method, f"{API}{path}", json={"on_hand": 1, "price": "1.00"},
                               headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"


async def test_admin_events_page_through_an_order_stream(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    order_id = (await place(http, order_body(pid))).json()["order_id"]
    await order_status(http, order_id, {"CONFIRMED"})
    seen, after = [], 0
    while True:
        page = (await http.get(f"{API}/admin/events", headers=ADMIN,
                               params={"aggregate_id": order_id, "after_position": after, "limit": 2})).json()
        seen += [e["event_type"] for e in page["items"]]
        if page["next_position"] is None:
            break
        after = page["next_position"]
    assert seen == ["OrderCreated", "InventoryReserved", "PaymentProcessed", "ShipmentCreated", "OrderConfirmed"]
    unknown = await http.get(f"{API}/admin/sagas/{uuid.uuid4()}", headers=ADMIN)
    assert unknown.status_code == 404


async def test_a_request_reaching_a_killed_shard_is_retried_or_refused_never_hung(
        http: httpx.AsyncClient, actor_settings: object) -> None:
    import ray

    from actors.routing import order_shard_name, shard_of

    pid = await product(http)
    order_id = (await place(http, order_body(pid))).json()["order_id"]
    await order_status(http, order_id, {"CONFIRMED"})
    index = shard_of(uuid.UUID(order_id), actor_settings.order_shards)  # type: ignore[attr-defined]
    ray.kill(ray.get_actor(order_shard_name(index), namespace=actor_settings.namespace),  # type: ignore[attr-defined]
             no_restart=False)
    first = await http.get(f"{API}/orders/{order_id}")
    assert first.status_code in (200, 503)
    if first.status_code == 503:
        assert first.headers["retry-after"]
    again = await eventually(lambda: http.get(f"{API}/orders/{order_id}"), lambda r: r.status_code == 200)
    assert again.json()["status"] == "CONFIRMED"


async def test_admin_actors_lists_every_shard_with_its_placement(http: httpx.AsyncClient,
                                                                  actor_settings: object) -> None:
    items = (await http.get(f"{API}/admin/actors")).json()["items"]
    kinds = sorted((a["kind"], a["shard"]) for a in items)
    shards = (actor_settings.order_shards, actor_settings.inventory_shards)  # type: ignore[attr-defined]
    assert kinds == sorted([("order", i) for i in range(shards[0])] + [("inventory", i) for i in range(shards[1])]
                           + [("projector", 0)])
    assert all(a["node_id"] and a["actor_id"] and a["pid"] > 0 and a["restarts"] >= 0 for a in items)
    assert len({a["actor_id"] for a in items}) == len(items)


async def test_admin_locates_an_order_and_a_sku_on_their_shards(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    order_id = (await place(http, order_body(pid))).json()["order_id"]
    actors = {a["actor_id"]: a for a in (await http.get(f"{API}/admin/actors")).json()["items"]}
    for entity, kind in ((order_id, "order"), (pid, "inventory")):
        found = (await http.get(f"{API}/admin/actors/locate", params={"entity_id": entity})).json()
        assert (found["kind"], found["active"]) == (kind, True)
        assert actors[found["actor_id"]]["kind"] == kind and actors[found["actor_id"]]["shard"] == found["shard"]
    unknown = await http.get(f"{API}/admin/actors/locate", params={"entity_id": str(uuid.uuid4())})
    assert unknown.status_code == 404


async def test_ids_that_name_nothing_take_no_room_in_the_shards(http: httpx.AsyncClient,
                                                               anonymous: httpx.AsyncClient) -> None:
    """Anyone may name ids at random (an anonymous catalog read, a customer's read or cancel of an order that
    is not there): each is a 404, and none stays in a shard's memory, where it would push out the entities in
    use. Shards hold their entities for minutes when idle, so a count that grew by the ids would show it."""
    async def active() -> dict[str, int]:
        items = (await http.get(f"{API}/admin/actors")).json()["items"]
        return {kind: sum(a["active_entities"] for a in items if a["kind"] == kind) for kind in ("order", "inventory")}

    _, customer = customer_headers()
    before = await active()
    for _ in range(30):
        assert (await anonymous.get(f"{API}/inventory/{uuid.uuid4()}")).status_code == 404
    for _ in range(10):
        assert (await anonymous.get(f"{API}/orders/{uuid.uuid4()}", headers=customer)).status_code == 404
        cancel = await anonymous.post(f"{API}/orders/{uuid.uuid4()}/cancel", json={}, headers=customer)
        assert cancel.status_code == 404
    after = await active()
    assert after["inventory"] - before["inventory"] < 10 and after["order"] - before["order"] < 10, (before, after)


async def test_admin_finds_sagas_that_have_not_moved_for_a_while(http: httpx.AsyncClient) -> None:
    pid = await product(http)
    slow = (await place(http, order_body(pid, token="tok_slow"))).json()
    await eventually(lambda: saga(http, slow["saga_id"]), lambda s: s.get("current_step") == "process_payment")
    stuck = await eventually(
        lambda: http.get(f"{API}/admin/sagas", params={"stuck_for": 1, "order_id": slow["order_id"]}),
        lambda r: len(r.json()["items"]) == 1, timeout=20)
    assert stuck.json()["items"][0]["saga_id"] == slow["saga_id"]
    moving = await http.get(f"{API}/admin/sagas", params={"stuck_for": 3600, "order_id": slow["order_id"]})
    assert moving.json()["items"] == []
    assert (await http.post(f"{API}/admin/sagas/{slow['saga_id']}/compensate")).status_code == 202


async def test_every_problem_names_its_request(http: httpx.AsyncClient) -> None:
    r = await http.get(f"{API}/orders/{uuid.uuid4()}")
    path, _, request_id = r.json()["instance"].partition("#request=")
    assert r.status_code == 404 and path == r.request.url.path and request_id
    too_large = await http.post(f"{API}/orders", content=b"{" + b" " * 70_000 + b"}",
                                headers={"content-type": "application/json"})
    assert too_large.status_code == 413 and too_large.json()["instance"].startswith(f"{API}/orders#request=")
    again = await http.get(f"{API}/orders/{uuid.uuid4()}")
    assert again.json()["instance"] != r.json()["instance"]  # each request is named apart
