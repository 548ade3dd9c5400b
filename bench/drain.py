"""Waiting for the sagas of a load phase to finish, by watching one aggregate figure in PostgreSQL.

The benchmark's database is its own, so every saga in it is the benchmark's. The only load the wait
adds is one read of the sagas by status (``SagaStore.counts``, kept as the sagas change) per poll,
on PostgreSQL directly: asking each order's shard for its order would put the watcher's own requests
on the actors that run the sagas, and slow down what it measures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from store.sagas import SagaStore

POLL_SECONDS = 0.5
UNFINISHED = ("RUNNING", "COMPENSATING")  # FAILED is not here: it waits for an operator, not for time


class DrainTimeout(RuntimeError):
    """Sagas were still running when the wait gave up."""


@dataclasses.dataclass(frozen=True)
class Drained:
    seconds: float  # from the call until no saga was unfinished, to within one poll interval
    counts: dict[str, int]  # sagas by status at that moment

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)


def unfinished(counts: dict[str, int]) -> int:
    return sum(counts.get(status, 0) for status in UNFINISHED)


async def drain(sagas: SagaStore, timeout: float, every: float = POLL_SECONDS) -> Drained:
    """Wait until no saga is RUNNING or COMPENSATING, polling the counts at most every ``every`` s."""
    start = time.perf_counter()
    while True:
        counts = await sagas.counts()
        elapsed = time.perf_counter() - start
        if unfinished(counts) == 0:
            return Drained(elapsed, counts)
        if elapsed > timeout:
            raise DrainTimeout(f"{unfinished(counts)} sagas still unfinished after {elapsed:.0f} s: {counts}")
        await asyncio.sleep(every)
