"""The HTTP benchmark: the full stack (Ray Serve behind HAProxy, the actors, PostgreSQL, Redis) next to
two baselines on the same Serve instance, all driven by the same client, wrk, in the same run.

    python -m bench.http_load [--duration 15] [--warmup 5] [--repeat 3] [--concurrency 32 1]

Each repeat, for each concurrency, in this order:

1. GET /livez: a route of the service that calls nothing;
2. GET /baseline/ping: a trivial route plus one actor call (bench/baseline.py);
3. POST /api/v1/orders as the admin, for one customer and one product;
4. the drain: until no saga is running, watched through one count query on PostgreSQL (bench/drain.py);
5. at the highest concurrency, orders again at about half the rate of step 3 (8 connections, each
   waiting between its requests): the acknowledgement's latency below saturation; then a drain.

Every phase starts with the sagas of the phases before it finished. The table gives each figure's
median and range over the repeats; docs/benchmarks.md says how the figures are taken.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

from bench import baseline, wrk
from bench.common import CpuUse, own_serve_ports, postgres, redis_server
from bench.drain import Drained, drain
from bench.report import Report
from commerce.runtime import Runtime
from commerce.settings import ResolvedSettings, Settings
from store.event_store import PostgresEventStore, create_pool
from store.sagas import SagaStore
from tests.support import create_database, drop_database, free_port

LIVEZ = "GET /livez (no actor call)"
BASELINE = "GET /baseline/ping (trivial route + 1 actor call)"
ORDERS = "POST /api/v1/orders accepted"
RATIO = "accepted orders/s ÷ baseline/s (same repeat)"
SUSTAINED = "confirmed orders/s over load + drain"
PACED = "POST /api/v1/orders paced to about half the rate above (8 connections)"
LABELS = [LIVEZ, BASELINE, ORDERS, RATIO, SUSTAINED, PACED]
PACED_CONNECTIONS = 8  # each waits between its requests, so that they offer half the rate of the phase before

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
STOCK = 1_000_000  # more than any run sells: no order fails for want of stock


@dataclasses.dataclass(frozen=True)
class Options:
    duration: int  # seconds of each measured phase
    warmup: int  # seconds of one unmeasured phase per route before the first repeat
    repeat: int
    concurrency: list[int]  # wrk's connections
    timeout: int  # wrk's --timeout: a slower response counts as an error, not as a latency
    drain_timeout: float
    shards: tuple[int, int] = (2, 2)  # order shards, inventory shards


@dataclasses.dataclass(frozen=True)
class Targets:
    livez: str
    baseline: str
    orders: str
    orders_script: Path  # the wrk script that makes wrk's requests the order POSTs


def bench_settings(database: str, redis: str, data_dir: Path, shards: tuple[int, int] = (2, 2)) -> Settings:
    # Secrets of its own: the benchmark neither reads nor writes the data directory of `make dev`.
    return Settings(database_url=database, redis_url=redis, data_dir=data_dir, port=free_port(),
                    dashboard_port=free_port(), admin_token=secrets.token_urlsafe(24),
                    jwt_secret=secrets.token_urlsafe(32), server_secret=secrets.token_urlsafe(32),
                    namespace=f"bench-{uuid.uuid4().hex[:6]}", order_shards=shards[0], inventory_shards=shards[1])


async def ready(client: httpx.AsyncClient, path: str, timeout: float = 60.0) -> None:
    """Wait for a 200 from ``path``: HAProxy learns an application's route a moment after serve.run returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await client.get(path)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not answer 200 within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def prepare_targets(base: str, token: str, directory: Path) -> Targets:
    """Wait for both applications, stock one product, and write the wrk script of the order POSTs."""
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth) as client:
        await ready(client, "/livez")
        await ready(client, baseline.PATH)
        product = uuid.uuid4()
        response = await client.put(f"/api/v1/inventory/{product}", json={"on_hand": STOCK, "price": "9.99"})
        response.raise_for_status()
    # The admin places every order, for one customer and one product: the admin is not rate-limited, so
    # the figures are the service's and not the budget's, and one constant request is built once by wrk.
    body = {"customer_id": str(uuid.uuid4()), "items": [{"product_id": str(product), "quantity": 1}],
            "payment_token": "tok_visa", "shipping_address": ADDRESS}
    script = wrk.post_script(directory, body, auth)
    return Targets(f"{base}/livez", f"{base}{baseline.PATH}", f"{base}/api/v1/orders", script)


