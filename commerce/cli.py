"""The ``commerce`` command: serve, migrate, token, events verify and repair, projections rebuild."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from commerce.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import asyncpg

    from commerce.runtime import Runtime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="commerce", description="Commerce service: orders, carts, inventory.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the service (Ray, actors, HTTP API)")
    serve_cmd.add_argument("--address", help="join this Ray cluster (host:port, or auto for the one this node "
                           "belongs to) instead of starting a local Ray; as RAY_ADDRESS")
    sub.add_parser("migrate", help="apply database migrations")
    events = sub.add_parser("events", help="event store tools").add_subparsers(dest="action", required=True)
    events.add_parser("verify", help="check streams, event types, read models and sagas")
    repair = events.add_parser("repair", help="fix what verify finds where a fix is safe (a dry run by default)")
    repair.add_argument("--apply", action="store_true", help="make the repairs (default: only say what they are)")
    projections = sub.add_parser("projections", help="read model tools").add_subparsers(dest="action", required=True)
    projections.add_parser("rebuild", help="rebuild the read models from position 0")
    token = sub.add_parser("token", help="print a signed JWT for development and tests")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", type=uuid.UUID, help="the customer's UUID (the token's sub)")
    who.add_argument("--subject", help="the sub of a service or admin token")
    token.add_argument("--role", choices=["customer", "service", "admin"], default="customer")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid (default 3600)")
    args = parser.parse_args(argv)
    try:
        settings = load_reporting_warnings()
        if args.command == "serve":
            if args.address:
                settings = settings.replace(ray_address=args.address)
            return serve(settings)
        if args.command == "token":
            return print_token(settings, args)
        return with_database(settings, args.command, getattr(args, "action", None), getattr(args, "apply", False))
    except KeyboardInterrupt:  # our stop (see _Stop), as the tool ended, after its own answer
        return 130
    except SettingsError as e:
        print(f"commerce: configuration error: {e}", file=sys.stderr)
        return 2
    except Exception:  # a failure of the tool's own, even as it stopped: 1 is only what a tool found
        traceback.print_exc()
        return os.EX_SOFTWARE


def load_reporting_warnings() -> Settings:
    """The settings, with what load_settings warns about (unknown ``COMMERCE_*`` variables) printed at start:
    nothing has set up logging in this process yet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("commerce: warning: %(message)s"))
    logger = logging.getLogger("commerce.settings")
    logger.addHandler(handler)
    try:
        return load_settings()
    finally:
        logger.removeHandler(handler)


def print_token(settings: Settings, args: argparse.Namespace) -> int:
    from commerce.auth import Role, issue
    from commerce.runtime import resolve_secrets

    if args.role == "customer" and args.customer is None:
        print("commerce: a customer token needs --customer UUID", file=sys.stderr)
        return 2
    if not args.ttl > 0:
        print("commerce: --ttl must be a number of seconds > 0", file=sys.stderr)
        return 2
    if settings.jwt_public_key:
        print("commerce: tokens are verified with COMMERCE_JWT_PUBLIC_KEY; your identity provider issues them",
              file=sys.stderr)
        return 2
    settings, _ = resolve_secrets(settings)
    subject = str(args.customer) if args.customer is not None else args.subject
    print(issue(settings, subject, Role(args.role), args.ttl))
    return 0


def with_database(settings: Settings, command: str, action: str | None, apply: bool = False) -> int:
    """Run a database tool. A signal (Ctrl-C, SIGTERM, SIGHUP) stops it as it stops the service: an embedded
    PostgreSQL it started is stopped (or, while it starts, its start abandoned), never left running alone.
    A migration stopped midway is rolled back, and the next run applies it.

    Exit 1 is what verify or repair found, or a stop a tool explains; a database that cannot be reached is
    EX_UNAVAILABLE (69), output that cannot be written EX_IOERR (74), settings the database refuses 2 (main's),
    and any other failure EX_SOFTWARE (70), with its traceback: a script that checks the store can tell them
    apart."""
    from commerce.runtime import Runtime
    from store.errors import StoreUnavailable

    tool = " ".join(filter(None, (command, action)))
    runtime = Runtime(settings)
    _on_signals(_stop_now)
    try:
        dsn = runtime.prepare_database(_ServerStarting)
        if command == "migrate":
            _say("migrations applied; schema is current")
            return 0
        if command == "events" and action == "repair":
            return asyncio.run(repair(dsn, apply))
        if command == "events":
            return asyncio.run(verify(dsn))
        return asyncio.run(rebuild(dsn))
    except StoreUnavailable as e:  # not a finding about the store: it could not be asked
        print(f"commerce: {tool}: {e}", file=sys.stderr, flush=True)
        return os.EX_UNAVAILABLE
    except _OutputFailed as e:
        print(f"commerce: {tool}: its output could not be written: {e}", file=sys.stderr, flush=True)
        return os.EX_IOERR
    except KeyboardInterrupt:  # our stop (see _Stop)
        print(f"commerce: {command} stopped by a signal before it finished", file=sys.stderr, flush=True)
        return 130
    except SettingsError:
        raise  # main's answer: exit 2
    except Exception:
        traceback.print_exc()
        print(f"commerce: {tool} failed", file=sys.stderr, flush=True)
        return os.EX_SOFTWARE
    finally:
        try:
            _on_signals(signal.SIG_IGN)  # signals repeated while stopping must not cut the stop short
        finally:  # a signal that came as the tool ended: its server is stopped all the same
            runtime.stop()


