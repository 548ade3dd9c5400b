"""Wiring: embedded servers when none are configured, migrations, Ray, the actors and Serve.

``Runtime`` starts what the settings ask for and stops exactly what it started, by process id or
through the component's own shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commerce import logs
from commerce.settings import ResolvedSettings, Settings, SettingsError
from store.embedded import EmbeddedPostgres, EmbeddedRedis

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

APP_NAME = "commerce"
# Serve's HAProxy ingress and its throughput settings (replicas buffer their log lines; the ingress flushes
# them every second, see commerce.logs).
SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Unless the environment sets it: Serve's controller runs its loop every 0.5 s instead of 0.1. At rest that loop
# was the service's largest single cost (2.9 % of a core, and about 0.9 % more in the GCS), and a start takes
# no longer (docs/benchmarks.md, fifth round); each round of replacing a lost replica or scaling may start up
# to 0.4 s later.
SERVE_DEFAULTS = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}


def serve_env() -> dict[str, str]:
    """The environment of Serve's processes: SERVE_ENV, and SERVE_DEFAULTS where the environment sets nothing."""
    return {**{name: os.environ.get(name, value) for name, value in SERVE_DEFAULTS.items()}, **SERVE_ENV}


def stop_log_monitor() -> None:
    """Stop the log monitor of the Ray this process started. It re-reads the names and the ends of every
    worker's log files ten times a second to publish their lines to drivers that stream them, and the
    service's driver does not (``log_to_driver=False``): it cost 2 % of a core at rest and 0.4 ms of CPU
    per order under load (docs/benchmarks.md, ninth round). The files stay where the workers write them,
    and the dashboard and ``ray logs`` read them there. ``ray.init`` has no parameter for it (``ray start``
    has ``--include-log-monitor``), so it goes through the node's own stop, once Ray is up. Not on a
    cluster: its nodes belong to whoever started them."""
    import ray._private.worker as ray_worker

    node = getattr(ray_worker, "_global_node", None)
    if node is None or not hasattr(node, "kill_log_monitor"):
        log.warning("this Ray has no log monitor to stop where Ray 2.60 had one; it keeps running")
        return
    node.kill_log_monitor(check_alive=False)


async def run_migrations(database_url: str) -> list[int]:
    """Migrate the database; raises StoreUnavailable when it cannot be reached, SettingsError when its URL
    cannot be read."""
    from store.migrations import migrate

    async with connection(database_url) as conn:
        return await migrate(conn)


@contextlib.asynccontextmanager
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the configured database, closed after: what fails to reach it or breaks it raises
    StoreUnavailable; a URL it cannot read, or settings the server refuses, SettingsError."""
    from store.errors import postgres_errors

    with postgres_errors():
        conn = await _connect(database_url)
        try:
            yield conn
        finally:
            await conn.close()


async def _connect(database_url: str) -> asyncpg.Connection:
    import asyncpg

    try:
        return await asyncpg.connect(database_url)
    except asyncpg.exceptions.ClientConfigurationError as e:
        raise SettingsError(f"COMMERCE_DATABASE_URL (or a PG* variable): {e}") from e
    except (asyncpg.exceptions.InvalidAuthorizationSpecificationError, asyncpg.exceptions.InvalidCatalogNameError) as e:
        # a wrong user or password, a pg_hba.conf refusal, a database that does not exist: the server answered
        raise SettingsError(f"COMMERCE_DATABASE_URL: {e}") from e
    except ValueError as e:  # its text may quote a part of the URL, the password too: not repeated
        raise SettingsError("COMMERCE_DATABASE_URL (or a PG* variable) cannot be read as a PostgreSQL URL; "
                            "percent-encode special characters in the user name and password") from e


def secret_file(path: Path) -> str:
    """A secret kept in the data directory: made once (mode 0600), refused when others may read it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{path} may be read by other users (mode {stat.filemode(mode)}); "
                            f"run: chmod 600 {path}")
    value = path.read_text().strip()
    if not value:
        raise SettingsError(f"{path} is empty; delete it to have a new secret made")
    return value