async def phase(report: Report, label: str, c: int, url: str, options: Options,
                script: Path | None = None, connections: int | None = None) -> wrk.WrkResult:
    result = await wrk.run(url, connections or c, options.duration, options.timeout, script)
    report.add(label, c, failed=result.failed, rate=result.ok_per_second, p50=result.p50_ms, p99=result.p99_ms,
               client_cpu=result.client_cpu)
    print(f"  c={c:<3} {label:<52} {result.ok_per_second:8.1f}/s  p50 {result.p50_ms:8.1f} ms  "
          f"p99 {result.p99_ms:8.1f} ms  failed {result.failed}  client CPU {result.client_cpu:.0%}", flush=True)
    return result


def record_drain(report: Report, c: int, orders: wrk.WrkResult, before: dict[str, int], drained: Drained) -> None:
    """Confirmed orders per second over the load phase and the drain that followed it."""
    confirmed = drained.count("COMPLETED") - before.get("COMPLETED", 0)
    # From wrk's start to the last saga seen finished: wrk's whole run, not only its measuring window.
    report.add(SUSTAINED, c, rate=confirmed / (orders.wall_seconds + drained.seconds), drain=drained.seconds,
               confirmed=confirmed)
    print(f"  c={c:<3} {'drain':<52} {drained.seconds:8.1f} s   {confirmed} confirmed", flush=True)
    for status in ("COMPENSATED", "FAILED"):
        if (n := drained.count(status) - before.get(status, 0)) > 0:
            print(f"  warning: {n} sagas {status} in this phase; they are not counted as confirmed", flush=True)


def print_cpu_per(what: str, used: dict[str, float], count: int) -> None:
    """The CPU each successful request of a phase (or each confirmed order, over its phase and the drain after
    it) cost, by kind of process: where to look."""
    if count <= 0:
        return
    total = sum(used.values())
    parts = ", ".join(f"{kind} {1000 * t / count:.2f}" for kind, t in list(used.items())[:9] if t > 0)
    print(f"        CPU per {what}: {1000 * total / count:.2f} ms in all; by process, ms: {parts}", flush=True)


async def one_round(targets: Targets, sagas: SagaStore, c: int, options: Options, report: Report) -> None:
    """One concurrency of one repeat: both baselines, then the orders and the drain of their sagas."""
    await phase(report, LIVEZ, c, targets.livez, options)
    cpu = CpuUse(psutil.Process())  # this process started Ray, and so every process of the service
    cpu.start()
    base = await phase(report, BASELINE, c, targets.baseline, options)
    print_cpu_per("successful request of the baseline route", cpu.stop(), base.requests - base.non_2xx)
    before = await sagas.counts()
    cpu.start()
    orders = await phase(report, ORDERS, c, targets.orders, options, targets.orders_script)
    drained = await drain(sagas, options.drain_timeout)  # the clock starts as wrk exits
    used = cpu.stop()
    record_drain(report, c, orders, before, drained)
    print_cpu_per("confirmed order", used, drained.count("COMPLETED") - before.get("COMPLETED", 0))
    if base.ok_per_second > 0:
        report.add(RATIO, c, ratio=orders.ok_per_second / base.ok_per_second)
    if c == max(options.concurrency) and orders.ok_per_second > 0:
        await paced(targets, sagas, c, orders.ok_per_second / 2, options, report)


