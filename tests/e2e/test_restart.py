"""``commerce serve`` on embedded defaults, stopped and started again with other shard counts (the
offline resharding procedure): nothing is lost, every entity is found on its new shard, sagas finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from actors.routing import shard_of
from tests.e2e.helpers import ADDRESS, API
from tests.support import SERVE_FIXED_PORTS, free_port, port_is_free, service_processes, still_running

TOKEN = "restart-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
STOP_WITHIN = 10.0  # seconds a stop may take until no process of the service is left


def wait_for(probe, accept, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except httpx.HTTPError as e:
            value = e
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {value!r}")
        time.sleep(0.5)


class Service:
    def __init__(self, data_dir: Path, admin_token: str | None = TOKEN) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("COMMERCE_DATABASE_URL", "COMMERCE_REDIS_URL", "RAY_ADDRESS")}
        self.env.update(COMMERCE_DATA_DIR=str(data_dir), COMMERCE_PORT=str(self.port),
                        COMMERCE_DASHBOARD_PORT=str(free_port()),
                        COMMERCE_ORDER_SHARDS="1", COMMERCE_INVENTORY_SHARDS="1",
                        COMMERCE_NAMESPACE=f"restart-{uuid.uuid4().hex[:6]}", COMMERCE_SAGA_RETRY_DELAY="0.1",
                        # Ports of its own for this Serve: the session's Serve runs on this machine too.
                        **{name: str(free_port()) for name in SERVE_FIXED_PORTS},
                        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT="31500", RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT="31999",
                        RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT="41500", RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT="41999")
        self.env.pop("COMMERCE_ADMIN_TOKEN", None)
        if admin_token is not None:
            self.env["COMMERCE_ADMIN_TOKEN"] = admin_token
        self.log = data_dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        """``commerce serve`` started, its output appended to the log; not waited for."""
        self.env["COMMERCE_PORT"] = str(self.port)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "commerce.cli", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def start(self) -> httpx.Client:
        self.spawn()
        probe = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        wait_for(lambda: probe.get("/health").status_code, lambda code: code == 200, timeout=240)
        token = self.env.get("COMMERCE_ADMIN_TOKEN") or (self.data_dir / "admin_token").read_text().strip()
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        # Only this instance knows this token: the answer comes from its own replica.
        wait_for(lambda: client.get(f"{API}/admin/sagas").status_code, lambda code: code == 200, 60)
        probe.close()
        return client

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        return service_processes(self.proc.pid, self.data_dir)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=180)

    def interrupt(self, timeout: float = 180) -> int:
        """Ctrl-C in the terminal that ran it: SIGINT to its whole process group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """After a failure: the orderly stop first (it stops Ray, Serve and the embedded servers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def listening_ports(processes: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in processes:
        try:
            ports |= {c.laddr.port for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ports


def command(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def snapshot(service: Service) -> tuple[list[psutil.Process], set[int]]:
    processes = service.processes()
    return processes, listening_ports(processes)


def holders(port: int) -> list[str]:
    """Who listens on ``port`` now (for the failure message)."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.laddr and c.laddr.port == port and c.pid:
            try:
                out.append(f"{c.status} {c.pid} {' '.join(psutil.Process(c.pid).cmdline())[:100]}")
            except psutil.NoSuchProcess:
                out.append(f"{c.status} {c.pid} (gone)")
        elif c.laddr and c.laddr.port == port:
            out.append(f"{c.status} (no pid)")
    return out


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    yield s
    s.close()


def test_orders_carts_and_stock_survive_a_restart_with_other_shard_counts_and_sagas_in_flight_finish(
        service: Service, tmp_path: Path) -> None:
    http = service.start()
    pid = str(uuid.uuid4())
    assert http.put(f"{API}/inventory/{pid}", json={"on_hand": 10, "price": "5.00"}, headers=ADMIN).status_code == 200
    cart = http.post(f"{API}/cart", json={"customer_id": str(uuid.uuid4())}).json()
    http.put(f"{API}/cart/{cart['id']}/items", json={"product_id": pid, "quantity": 3})
    body = {"customer_id": str(uuid.uuid4()), "items": [{"product_id": pid, "quantity": 1}],
            "payment_token": "tok_visa", "shipping_address": ADDRESS}
    confirmed = http.post(f"{API}/orders", json=body).json()["order_id"]
    wait_for(lambda: http.get(f"{API}/orders/{confirmed}").json()["status"], lambda s: s == "CONFIRMED", 60)
    slow = http.post(f"{API}/orders", json={**body, "payment_token": "tok_slow"}).json()
    wait_for(lambda: http.get(f"{API}/admin/sagas/{slow['saga_id']}", headers=ADMIN).json()["current_step"],
             lambda step: step == "process_payment", 60)
    http.close()

    # Ctrl-C with a saga in flight (tests/e2e/test_stop.py stops a service by SIGTERM): within STOP_WITHIN no
    # process is left and every port any of them listened on is free. The processes are looked at until one
    # holds the listeners: Serve may be reloading its HAProxy.
    processes, ports = wait_for(lambda: snapshot(service), lambda pp: service.port in pp[1] and len(pp[1]) >= 3, 30)
    names = " ".join(" ".join(command(p)) for p in processes)
    assert all(part in names for part in ("raylet", "gcs_server", "haproxy", "redis-server", "postgres"))
    started = time.monotonic()
    assert service.interrupt(timeout=STOP_WITHIN) == 0
    assert still_running(processes, timeout=max(STOP_WITHIN - (time.monotonic() - started), 0.1)) == []
    assert {p: holders(p) for p in ports if not port_is_free(p)} == {}

    service.env.update(COMMERCE_ORDER_SHARDS="3", COMMERCE_INVENTORY_SHARDS="2")  # were 1 and 1
    http = service.start()
    kinds = Counter(a["kind"] for a in http.get(f"{API}/admin/actors", headers=ADMIN).json()["items"])
    assert kinds == {"order": 3, "inventory": 2, "projector": 1}
    for entity, count in ((slow["order_id"], 3), (pid, 2)):  # each entity is served by its new shard
        where = http.get(f"{API}/admin/actors/locate", params={"entity_id": entity}, headers=ADMIN).json()
        assert where["shard"] == shard_of(uuid.UUID(entity), count)
    assert http.get(f"{API}/orders/{confirmed}").json()["status"] == "CONFIRMED"
    assert [x["quantity"] for x in http.get(f"{API}/cart/{cart['id']}").json()["items"]] == [3]
    finished = wait_for(lambda: http.get(f"{API}/orders/{slow['order_id']}").json()["status"],
                        lambda s: s in ("CONFIRMED", "CANCELLED"), 120)
    assert finished == "CONFIRMED"
    stock = http.get(f"{API}/inventory/{pid}").json()
    assert (stock["on_hand"], stock["reserved"]) == (8, 0)
    charges = http.get(f"{API}/admin/events", headers=ADMIN,
                       params={"aggregate_id": slow["order_id"], "event_type": "PaymentProcessed"}).json()["items"]
    assert len(charges) == 1
    http.close()
    assert service.stop() == 0