@contextlib.asynccontextmanager
async def _pool(dsn: str, size: int) -> AsyncIterator[asyncpg.Pool]:
    """A tool's pool, closed after; a connection that no longer answers (its server gone) is dropped, not
    waited for."""
    from store.event_store import create_pool

    pool = await create_pool(dsn, size)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), 5)
        except Exception:
            pool.terminate()


async def _read_only(pool: asyncpg.Pool, tool: str) -> bool:
    """Whether the database refuses writes (a hot standby, or set so), said for a tool that writes: its checks
    would run, and advise, where nothing can be fixed (a standby does not see the primary's sessions either)."""
    from store.errors import postgres_errors

    with postgres_errors():
        read_only = await pool.fetchval("SELECT current_setting('transaction_read_only') = 'on'")
    if read_only:
        print(f"commerce: {tool}: the database is read-only (a standby?); run it against the primary",
              file=sys.stderr, flush=True)
    return bool(read_only)


class _OutputFailed(Exception):
    """The tool's own output could not be written (a closed pipe, a full disk): not the database's doing, though
    it happened while the database was being read."""


def _say(text: str, end: str = "\n") -> None:
    """The tools' output: an error writing it is told apart from the database's (whose OSErrors, inside its
    work, count as an outage) and from the tool's own."""
    try:
        print(text, end=end, flush=True)
    except OSError as e:
        raise _OutputFailed(str(e) or type(e).__name__) from e


async def repair(dsn: str, apply: bool) -> int:
    from store.errors import postgres_errors
    from store.projections import ProjectionFailed, RebuildInProgress
    from store.repair import RepairRefused, plan
    from store.repair import repair as run_repair
    from store.verify import find_problems

    async with _pool(dsn, 4) as pool:
        if await _read_only(pool, "events repair"):
            return 2
        with postgres_errors():
            problems = await find_problems(pool)
        if not problems:
            _say("event store verified: nothing to repair")
            return 0
        with postgres_errors():
            steps = await plan(pool, problems)
        for step in steps:
            _say(f"{'-' if step.safe else '!'} {step.action} ({len(step.problems)} problem(s)):")
            for p in step.problems[:20]:
                _say(f"    {p}")
        if not apply:
            _say("dry run: nothing was changed; run again with --apply to make the repairs marked '-'")
            return 1
        try:
            with postgres_errors():
                remaining = await run_repair(pool, lambda step: _say(f"done: {step.action}"))
        except (RebuildInProgress, ProjectionFailed, RepairRefused) as e:
            print(f"commerce: repair stopped: {e}", file=sys.stderr)
            return 1
    if remaining:
        _list_problems(f"{len(remaining)} problem(s) remain:", remaining)
        return 1
    _say("repaired: the event store verifies clean")
    return 0


def _list_problems(header: str, problems: Sequence[object]) -> None:
    _say(header)
    for p in problems:
        _say(f"  - {p}")


async def verify(dsn: str) -> int:
    from store.errors import postgres_errors
    from store.verify import verify as run_verify

    async with _pool(dsn, 2) as pool:
        with postgres_errors():
            problems = await run_verify(pool)
    if problems:
        _list_problems(f"event store verification found {len(problems)} problem(s):", problems)
        return 1
    _say("event store verified: streams contiguous, every event decodes, read models and sagas match")
    return 0


async def rebuild(dsn: str) -> int:
    from store.errors import postgres_errors
    from store.projections import ProjectionFailed, RebuildInProgress
    from store.projections import rebuild as rebuild_projections

    async with _pool(dsn, 2) as pool:  # one connection holds the locks, one replays
        if await _read_only(pool, "projections rebuild"):
            return 2
        with postgres_errors():
            total = await pool.fetchval("SELECT COUNT(*) FROM events")
        done: dict[str, int] = {}

        def progress(name: str, n: int) -> None:
            if name not in done and done:
                _say("")  # the previous projection's bar is complete
            done[name] = done.get(name, 0) + n
            width = 30
            # events appended while the service runs can take the count past the total
            filled = min(width, int(width * done[name] / total)) if total else width
            _say(f"\r{name:<16} [{'#' * filled}{'.' * (width - filled)}] {done[name]}/{total}", end="")

        try:
            await rebuild_projections(pool, progress)
        except (RebuildInProgress, ProjectionFailed) as e:
            if done:
                _say("")  # end the progress bar's line
            print(f"commerce: projections rebuild failed: {e}", file=sys.stderr)
            return 1
        _say("")
    return 0


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(KeyboardInterrupt):
    """A signal to stop arrived while the service was still starting, or while a tool ran. A KeyboardInterrupt:
    asyncio lets only those (and SystemExit) through when raised in a callback or a transport's read; another
    exception raised there by the signal handler would be logged and dropped, and the run would go on. Ray's
    waits (ray.get) raise a plain KeyboardInterrupt in its place: while our handlers are installed, every
    KeyboardInterrupt is this stop, and is caught as one."""


