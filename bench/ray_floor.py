"""The floor that Ray and Serve set under a start and under the service at rest: the service's layout of
processes with none of the service in them.

``bench/floor_serve.py`` starts Ray as ``commerce serve`` does (``Runtime.start_ray``: a local Ray with its
dashboard, Serve's environment, the log monitor stopped), one idle actor per shard and one for the projector,
with the shards' options (``bench/idle.py``: an async actor like the shards, answering at once), Serve in its
HAProxy mode with one application whose route asks every idle actor (``bench/floor_ingress.py``, as /health
asks every shard), in the order and with the settings of the service's own start; Serve's ports are the benchmark's own
(``own_serve_ports``), as for the service below. No PostgreSQL, no Redis, none of the service's modules in the
actors or the replica, none of its loops. This benchmark measures it as ``bench.startup`` and ``bench.at_rest``
measure the service:

- the seconds from spawning it until its route answers 200 (the service: until /health does), with the CPU
  the whole machine was busy meanwhile (nothing else should run), and the seconds at which each part of its
  start was done;
- after ``--settle`` seconds, the CPU its process tree uses over ``--window`` seconds with no request, as a
  share of one core, by kind of process.

Then it is stopped with SIGTERM. With ``--service``, each repeat also measures the service the same way
(``commerce serve`` on the machine's PostgreSQL and Redis, a database of its own), the two taking turns at
going first. A floor may be low: the service's /health also needs PostgreSQL, Redis, the migrations and the
secrets' check, which the floor leaves out; and at rest, the CPU PostgreSQL spends on the service's questions
is not counted (the machine's server is not in the service's tree; ``bench.at_rest`` gives its transactions).
A SIGTERM or Ctrl-C to this benchmark stops what it started before it exits.

    python -m bench.ray_floor [--repeat 2] [--settle 30] [--window 60] [--service]

The layout comes from the environment, as the service's does (COMMERCE_ORDER_SHARDS and the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.common import (
    await_200,
    busy_seconds,
    cpu_seconds,
    own_database,
    own_serve_ports,
    process_tree,
    running_service,
    stop_spawned,
    used_by_kind,
)
from bench.floor_ingress import PATH
from tests.support import free_port


@contextlib.contextmanager
def running_floor(folder: Path) -> Iterator[tuple[psutil.Process, float]]:
    """``bench.floor_serve`` started: its process, and the seconds from its spawn until its route answered 200.
    Stopped with SIGTERM on the way out, and its process group killed if it has not stopped within two
    minutes, then whatever it had started that outlived it, by process id; then its phases are printed."""
    port = free_port()
    phases, errors = folder / "phases.json", folder / "stderr.log"
    started = time.monotonic()
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench.floor_serve", str(port), str(free_port()), str(phases),
                                 str(os.getpid())],
                                env={**os.environ, **own_serve_ports()}, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        await_200(proc, f"http://127.0.0.1:{port}{PATH}", "bench.floor_serve", errors=errors)
        yield psutil.Process(proc.pid), time.monotonic() - started
    finally:
        stop_spawned(proc)
        with contextlib.suppress(OSError, ValueError):
            print("  its start, seconds after the process began: "
                  + ", ".join(f"{name} {t:.1f}" for name, t in json.loads(phases.read_text()).items()), flush=True)


def at_rest(root: psutil.Process, settle: float, window: float) -> tuple[float, int, dict[str, float]]:
    """The share of one core that ``root``'s tree used over ``window`` after ``settle``, its processes, and
    the share of each kind of process, largest first."""
    time.sleep(settle)
    before = cpu_seconds(process_tree(root))
    time.sleep(window)
    after = cpu_seconds(process_tree(root))
    shares = {kind: 100 * t / window for kind, t in sorted(used_by_kind(before, after).items(), key=lambda kv: -kv[1])}
    return sum(shares.values()), len(after), shares


def report(label: str, seconds: float, busy: float, rest: tuple[float, int, dict[str, float]]) -> None:
    total, processes, shares = rest
    cores = psutil.cpu_count() or 1
    print(f"{label}: answered after {seconds:.1f} s, the whole machine busy {busy:.1f} s of CPU meanwhile "
          f"({busy / seconds / cores:.0%} of its {cores} cores); at rest {total:.1f} % of one core in "
          f"{processes} processes", flush=True)
    print("  " + ", ".join(f"{kind} {share:.2f}" for kind, share in shares.items()), flush=True)


def floor(settle: float, window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="commerce-floor-") as folder:
        before = busy_seconds()
        with running_floor(Path(folder)) as (root, seconds):
            busy = busy_seconds() - before
            report("Ray and Serve alone (idle actors in the service's layout, one route asking them all)",
                   seconds, busy, at_rest(root, settle, window))


def service(settle: float, window: float) -> None:
    with own_database("commerce_floor") as (database, redis), \
            tempfile.TemporaryDirectory(prefix="commerce-floor-") as data:
        before = busy_seconds()
        with running_service({"COMMERCE_DATABASE_URL": database, "COMMERCE_REDIS_URL": redis,
                              "COMMERCE_DATA_DIR": data}) as (root, _, seconds):
            busy = busy_seconds() - before
            report("the service (commerce serve, the machine's servers, until /health 200)", seconds, busy,
                   at_rest(root, settle, window))


def main(repeat: int, settle: float, window: float, with_service: bool) -> None:
    for n in range(repeat):
        turns = [floor, service] if with_service else [floor]
        for measure in turns if n % 2 == 0 else reversed(turns):
            measure(settle, window)


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)  # unwinds through the stops of what this benchmark started


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--service", action="store_true", help="measure the service the same way, taking turns")
    args = parser.parse_args()
    main(args.repeat, args.settle, args.window, args.service)
