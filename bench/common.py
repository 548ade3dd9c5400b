"""Helpers of the benchmarks: the servers to run on, percentiles, output.

Each benchmark makes a database of its own on the PostgreSQL it is given and drops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support import create_database, drop_database, free_port, serve_ports

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def dsn() -> str:
    return os.environ.get("COMMERCE_DATABASE_URL", DEFAULT_DSN)


def redis_url() -> str:
    return os.environ.get("COMMERCE_REDIS_URL", DEFAULT_REDIS)


async def _autovacuum(url: str) -> str | None:
    """The server's autovacuum setting ("on" or "off"), or None when no server answers at ``url``."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        return str(await conn.fetchval("SHOW autovacuum"))
    finally:
        await conn.close()


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping())
    except (OSError, redis.RedisError):
        return False


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """The PostgreSQL to make the benchmark's database on: COMMERCE_DATABASE_URL if set, else the
    machine's at DEFAULT_DSN if it answers (as before), else an embedded one, stopped on the way out.

    Call it outside an event loop: the probe runs one of its own.
    """
    configured = os.environ.get("COMMERCE_DATABASE_URL")
    url = configured or DEFAULT_DSN
    autovacuum = asyncio.run(_autovacuum(url))  # one connection: whether it answers, and how it is kept up
    if configured or autovacuum is not None:
        if autovacuum == "off":
            print("PostgreSQL: autovacuum is off there, so the tables keep their dead rows and stale statistics: "
                  "long runs slow down (a fall after 80,000 orders, docs/benchmarks.md, seventh round)", flush=True)
        yield url
        return
    from store.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="commerce-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            print("PostgreSQL: embedded (none configured, none at the default address)", flush=True)
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def own_database(name: str) -> Iterator[tuple[str, str]]:
    """A database of its own, named after ``name``, on :func:`postgres` (dropped on the way out), and
    :func:`redis_server`: their URLs. Call it outside an event loop, as :func:`postgres`."""
    with postgres() as base, redis_server() as redis:
        database = asyncio.run(create_database(base, name))
        try:
            yield database, redis
        finally:
            asyncio.run(drop_database(base, database))


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Redis, chosen like :func:`postgres`: COMMERCE_REDIS_URL, the default address, or an embedded one."""
    configured = os.environ.get("COMMERCE_REDIS_URL")
    if configured or _redis_answers(DEFAULT_REDIS):
        yield configured or DEFAULT_REDIS
        return
    from store.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="commerce-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        try:
            print("Redis: embedded (none configured, none at the default address)", flush=True)
            yield server.start()
        finally:
            server.stop()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(latencies: Sequence[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (f"p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms  "
            f"p99 {percentile(ms, 99):7.1f} ms  mean {statistics.fmean(ms) if ms else 0:7.1f} ms")


def row(label: str, count: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<48} {count:>7} in {seconds:6.2f} s = {count / seconds:9.1f}/s  {extra}", flush=True)


def spread(values: Sequence[float], fmt: str, unit: str = "") -> str:
    """The median of the repeats and their range, ``median (min–max) unit``; one value alone as it is."""
    if not values:
        return ""
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return f"{median}{unit}"
    return f"{median} ({fmt.format(min(values))}–{fmt.format(max(values))}){unit}"


@contextlib.asynccontextmanager
async def service_actors(base: str, redis: str, **settings: object) -> AsyncIterator[tuple[Any, Any]]:
    """The service's actors on a local Ray, over a database of their own (made, migrated, dropped after);
    yields their settings and a pool of 4 on that database. ``settings`` override the shard counts and
    the rest; secrets are the benchmark's own (the order shards derive reservation ids from them)."""
    import secrets
    import uuid

    import ray

    from actors.deploy import deploy_actors, remove_actors
    from commerce.runtime import run_migrations, serve_env
    from commerce.settings import ResolvedSettings
    from store.event_store import create_pool

    database = await create_database(base, "commerce_bench")
    await run_migrations(database)
    resolved = ResolvedSettings(database_url=database, redis_url=redis, namespace=f"bench-{uuid.uuid4().hex[:6]}",
                                admin_token=secrets.token_urlsafe(24), jwt_secret=secrets.token_urlsafe(32),
                                server_secret=secrets.token_urlsafe(32), **settings)  # type: ignore[arg-type]
    os.environ.update(serve_env())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = await create_pool(database, 4)
    try:
        await asyncio.to_thread(deploy_actors, resolved)
        yield resolved, pool
    finally:
        await pool.close()
        remove_actors(resolved)
        ray.shutdown()
        await drop_database(base, database)


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """A process and everything it started (Ray's processes, the actors, Serve's)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kind(p: psutil.Process) -> str:
    """A name that groups processes of one kind: an actor's class (``ray::OrderShard``), else the command."""
    cmdline: list[str] = p.cmdline()
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split(".")[0]
    name: str = p.name()
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(cmdline[:2]))[:60] or name


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) so far of each process, by pid, with the process's kind."""
    out = {}
    for p in processes:
        try:
            with p.oneshot():
                t = p.cpu_times()
                out[p.pid] = (_kind(p), t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def used_by_kind(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """The CPU seconds used between two readings of :func:`cpu_seconds`, by kind of process: a process started
    between them counts whole, one gone by the second is left out."""
    used: dict[str, float] = {}
    for pid, (kind, t) in after.items():
        used[kind] = used.get(kind, 0.0) + t - before.get(pid, (kind, 0.0))[1]
    return used


class CpuUse:
    """The CPU that a process tree and the whole machine used between ``start`` and ``stop``: the tree's by
    kind of process, and the rest of the machine (PostgreSQL, Redis, the client) as one figure."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root

    def start(self) -> None:
        self._before = cpu_seconds(process_tree(self.root))
        self._machine_before = _busy(psutil.cpu_times())

    def stop(self) -> dict[str, float]:
        """Seconds of CPU by kind; ``everything else`` is the machine's busy time outside the tree."""
        used = used_by_kind(self._before, cpu_seconds(process_tree(self.root)))
        machine = _busy(psutil.cpu_times()) - self._machine_before
        used["everything else on the machine"] = max(0.0, machine - sum(used.values()))
        return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def busy_seconds() -> float:
    """The CPU time the whole machine has been busy since it started, in seconds."""
    return _busy(psutil.cpu_times())


def _busy(t: Any) -> float:
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def own_serve_ports() -> dict[str, str]:
    """The environment that gives a benchmark's Serve ports of its own: another Serve (the test suite's,
    `make dev`) may run on this machine."""
    return serve_ports(32000, 42000)


@contextlib.contextmanager
def running_service(env: dict[str, str | None]) -> Iterator[tuple[psutil.Process, int, float]]:
    """``commerce serve`` as a user starts it, with ``env`` over the environment (None: unset) and ports of
    its own: the process, its port, and the seconds from its spawn until GET /health answered 200 (every
    check ok). Stopped with SIGTERM on the way out, and its whole process group killed if it has not stopped
    within two minutes."""
    port = free_port()
    merged = {**os.environ, **own_serve_ports(), **env, "COMMERCE_PORT": str(port),
              "COMMERCE_DASHBOARD_PORT": str(free_port())}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "commerce.cli", "serve"],
                            env={k: v for k, v in merged.items() if v is not None},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await_200(proc, f"http://127.0.0.1:{port}/health", "commerce serve")
        yield psutil.Process(proc.pid), port, time.monotonic() - started
    finally:
        stop_spawned(proc)


def await_200(proc: subprocess.Popen[Any], url: str, what: str, timeout: float = 180.0,
              errors: Path | None = None) -> None:
    """Wait until GET ``url`` answers 200; SystemExit if ``proc`` (``what``) exits first, with the end of its
    ``errors`` file if given, or if ``timeout`` passes."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            said = f": {errors.read_text()[-2000:]}" if errors else ""
            raise SystemExit(f"{what} exited with {proc.returncode} before {url} answered 200{said}")
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.1)


def stop_spawned(proc: subprocess.Popen[Any]) -> None:
    """Stop a process spawned in a session of its own: SIGTERM, then its process group killed if it has not
    stopped within two minutes, then whatever it had started that outlived it, by process id (Serve's
    HAProxy leaves the group)."""
    started_by_it: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        started_by_it = process_tree(psutil.Process(proc.pid))[1:]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is what it started
        proc.wait()
    for p in started_by_it:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()

