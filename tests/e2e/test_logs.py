"""What the logs say about a request and an order: JSON lines that carry the request id a problem
answer names, and the order's id as correlation id, from the ingress through every saga step."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.helpers import API, order_body, order_status, place, product
from tests.integration.ray_support import eventually


def json_lines(folder: Path, pattern: str) -> list[dict[str, Any]]:
    """Every JSON object written to the log files of ``folder`` that match ``pattern``."""
    found = []
    for path in folder.glob(pattern):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
    return found


async def lines_where(folder: Path, pattern: str, **fields: object) -> list[dict[str, Any]]:
    """The lines whose fields have these values, once at least one is written."""
    async def read() -> list[dict[str, Any]]:
        return [x for x in json_lines(folder, pattern) if all(x.get(k) == v for k, v in fields.items())]

    return await eventually(read, bool, timeout=30)


async def test_a_problem_answer_names_the_log_line_of_its_request(http: httpx.AsyncClient,
                                                                  ray_session: Path) -> None:
    order_id = str(uuid.uuid4())
    r = await http.get(f"{API}/orders/{order_id}")
    assert r.status_code == 404
    path, _, request_id = r.json()["instance"].partition("#request=")
    assert path == f"{API}/orders/{order_id}" and request_id == r.headers["x-request-id"]

    [line] = await lines_where(ray_session / "serve", "replica_commerce_*.log", request_id=request_id,
                               problem="not-found")
    assert line["status"] == 404 and line["instance"] == r.json()["instance"]
    assert line["levelname"] == "INFO" and "correlation_id" not in line  # no order of the caller's


async def test_an_order_is_followed_by_its_id_from_the_request_through_every_saga_step(
        http: httpx.AsyncClient, ray_session: Path) -> None:
    pid = await product(http)
    r = await place(http, order_body(pid, token="tok_flaky"))  # the card fails twice, then is charged
    assert r.status_code == 202
    order_id, request_id = r.json()["order_id"], r.headers["x-request-id"]
    await order_status(http, order_id, {"CONFIRMED"})

    [placed] = await lines_where(ray_session / "serve", "replica_commerce_*.log", request_id=request_id,
                                 correlation_id=order_id)
    assert placed["status"] == 202 and placed["message"] == f"POST {API}/orders: 202"
    again = await http.post(f"{API}/orders/{order_id}/reorder")  # a later command about the same order
    assert again.status_code == 201
    [reordered] = await lines_where(ray_session / "serve", "replica_commerce_*.log",
                                    request_id=again.headers["x-request-id"], status=201)
    assert reordered["correlation_id"] == order_id

    # The actors write JSON lines to their workers' logs, each step's outcome named by the order.
    steps = await lines_where(ray_session, "worker-*.err", correlation_id=order_id, step="confirm_order")
    assert steps[0]["outcome"] == "succeeded"
    lines = [x for x in json_lines(ray_session, "worker-*.err") if x.get("correlation_id") == order_id]
    payment = sorted((x["attempt"], x["outcome"]) for x in lines if x.get("step") == "process_payment")
    assert payment == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    failed = next(x for x in lines if x.get("step") == "process_payment" and x["outcome"] == "failed")
    assert failed["levelname"] == "WARNING" and failed["error"] and failed["saga_id"] == r.json()["saga_id"]
    assert {x["step"] for x in lines if x.get("outcome") == "succeeded"} == {
        "reserve_inventory", "process_payment", "create_shipment", "confirm_order"}
