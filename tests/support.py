"""Helpers shared by the test suites: servers to test against and fresh databases."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from store.embedded import EmbeddedPostgres, EmbeddedRedis

# Serve listens on a few fixed ports and gives its replicas ports from fixed ranges; every Serve a test
# starts gets ports of its own, or two of them on this machine would answer each other's requests.
SERVE_FIXED_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                     "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


# Ports handed out come from below the kernel's ephemeral range (32768-60999 by default): a port picked
# there can be taken as the local end of some outgoing connection before its server gets to bind it.
_PORTS = range(20000, 30000)
_handed_out: set[int] = set()


def serve_ports(http: int, grpc: int) -> dict[str, str]:
    """The environment that gives a Serve ports of its own: free ones for its fixed ports, and its replicas'
    from the 500 ports at ``http`` and at ``grpc`` (the service's own start at 30000 and 40000)."""
    return {**{name: str(free_port()) for name in SERVE_FIXED_PORTS},
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http), "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 499),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc), "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + 499)}


def free_port() -> int:
    """A port nothing listens on, from outside the ephemeral range, not handed out before in this process."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for port in rng.sample(_PORTS, len(_PORTS)):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port between 20000 and 30000")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(base_dsn: str, prefix: str) -> str:
    """A new, empty database next to ``base_dsn``'s; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(base_dsn, name)


async def drop_database(base_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(base_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Servers:
    """The PostgreSQL and Redis the suite talks to: the configured ones, or embedded ones it starts."""

    def __init__(self, tmp: Path) -> None:
        self.pg: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.database_url = os.environ.get("COMMERCE_DATABASE_URL", "")
        self.redis_url = os.environ.get("COMMERCE_REDIS_URL", "")
        if not self.database_url:
            self.pg = EmbeddedPostgres(tmp)
            self.database_url = self.pg.start()
        if not self.redis_url:
            self.redis = EmbeddedRedis(tmp)
            self.redis_url = self.redis.start()

    def stop(self) -> None:
        if self.redis:
            self.redis.stop()
        if self.pg:
            self.pg.stop()


def service_processes(pid: int, data_dir: Path) -> list[psutil.Process]:
    """Every process of a running ``commerce serve``: its descendants (Ray, its workers, Serve's HAProxy,
    the embedded Redis) and the embedded PostgreSQL, which runs detached (its pid is in its pid file)."""
    root = psutil.Process(pid)
    found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    postmaster = data_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        pg = psutil.Process(int(postmaster.read_text().split()[0]))
        found.update({p.pid: p for p in [pg, *pg.children(recursive=True)]})
    return list(found.values())


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL every one of them at once, as a power cut would (some die with their parents first)."""
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue


def still_running(processes: list[psutil.Process], timeout: float = 10.0) -> list[str]:
    """The processes that have not exited within ``timeout`` seconds (a zombie counts as exited)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    out = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return out


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now: nothing binds it but connections in TIME_WAIT, which a
    listener with SO_REUSEADDR (as servers set it) does not wait for."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            pass
    held = [c for c in psutil.net_connections(kind="inet") if c.laddr and c.laddr.port == port]
    return all(c.status == psutil.CONN_TIME_WAIT for c in held)


@contextlib.asynccontextmanager
async def provider_calls_held(dsn: str) -> AsyncIterator[None]:
    """Until the block ends, every provider call on that database waits: its first write, to
    ``provider_attempts``, waits for this session's lock. The sagas that reach their payment step stay in
    flight however fast the machine is, rather than for as long as a retry's delay happens to last. The lock
    goes with the session (rolled back at its close, or by a server that stops)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("BEGIN; LOCK TABLE provider_attempts IN SHARE MODE")
        yield
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.close(timeout=5)
