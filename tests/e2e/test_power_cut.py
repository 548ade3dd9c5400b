"""A power cut: every process of the service (Ray and its workers, Serve's HAProxy, the embedded PostgreSQL
and Redis) killed at once with SIGKILL while sagas are in flight. After a restart nothing acknowledged
is lost, every saga finishes, each confirmed order was charged once, and the event store verifies."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import ADDRESS, API
from tests.e2e.test_restart import Service, wait_for
from tests.support import kill_all, still_running

TERMINAL = ("CONFIRMED", "CANCELLED")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    # The flaky card's sagas wait 1 s, then 2 s, between attempts: still in flight when the power goes,
    # however fast this machine runs the others.
    s.env["COMMERCE_SAGA_RETRY_DELAY"] = "1"
    yield s
    s.close()


def place(http: httpx.Client, pid: str, token: str, postal_code: str = "12345") -> dict[str, str]:
    body = {"customer_id": str(uuid.uuid4()), "items": [{"product_id": pid, "quantity": 1}], "payment_token": token,
            "shipping_address": {**ADDRESS, "postal_code": postal_code}}
    r = http.post(f"{API}/orders", json=body)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def test_after_a_power_cut_nothing_acknowledged_is_lost_and_every_saga_finishes(service: Service,
                                                                                 tmp_path: Path) -> None:
    http = service.start()
    pid = str(uuid.uuid4())
    assert http.put(f"{API}/inventory/{pid}", json={"on_hand": 50, "price": "5.00"}).status_code == 200
    acknowledged = ([place(http, pid, "tok_visa") for _ in range(12)] + [place(http, pid, "tok_flaky") for _ in range(6)]
                    + [place(http, pid, "tok_visa", postal_code="00000") for _ in range(4)])
    statuses = [http.get(f"{API}/orders/{o['order_id']}").json()["status"] for o in acknowledged]
    assert any(s not in TERMINAL for s in statuses)  # the cut comes with sagas in flight
    processes = service.processes()
    kill_all(processes)
    http.close()
    assert still_running(processes) == []  # (this reaps them too: the service's exit status is gone with it)

    http = service.start()
    final = wait_for(lambda: [http.get(f"{API}/orders/{o['order_id']}").json()["status"] for o in acknowledged],
                     lambda s: set(s) <= set(TERMINAL), timeout=180)
    assert Counter(final) == Counter({"CONFIRMED": 18, "CANCELLED": 4})
    for o, status in zip(acknowledged, final, strict=True):
        events = [e["event_type"] for e in http.get(f"{API}/orders/{o['order_id']}/events").json()["items"]]
        if status == "CONFIRMED":  # charged, and never refunded
            assert events.count("PaymentProcessed") == 1 and "PaymentRefunded" not in events, o
        else:  # the undeliverable ones: charged, then refunded, once each
            assert events.count("PaymentProcessed") == events.count("PaymentRefunded") == 1, o
    stock = http.get(f"{API}/inventory/{pid}").json()
    assert (stock["on_hand"], stock["reserved"]) == (50 - 18, 0)
    assert all(s["status"] in ("COMPLETED", "COMPENSATED")
               for s in http.get(f"{API}/admin/sagas", params={"limit": 100}).json()["items"])
    http.close()
    processes = service.processes()
    assert service.stop() == 0
    assert still_running(processes) == []  # the embedded PostgreSQL too, although a power cut went before

    verify = subprocess.run([sys.executable, "-m", "commerce.cli", "events", "verify"], env=service.env,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