def resolve_secrets(settings: Settings) -> tuple[Settings, dict[str, Path]]:
    """The admin token, the JWT secret and the server secret: configured, or kept in the data directory.

    Returns the completed settings and the files the secrets came from.
    """
    changes: dict[str, str] = {}
    files: dict[str, Path] = {}
    for field in ("admin_token", "jwt_secret", "server_secret"):
        if not getattr(settings, field):
            files[field] = settings.data_dir.resolve() / field
            changes[field] = secret_file(files[field])
    return settings.replace(**changes), files


async def check_server_secret(settings: ResolvedSettings) -> None:
    """Refuse to start with another server secret than the one this database was used with: the ids
    derived from it (orders placed with an Idempotency-Key, orders' reservations) would change."""
    fingerprint = settings.derived_key("fingerprint").hex()
    async with connection(settings.database_url) as conn:
        known = await conn.fetchval(
            """WITH ins AS (INSERT INTO secret_fingerprints (name, fingerprint) VALUES ('server_secret', $1)
                            ON CONFLICT (name) DO NOTHING RETURNING fingerprint)
               SELECT fingerprint FROM ins UNION ALL
               SELECT fingerprint FROM secret_fingerprints WHERE name = 'server_secret' LIMIT 1""", fingerprint)
    if known is not None and known != fingerprint:
        raise SettingsError("the server secret is not the one this database was used with (COMMERCE_SERVER_SECRET, "
                            "or server_secret in the data directory); restore it")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pg: EmbeddedPostgres | None = None
        self._pg_starting: Any = None  # what noted the signals while it started (None: nothing did)
        self._redis: EmbeddedRedis | None = None
        self._ray_started = False
        self._serve_started = False
        self._actors_started = False
        self.secret_files: dict[str, Path] = {}
        self.dashboard_url = ""

    def prepare_database(self, starting: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> str:
        """The database's URL, for the tools that need only the database: the configured one, or an embedded
        PostgreSQL's, started here (within ``starting``: the service defers signals meanwhile); migrated
        either way."""
        self._refuse_embedded_servers_on_a_cluster(self.settings.database_url)
        database_url = self.settings.database_url
        if not database_url:
            self._pg = EmbeddedPostgres(self.settings.data_dir)
            with starting() as signalled:
                self._pg_starting = signalled  # a stop asked for meanwhile: the stop abandons this start
                database_url = self._pg.start()
        asyncio.run(run_migrations(database_url))
        return database_url

    def prepare(self, starting: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> ResolvedSettings:
        """Everything the service needs before Ray: the database (as :meth:`prepare_database`), Redis (embedded
        when none is configured, started within ``starting`` too) and the secrets, the server secret checked
        against the one the database knows. Returns the settings complete, as actors, services and the
        ingress get them."""
        s = self.settings
        self._refuse_embedded_servers_on_a_cluster(s.database_url and s.redis_url)
        database_url = self.prepare_database(starting)
        redis_url = s.redis_url
        if not redis_url:
            self._redis = EmbeddedRedis(s.data_dir)
            with starting():
                redis_url = self._redis.start()
        with_secrets, self.secret_files = resolve_secrets(s)
        resolved = with_secrets.resolved(database_url=database_url, redis_url=redis_url)
        asyncio.run(check_server_secret(resolved))
        self.settings = resolved
        return resolved

    def _refuse_embedded_servers_on_a_cluster(self, configured: str | None) -> None:
        if self.settings.ray_address and not configured:
            # Servers embedded in this process's machine would not be reachable from the cluster's other nodes.
            raise SettingsError("on a Ray cluster (RAY_ADDRESS or --address) the service needs COMMERCE_DATABASE_URL "
                                "and COMMERCE_REDIS_URL: it starts no servers of its own there")

    def start_ray(self) -> None:
        import ray

        env = {"env_vars": serve_env()}
        os.environ.update(env["env_vars"])
        if ray.is_initialized():
            return
        if self.settings.ray_address:
            context = ray.init(address=self.settings.ray_address, namespace=self.settings.namespace, runtime_env=env,
                               logging_config=logs.ray_logging(), log_to_driver=False)
        else:
            self._ray_started = True  # before it returns: a stop that interrupts it still stops what it started
            context = ray.init(address="local", namespace=self.settings.namespace, include_dashboard=True,
                               dashboard_host=self.settings.dashboard_host,
                               dashboard_port=self.settings.dashboard_port, runtime_env=env,
                               logging_config=logs.ray_logging(), log_to_driver=False)
            self._ray_started = True
            stop_log_monitor()
        self.dashboard_url = context.dashboard_url or ""

    def start_service(self) -> None:
        """The actors and Serve, after :meth:`start_ray`: Serve starts while the actors' processes start, then
        the actors' start is waited for (on a small machine both are bound by CPU: this saved about a second
        in one round's starts, nothing measurable in another's, docs/benchmarks.md). An actor that cannot
        start therefore fails the start only after the application is deployed; the stop removes both.
        Until then /livez answers and /health does not."""
        from actors.deploy import await_started, check_layout, create_actors

        if self.settings.ray_address:
            self._refuse_a_second_instance()
        check_layout(self.settings)  # a refused start must not remove, at its stop, the actors it refused
        self._actors_started = True  # before: a start cut short still removes what it made
        _, started = create_actors(self.settings, check=False)
        self.start_serve()
        await_started(started)

    def _refuse_a_second_instance(self) -> None:
        """On a shared cluster, an application of this name belongs to another instance (or to one that did not
        stop cleanly): starting would replace it and, at the stop, remove the actors it uses."""
        from ray import serve

        if APP_NAME in serve.status().applications:
            raise SettingsError(f"a Serve application named {APP_NAME!r} already runs on this cluster (another instance, "
                                f"or a `serve deploy`); stop it, or `serve delete {APP_NAME}` if it is left over")

    def start_serve(self) -> None:
        from ray import serve

        from serve_app import build_app

        serve.start(http_options={"host": self.settings.host, "port": self.settings.port},
                    proxy_location=self.settings.proxy_location)
        self._serve_started = True  # before: a start cut short still deletes the application
        serve.run(build_app(self.settings), name=APP_NAME, route_prefix="/")

    def stop(self) -> None:
        """Stop what this runtime started, and nothing else.

        On a Ray it started itself, the whole local cluster goes, by process id: Ray's processes and whatever
        would outlive them (Serve's HAProxy is a child of a Ray worker). Serve's own orderly shutdown is
        skipped there: it waits 30 s for its controller, and its state dies with the cluster anyway. On a
        cluster it joined, only this application and these actors go.
        """
        import ray

        if self._ray_started:
            # The local cluster's processes are ours: stopped by pid (Serve's HAProxy among them, which would
            # outlive Ray), without ray.shutdown(), which resets the driver's SIGTERM handling meanwhile.
            servers = {self._redis.pid} if self._redis else set()  # stopped in order below
            _terminate([p for p in _descendants() if p.pid not in servers])
        elif ray.is_initialized():
            self._leave_cluster()
            ray.shutdown()  # disconnects this driver; the cluster stays
        self._ray_started = self._serve_started = self._actors_started = False
        if self._redis:
            self._redis.stop()
        if self._pg:
            if getattr(self._pg_starting, "received", False):  # with signals ignored by now
                self._pg.abandon_start()
            else:
                self._pg.stop()

    def _leave_cluster(self) -> None:
        if self._serve_started:
            from ray import serve

            try:
                serve.delete(APP_NAME)
            except Exception:
                log.exception("Serve could not delete the application %s", APP_NAME)
        if self._actors_started:
            from actors.deploy import remove_actors

            remove_actors(self.settings)  # ours only; their state is in PostgreSQL


def _descendants() -> list[Any]:
    import psutil

    return list(psutil.Process().children(recursive=True))


def _terminate(processes: list[Any], grace: float = 3.0) -> None:
    """SIGTERM what is still running of ``processes``, then SIGKILL what is left after ``grace`` seconds."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=grace)
