"""wrk, the client of the HTTP benchmark: running it, and reading its report.

wrk is written in C, one event loop per thread; it builds a static request once per thread and then
only writes it and parses responses, so it needs far less CPU per request than the service it drives.
That is measured, not assumed: each run reports the CPU time wrk used (``client_cpu``), which the
benchmark prints next to the figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

WRK = "wrk"
TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}  # wrk's time units
_TIME = r"([\d.]+)(us|ms|s|m|h)"
PERCENTILE = re.compile(rf"^\s+(50|99)(?:\.0+)?%\s+{_TIME}\s*$", re.M)
REQUESTS = re.compile(rf"^\s+(\d+) requests in {_TIME},", re.M)
NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed a report this module cannot read."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int  # responses received, whatever their status
    seconds: float  # wrk's own measuring window
    non_2xx: int  # responses with a status of 400 or more (wrk counts those as "Non-2xx or 3xx")
    socket_errors: int  # connect, read and write errors, and responses slower than --timeout
    p50_ms: float
    p99_ms: float
    cpu_seconds: float = 0.0  # wrk's own CPU time (user + system), all threads
    wall_seconds: float = 0.0  # from starting wrk to its exit: its measuring window and a little more

    @property
    def client_cpu(self) -> float:
        """The client's load, in cores: 0.1 is a tenth of one core over the run."""
        return self.cpu_seconds / self.seconds

    @property
    def ok_per_second(self) -> float:
        """Successful responses per second: a refused request is not throughput."""
        return (self.requests - self.non_2xx) / self.seconds

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors


def version() -> str:
    """wrk's version line; raises WrkError when wrk is not installed."""
    if shutil.which(WRK) is None:
        raise WrkError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    import subprocess

    done = subprocess.run([WRK, "--version"], capture_output=True, text=True, check=False)  # exits 1 by design
    return done.stdout.splitlines()[0].split(" Copyright")[0] if done.stdout else "wrk (version unknown)"


def threads(connections: int) -> int:
    """Two threads, or one for an odd count: wrk gives each thread connections // threads."""
    return 2 if connections >= 2 and connections % 2 == 0 else 1


def _ms(value: str, unit: str) -> float:
    return float(value) * TO_MS[unit]


def parse(report: str) -> WrkResult:
    """The figures of wrk's ``--latency`` report."""
    requests = REQUESTS.search(report)
    percentiles = {int(m[1]): _ms(m[2], m[3]) for m in PERCENTILE.finditer(report)}
    if requests is None or set(percentiles) != {50, 99}:
        raise WrkError(f"cannot read wrk's report:\n{report}")
    non_2xx = NON_2XX.search(report)
    sockets = SOCKET_ERRORS.search(report)
    return WrkResult(
        requests=int(requests[1]), seconds=_ms(requests[2], requests[3]) / 1000,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        p50_ms=percentiles[50], p99_ms=percentiles[99])


async def run(url: str, connections: int, seconds: int, timeout: int, script: Path | None = None) -> WrkResult:
    """Drive ``url`` with ``connections`` connections for ``seconds``, each sending its next request
    when the previous one is answered (a closed loop)."""
    # --timeout: wrk drops slower responses from its latencies (counting them as socket timeouts), and
    # its default of 2 s is below the p99 of orders at concurrency 32.
    args = [WRK, "--latency", "-t", str(threads(connections)), "-c", str(connections), "-d", f"{seconds}s",
            "--timeout", f"{timeout}s", *(["-s", str(script)] if script else []), url]
    before, started = _children_cpu(), time.perf_counter()
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()  # returns once wrk has exited and been reaped
    if process.returncode != 0:
        raise WrkError(f"{' '.join(args)} exited with {process.returncode}: {err.decode().strip()}")
    return dataclasses.replace(parse(out.decode()), cpu_seconds=_children_cpu() - before,
                               wall_seconds=time.perf_counter() - started)


def _children_cpu() -> float:
    """CPU time of this process's reaped children: wrk is the only one that ends during a run (Ray's
    and the embedded servers' processes live until the end), so the difference is wrk's."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def lua_string(text: str) -> str:
    """A Lua long-bracket literal of ``text``: nothing inside is an escape, whatever it holds. Its level
    is at least 1 (``[=[...]=]``), so that it never starts with ``[[`` right after another bracket."""
    level = "="
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def post_script(directory: Path, body: dict[str, Any], headers: dict[str, str]) -> Path:
    """A wrk script making every request a POST of ``body`` as JSON with ``headers``.

    The values are written into the script, in a directory only this user may read (it holds a
    bearer token): wrk then builds the request once, so the script costs nothing per request.
    """
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(json.dumps(body))}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[ {lua_string(name)} ] = {lua_string(value)}" for name, value in headers.items()]
    path = directory / "post.lua"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def paced_script(script: Path, delay_ms: float) -> Path:
    """``script``, with each connection waiting ``delay_ms`` after an answer before its next request: a
    load below what the service can take, whose latencies are the service's and not a queue's."""
    path = script.with_name(f"paced-{script.name}")
    path.write_text(script.read_text() + f"function delay()\n  return {max(round(delay_ms), 0)}\nend\n")
    path.chmod(0o600)
    return path
