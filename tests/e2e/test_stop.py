"""A clean stop: after SIGTERM (what systemd, Docker and Kubernetes send), repeated, no process of the service
remains and every port it listened on is free again, within 10 s (tests/e2e/test_restart.py stops one with
Ctrl-C to its process group). A second service started on the same data directory fails, and leaves the first
one whole; a signal while the embedded database is being made stops the service as well."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from store.embedded import EmbeddedPostgres
from tests.e2e.helpers import ADDRESS, API
from tests.e2e.test_restart import STOP_WITHIN, Service, command, holders, snapshot, wait_for
from tests.support import port_is_free, still_running


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    yield s
    s.close()


def a_second_service_fails_and_leaves_the_first_whole(service: Service, http: httpx.Client) -> None:
    """`make dev` run twice: the second cannot have the ports, and its stop must not take the first one's
    embedded Redis or PostgreSQL with it."""
    redis_pid = int((service.data_dir / "redis" / "redis.pid").read_text())
    second = subprocess.run([sys.executable, "-m", "commerce.cli", "serve"], env=service.env, capture_output=True,
                            timeout=180, start_new_session=True)
    assert second.returncode != 0, second.stdout.decode()[-2000:]
    assert psutil.Process(redis_pid).status() != psutil.STATUS_ZOMBIE
    health = http.get("/health")
    assert health.status_code == 200, health.text  # Redis and PostgreSQL checked, both still there


def test_a_second_service_fails_and_sigterm_three_times_leaves_no_process_and_no_port_behind(service: Service) -> None:
    """`make dev` run twice, then the first one stopped as a service manager stops it, impatiently."""
    http = service.start()
    a_second_service_fails_and_leaves_the_first_whole(service, http)
    pid = str(uuid.uuid4())
    assert http.put(f"{API}/inventory/{pid}", json={"on_hand": 5, "price": "1.00"}).status_code == 200
    body = {"customer_id": str(uuid.uuid4()), "items": [{"product_id": pid, "quantity": 1}],
            "payment_token": "tok_visa", "shipping_address": ADDRESS}
    assert http.post(f"{API}/orders", json=body).status_code == 202
    http.close()
    # The API, HAProxy's stats and metrics, Ray's own. Serve may be reloading its HAProxy right now (the new
    # process takes the listeners over from the old one): the processes are looked at again until one holds them.
    processes, ports = wait_for(lambda: snapshot(service), lambda pp: service.port in pp[1] and len(pp[1]) >= 3, 30)
    # Ray's log monitor is stopped once Ray is up (commerce.runtime.stop_log_monitor): the service's driver
    # streams no worker's lines, and the lines stay in the workers' files (tests/e2e/test_logs.py).
    assert [p.pid for p in processes if any(part.endswith("log_monitor.py") for part in command(p))] == []
    assert service.proc is not None
    started = time.monotonic()
    logged = service.log.stat().st_size
    service.proc.send_signal(signal.SIGTERM)
    while b"commerce: stopping" not in service.log.read_bytes()[logged:]:  # the stop has begun
        assert time.monotonic() - started < STOP_WITHIN and service.proc.poll() is None
        time.sleep(0.02)
    for _ in range(2):  # again while it stops: that must not cut the stop short
        service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=STOP_WITHIN) == 0
    assert still_running(processes, timeout=max(STOP_WITHIN - (time.monotonic() - started), 0.1)) == []
    assert {p: holders(p) for p in ports if not port_is_free(p)} == {}


def processes_in(folder: Path) -> list[psutil.Process]:
    """The processes that name ``folder`` in their arguments or work in it (initdb's standalone backends
    name their data directory nowhere but in their working directory)."""
    return [p for p in psutil.process_iter(["cmdline", "cwd"])
            if str(folder) in " ".join(p.info["cmdline"] or []) or str(p.info["cwd"] or "").startswith(str(folder))]


def working_in(folder: Path) -> list[str]:
    """What processes_in finds, as pid and command line."""
    return [f"{p.pid} {' '.join(p.info['cmdline'] or [])[:100]}" for p in processes_in(folder)]


def kill_working_in(folder: Path) -> None:
    """Kill what a failed test left working in its own directory."""
    for p in processes_in(folder):
        with contextlib.suppress(psutil.Error):
            p.kill()


def in_namespace(namespace: str) -> list[psutil.Process]:
    """The processes that carry the service's namespace in their environment: its driver's, and every process
    its Ray started (the raylet passes its environment on), the ones started late in a start too."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get("COMMERCE_NAMESPACE") == namespace:
                found.append(p)
    return found


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid postmaster.pid names: negative while initdb's standalone backends run, positive once the real
    server has begun (pg_ctl then waits for it to be ready)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.parametrize(("how", "when"), [
    ("SIGTERM to the process", "pg_ctl waits"), ("Ctrl-C to the process group", "pg_ctl waits"),
    ("SIGTERM to the process group", "pg_ctl waits"), ("SIGTERM twice", "pg_ctl waits"),
    ("Ctrl-C to the process group", "initdb runs"), ("SIGTERM three times", "initdb runs"),
])
def test_a_signal_while_the_embedded_database_is_made_stops_the_service_and_leaves_nothing_behind(
        tmp_path: Path, how: str, when: str) -> None:
    """A signal during the first start's initdb or pg_ctl: the service stops, with the server that start
    began (never left running on its own), and the half-made data directory is removed, so the next start
    makes it anew. A signal to the group reaches initdb and pg_ctl too."""
    service = Service(tmp_path)
    proc = service.spawn()
    pgdata = tmp_path / "postgres"
    deadline = time.monotonic() + 60
    while (pid := postmaster_pid(pgdata)) is None or (when == "pg_ctl waits" and pid < 0):
        assert proc.poll() is None and time.monotonic() < deadline, service.log.read_text()[-2000:]
        time.sleep(0.002)
    if how == "SIGTERM to the process":
        proc.send_signal(signal.SIGTERM)
    elif how == "SIGTERM twice":
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
    elif how == "SIGTERM three times":  # as an impatient user: the third stops at once, in the middle of initdb
        for _ in range(3):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)  # paced, or the kernel merges them into one
    else:
        os.killpg(proc.pid, signal.SIGINT if how.startswith("Ctrl-C") else signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, service.log.read_text()[-2000:]
    assert b"stopping before it was ready" in service.log.read_bytes()
    assert working_in(tmp_path) == []
    assert not pgdata.exists()
    again = EmbeddedPostgres(tmp_path)
    try:
        assert again.start().startswith("postgresql://")
    finally:
        again.stop()


@pytest.mark.parametrize("how", ["SIGTERM to the process", "Ctrl-C to the process group"])
def test_a_signal_to_a_database_tool_stops_the_embedded_database_it_started(tmp_path: Path, how: str) -> None:
    """`commerce migrate` on embedded defaults (the first step of a deployment script) stopped while it makes
    its database: it stops that server too and says so, and the next run starts from a clean directory."""
    env = Service(tmp_path).env  # embedded defaults in this directory
    log = tmp_path / "migrate.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "commerce.cli", "migrate"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pgdata = tmp_path / "postgres"
        deadline = time.monotonic() + 60
        while (pid := postmaster_pid(pgdata)) is None or pid < 0:  # the server has begun; pg_ctl waits for it
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.002)
        if how == "SIGTERM to the process":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-2000:]
        assert b"migrate stopped by a signal before it finished" in log.read_bytes()
        assert working_in(tmp_path) == []
        assert not pgdata.exists()
        done = subprocess.run([sys.executable, "-m", "commerce.cli", "migrate"], env=env, capture_output=True,
                              timeout=180)
        assert done.returncode == 0 and b"migrations applied" in done.stdout, done.stderr.decode()[-2000:]
        assert working_in(tmp_path) == []  # a run that finishes stops its server too
    finally:  # after a failure: the tool and any server it left in this directory
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_working_in(tmp_path)


def test_a_signal_while_serve_deploys_the_application_stops_the_service_before_it_was_ready(
        service: Service) -> None:
    """SIGTERM once Serve has started and the application is being deployed (the start waits on Ray there,
    which turns the stop into a plain KeyboardInterrupt): an orderly stop, not a crash, with nothing left."""
    proc = service.spawn()
    deadline = time.monotonic() + 240
    while b"Started Serve in namespace" not in service.log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, service.log.read_text()[-2000:]
        time.sleep(0.05)
    namespace = service.env["COMMERCE_NAMESPACE"]
    assert len(in_namespace(namespace)) > 2  # the driver, Ray's own processes, the actors' workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, service.log.read_text()[-3000:]
    log = service.log.read_text()
    assert "stopping before it was ready" in log and "Traceback" not in log, log[-3000:]
    assert still_running(in_namespace(namespace), timeout=STOP_WITHIN) == []
    assert working_in(service.data_dir) == []
