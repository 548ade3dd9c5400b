"""The ``commerce`` command: serve, migrate, events verify, projections rebuild."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from commerce.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from commerce.runtime import Runtime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="commerce", description="Commerce service: orders, carts, inventory.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (Ray, actors, HTTP API)")
    sub.add_parser("migrate", help="apply database migrations")
    events = sub.add_parser("events", help="event store tools").add_subparsers(dest="action", required=True)
    events.add_parser("verify", help="check streams, event types, read models and sagas")
    projections = sub.add_parser("projections", help="read model tools").add_subparsers(dest="action", required=True)
    projections.add_parser("rebuild", help="rebuild the read models from position 0")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"commerce: configuration error: {e}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    return with_database(settings, args.command, getattr(args, "action", None))


def with_database(settings: Settings, command: str, action: str | None) -> int:
    from commerce.runtime import Runtime

    runtime = Runtime(settings)
    try:
        settings = runtime.prepare(redis=False)
        if command == "migrate":
            print("migrations applied; schema is current")
            return 0
        if command == "events":
            return asyncio.run(verify(settings.database_url or ""))
        return asyncio.run(rebuild(settings.database_url or ""))
    finally:
        runtime.stop()


async def verify(dsn: str) -> int:
    from store.event_store import create_pool
    from store.verify import verify as run_verify

    pool = await create_pool(dsn, 2)
    try:
        problems = await run_verify(pool)
    finally:
        await pool.close()
    if problems:
        print(f"event store verification found {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("event store verified: streams contiguous, every event decodes, read models and sagas match")
    return 0


async def rebuild(dsn: str) -> int:
    from store.event_store import PostgresEventStore, create_pool
    from store.projections import ProjectionRunner, all_projections

    pool = await create_pool(dsn, 2)
    try:
        total = await pool.fetchval("SELECT COUNT(*) FROM events")
        for projection in all_projections():
            runner = ProjectionRunner(PostgresEventStore(pool), projection, batch_size=1000)
            await runner.reset()
            done = 0

            def progress(n: int, name: str = projection.name) -> None:
                nonlocal done
                done += n
                width = 30
                filled = int(width * done / total) if total else width
                print(f"\r{name:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", flush=True)

            progress(0)
            await runner.catch_up(progress)
            print()
    finally:
        await pool.close()
    return 0


def serve(settings: Settings) -> int:
    from commerce.runtime import Runtime

    runtime = Runtime(settings)
    stop = threading.Event()
    try:
        settings = runtime.prepare()
        runtime.start_ray()
        # Ray installs its own SIGTERM handling in the driver; ours comes after it.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        runtime.start_actors()
        runtime.start_serve()
        print_banner(settings, runtime)
        while not stop.wait(1.0):
            pass
        print("commerce: stopping", flush=True)
        return 0
    finally:
        runtime.stop()
        print("commerce: stopped", flush=True)


def print_banner(settings: Settings, runtime: Runtime) -> None:
    base = f"http://{settings.host}:{settings.port}"
    dashboard = runtime.dashboard_url or f"{settings.dashboard_host}:{settings.dashboard_port}"
    token_path = runtime.token_path
    print(f"commerce: API        {base}/api/v1", flush=True)
    print(f"commerce: API docs   {base}/docs", flush=True)
    print(f"commerce: health     {base}/health", flush=True)
    print(f"commerce: dashboard  http://{dashboard}", flush=True)
    if token_path:
        print(f"commerce: admin token in {token_path}", flush=True)
    else:
        print("commerce: admin token from COMMERCE_ADMIN_TOKEN", flush=True)
    print("commerce: ready (Ctrl-C stops everything)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
