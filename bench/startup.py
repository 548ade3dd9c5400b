"""Startup: the seconds from spawning ``commerce serve`` (what ``make dev`` runs once installed) until
GET /health answers 200, on what a fresh ``make dev`` uses: embedded PostgreSQL and Redis in a new data
directory. The first start also makes the database cluster and the secrets; the next ones start on the
same directory, as a developer's second ``make dev`` does. Each start is stopped with SIGTERM. With each
start, the CPU time the whole machine was busy meanwhile: a start that keeps every core busy is bound by CPU,
one that does not waits on something in turn.

    python -m bench.startup [--repeat 3]

The shard counts and other settings come from the environment, as for ``commerce serve``; the servers'
URLs are ignored (unset for the service).
"""

from __future__ import annotations

import argparse
import tempfile

import psutil

from bench.common import busy_seconds, running_service

EMBEDDED = {"COMMERCE_DATABASE_URL": None, "COMMERCE_REDIS_URL": None}


def main(repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="commerce-startup-") as data:
        for n in range(repeat + 1):
            before = busy_seconds()
            with running_service({**EMBEDDED, "COMMERCE_DATA_DIR": data}) as (_, _, seconds):
                busy = busy_seconds() - before
                label = "first start, new data directory" if n == 0 else f"start {n + 1}, same directory"
                cores = psutil.cpu_count() or 1
                print(f"{label}: healthy after {seconds:.1f} s; the machine busy {busy:.1f} s of CPU meanwhile "
                      f"({busy / seconds / cores:.0%} of its {cores} cores)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="starts on the same directory after the first (default 3)")
    main(parser.parse_args().repeat)