async def paced(targets: Targets, sagas: SagaStore, c: int, rate: float, options: Options, report: Report) -> None:
    """Orders offered at about ``rate`` (half the peak just measured): each of a few connections waits
    between its requests, so that the latencies are the service's own and not those of a queue. The rate
    offered falls short of ``rate`` by the latency itself; the row gives the rate reached."""
    delay_ms = 1000 * PACED_CONNECTIONS / rate
    await phase(report, PACED, c, targets.orders, options, wrk.paced_script(targets.orders_script, delay_ms),
                connections=PACED_CONNECTIONS)
    await drain(sagas, options.drain_timeout)


async def warm_up(targets: Targets, sagas: SagaStore, options: Options) -> None:
    """Unmeasured runs first: connections, the replicas' code paths and PostgreSQL's caches warm up."""
    if options.warmup <= 0:
        return
    c = max(options.concurrency)
    for url, script in ((targets.livez, None), (targets.baseline, None), (targets.orders, targets.orders_script)):
        await wrk.run(url, c, options.warmup, options.timeout, script)
    await drain(sagas, options.drain_timeout)


async def measure(settings: ResolvedSettings, options: Options, directory: Path) -> Report:
    pool = await create_pool(settings.database_url, 1)  # the drain's one connection
    try:
        sagas = SagaStore(PostgresEventStore(pool))
        targets = await prepare_targets(f"http://{settings.host}:{settings.port}", settings.admin_token, directory)
        await warm_up(targets, sagas, options)
        report = Report(LABELS, options.concurrency)
        for n in range(options.repeat):
            print(f"repeat {n + 1} of {options.repeat}", flush=True)
            for c in options.concurrency:
                await one_round(targets, sagas, c, options, report)
        return report
    finally:
        await pool.close()


def start(runtime: Runtime) -> ResolvedSettings:
    settings = runtime.prepare()
    runtime.start_ray()
    runtime.start_service()
    baseline.deploy_baseline(settings.namespace, settings.replicas)
    return settings


def run(base_dsn: str, redis: str, options: Options) -> Report:
    """Start the stack and the baseline on a database of its own, measure, and stop what was started."""
    with tempfile.TemporaryDirectory(prefix="commerce-bench-") as tmp:  # mode 0700: the wrk script holds a token
        database = asyncio.run(create_database(base_dsn, "commerce_bench"))
        runtime = Runtime(bench_settings(database, redis, Path(tmp), options.shards))
        os.environ.update(own_serve_ports())
        try:
            return asyncio.run(measure(start(runtime), options, Path(tmp)))
        finally:
            try:
                baseline.remove_baseline(runtime.settings.namespace)
                runtime.stop()
            finally:
                asyncio.run(drop_database(base_dsn, database))


def main(options: Options) -> None:
    client = wrk.version()  # fails before anything starts when wrk is missing
    print(f"client {client}, 2 threads (1 for an odd c); {options.repeat} repeats of {options.duration} s per phase, "
          f"after a {options.warmup} s warm-up; {os.cpu_count()} cores shared by client and service; "
          f"{options.shards[0]} order and {options.shards[1]} inventory shards", flush=True)
    with postgres() as base_dsn, redis_server() as redis:
        report = run(base_dsn, redis, options)
    print()
    print(f"median (min–max) of {options.repeat} repeats; rate = responses with a status below 400 per second; "
          "p50/p99 from wrk --latency; c = connections")
    print(report.markdown(), flush=True)


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured phase (default 15)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of the warm-up phase per route (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of every figure (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 1], help="connections (default 32 1)")
    parser.add_argument("--timeout", type=int, default=30,
                        help="wrk --timeout in s: slower responses count as errors (default 30, the service's)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the sagas")
    parser.add_argument("--shards", type=int, nargs=2, default=[2, 2], metavar=("ORDER", "INVENTORY"),
                        help="order and inventory shards (default 2 2)")
    args = parser.parse_args()
    if args.duration < 1 or args.repeat < 1 or min(args.concurrency) < 1 or min(args.shards) < 1:
        parser.error("--duration, --repeat, --concurrency and --shards must be at least 1")
    return Options(args.duration, args.warmup, args.repeat, args.concurrency, args.timeout, args.drain_timeout,
                   (args.shards[0], args.shards[1]))


if __name__ == "__main__":
    main(parse_args())