def _stop_now(*_: object) -> None:
    _on_signals(signal.SIG_IGN)  # a second signal must not interrupt the stop this one starts
    raise _Stop


class _ServerStarting:
    """While an embedded server starts, a signal is only noted, and acted on once the start is over: raised
    in the middle of initdb or pg_ctl, it would kill those and leave the server they began running, or a
    data directory that no longer starts. The stop then abandons that start (EmbeddedPostgres.abandon_start);
    a start that failed meanwhile (the terminal's Ctrl-C reaches initdb and pg_ctl too, in the same process
    group) is a stop too. A start can hang (pgserver bounds pg_ctl's start, not initdb or its own waits):
    the third signal stops at once, whatever that leaves."""

    FORCE_AFTER = 3

    def __init__(self) -> None:
        self.signals = 0

    @property
    def received(self) -> bool:
        return self.signals > 0

    def _signal(self, *_: object) -> None:
        self.signals += 1
        if self.signals >= self.FORCE_AFTER:
            _stop_now()

    def __enter__(self) -> _ServerStarting:
        _on_signals(self._signal)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        _on_signals(_stop_now)  # first, so that no signal is lost between the check and the handler
        if self.received:
            _stop_now()


def serve(settings: Settings) -> int:
    """Run the service until SIGINT, SIGTERM or SIGHUP, then stop everything it started and exit.

    The process ends with ``os._exit``: Ray's exit handler would disconnect from a cluster that is gone by
    then, and Ray's core worker puts back the default SIGTERM handling while it disconnects, so a signal
    repeated at that moment would end the process before the stop is done.
    """
    from commerce.runtime import Runtime
    from store.errors import StoreUnavailable

    runtime = Runtime(settings)
    stop = threading.Event()
    code = 1
    _on_signals(_stop_now)  # a stop while starting unwinds into the orderly stop below
    try:
        settings = runtime.prepare(_ServerStarting)
        runtime.start_ray()
        _on_signals(_stop_now)  # Ray installs its own SIGTERM handling in the driver; ours comes after it
        runtime.start_service()
        print_banner(settings, runtime)
        _on_signals(lambda *_: (_on_signals(signal.SIG_IGN), stop.set()))
        while not stop.wait(1.0):
            pass
        print("commerce: stopping", flush=True)
        code = 0
    except KeyboardInterrupt:  # our stop (see _Stop), or what Ray made of it: ray.get turns it into a plain one
        print("commerce: stopping before it was ready", flush=True)
        code = 0
    except SettingsError as e:
        print(f"commerce: configuration error: {e}", file=sys.stderr, flush=True)
        code = 2
    except StoreUnavailable as e:  # also as an actor's start raised it (Ray's error is one, with its cause)
        print(f"commerce: serve: {getattr(e, 'cause', None) or e}", file=sys.stderr, flush=True)
        code = os.EX_UNAVAILABLE
    except BaseException:
        traceback.print_exc()
    finally:
        _on_signals(signal.SIG_IGN)  # signals repeated while stopping must not cut the stop short
        runtime.stop()
        print("commerce: stopped", flush=True)
        sys.stderr.flush()
        os._exit(code)


def _on_signals(handler: Any) -> None:
    for sig in SIGNALS:
        signal.signal(sig, handler)


def print_banner(settings: Settings, runtime: Runtime) -> None:
    base = f"http://{settings.host}:{settings.port}"
    dashboard = runtime.dashboard_url or f"{settings.dashboard_host}:{settings.dashboard_port}"
    files = runtime.secret_files
    print(f"commerce: API        {base}/api/v1", flush=True)
    print(f"commerce: API docs   {base}/docs", flush=True)
    print(f"commerce: health     {base}/health", flush=True)
    print(f"commerce: dashboard  http://{dashboard}", flush=True)
    admin = files.get("admin_token")
    print(f"commerce: admin token in {admin}" if admin else "commerce: admin token from COMMERCE_ADMIN_TOKEN",
          flush=True)
    if settings.jwt_public_key:
        print("commerce: customer and service JWTs verified with COMMERCE_JWT_PUBLIC_KEY", flush=True)
    else:
        secret = files.get("jwt_secret")
        print(f"commerce: JWT secret in {secret}" if secret else "commerce: JWT secret from COMMERCE_JWT_SECRET",
              flush=True)
        print("commerce: a customer token: commerce token --customer <uuid>", flush=True)
    print("commerce: ready (Ctrl-C stops everything)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
