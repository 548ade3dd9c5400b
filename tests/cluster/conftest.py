"""A Ray cluster of three nodes on this machine, and the service joined to it as an operator runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.helpers import API
from tests.integration.ray_support import TEST_JWT_SECRET, eventually
from tests.support import Servers, create_database, drop_database, free_port, serve_ports

ADMIN_TOKEN = "cluster-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the service's and Ray's variables (the session's Ray sets some)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("COMMERCE_", "RAY_"))}, **extra}


class Cluster:
    """``tests/cluster/host.py`` in a process of its own: a head and two worker nodes."""

    def __init__(self, folder: Path) -> None:
        # Token authentication, as cluster.yaml runs it, with a token of this cluster's own (mode 0600).
        token = folder / "ray_auth_token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
        # Ports of its own for the cluster's Serve (its controller and proxies take them from their nodes'
        # environment): the session's Serve may run on this machine too.
        self.env = {**serve_ports(32000, 42000), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.host", "2"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True,
                                     env=clean_environment(**self.env))
        started = self._answer(timeout=120)
        self.address: str = started["address"]
        self.head: str = started["head"]
        self.workers: list[str] = started["workers"]

    def _answer(self, timeout: float = 60.0) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise RuntimeError(f"the cluster host did not answer within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the cluster host exited ({self.proc.wait()})")
        return json.loads(line)

    def _ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def remove(self, worker: int) -> str:
        """Remove a worker node at once, as a lost machine would go."""
        return str(self._ask(f"remove {worker}")["removed"])

    def actors(self, class_part: str) -> list[dict[str, Any]]:
        """The live actors whose class name contains ``class_part``, with their nodes."""
        return [a for a in self._ask("actors") if class_part in a["class_name"] and a["state"] == "ALIVE"]

    def stop(self) -> None:
        """Quit the cluster, then end whatever of its processes outlived it (Serve's HAProxy would)."""
        try:
            started = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._ask("quit")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in started:  # by pid: each was started by this cluster
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


class JoinedService:
    """``commerce serve --address`` on the cluster, with the machine's PostgreSQL (a database of its own)
    and Redis: an operator's command on the head node."""

    def __init__(self, cluster: Cluster, database_url: str, redis_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = clean_environment(**cluster.env)
        self.env.update(COMMERCE_DATABASE_URL=database_url, COMMERCE_REDIS_URL=redis_url,
                        COMMERCE_PORT=str(self.port), COMMERCE_ADMIN_TOKEN=ADMIN_TOKEN,
                        COMMERCE_JWT_SECRET=TEST_JWT_SECRET, COMMERCE_DATA_DIR=str(log.parent / "data"),
                        COMMERCE_NAMESPACE=f"cluster-{uuid.uuid4().hex[:6]}", COMMERCE_REPLICAS="2",
                        COMMERCE_ORDER_SHARDS="3", COMMERCE_INVENTORY_SHARDS="3", COMMERCE_SAGA_RETRY_DELAY="0.2",
                        # One proxy, on the head: the nodes share this machine's ports.
                        COMMERCE_PROXY_LOCATION="HeadOnly")
        self.env.update(env)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "commerce.cli", "serve", "--address", cluster.address],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30, headers=ADMIN) as http:
            async def sagas() -> int:
                try:
                    return (await http.get(f"{API}/admin/sagas")).status_code
                except httpx.HTTPError:
                    if self.proc.poll() is not None:
                        raise AssertionError(f"commerce serve exited: {self.log.read_text()[-3000:]}") from None
                    return 0

            await eventually(sagas, lambda code: code == 200, timeout=240, interval=0.5)
        # Serve answers through the first replica up; the service is ready once all of them are.
        await eventually(lambda: asyncio.sleep(0, self.log.read_text()), lambda text: "commerce: ready" in text,
                         timeout=240, interval=0.5)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=180)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
async def joined(cluster: Cluster, servers: Servers, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[JoinedService]:
    dsn = await create_database(servers.database_url, "commerce_cluster")
    service = JoinedService(cluster, dsn, servers.redis_url, tmp_path_factory.mktemp("joined") / "serve.log")
    try:
        await service.ready()
        yield service
    finally:
        await asyncio.to_thread(service.close)
        await drop_database(servers.database_url, dsn)
