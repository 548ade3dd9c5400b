"""Batched calls to shards (actors.call_batches) over named actors, in lanes that do not wait for each other."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from actors.call_batches import MAX_IN_FLIGHT, Answer, Call, CallBatches, Key, Withdrawn
from actors.calls import ActorLost, ActorRef, ServiceTimeout, call
from actors.watch import Watch

RESEND_AFTER = 0.2  # seconds before a batch goes again to a shard that was lost; doubled each time
RESEND_AFTER_AT_MOST = 2.0


class Lanes:
    """Batched calls (actors.call_batches) to each of some shards, in lanes that do not wait for each other.
    With a ``watch``, a call whose caller gave up after it left is withdrawn in the shard too, and a
    withdrawal that fails is counted, logged and reported by that watch (the owner's health)."""

    def __init__(self, refs: list[ActorRef], lanes: tuple[str, ...], timeout: float, watch: Watch | None,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.timeout = timeout
        self.watch = watch
        self._refs = refs
        self._lost_at: dict[str, float] = {}  # when each shard was last found lost (time.monotonic())
        self._withdrawals: set[asyncio.Task[bool]] = set()  # under way: kept, so that none is collected early
        self._batches = {(i, lane): CallBatches(functools.partial(self._send, ref),
                                                functools.partial(self._withdraw, ref) if watch else _kept, timeout,
                                                max_in_flight)
                         for i, ref in enumerate(refs) for lane in lanes}

    async def call(self, shard: int, lane: str, method: str, *args: Any) -> Any:
        """The shard's answer; ActorLost when the caller's deadline passed while the shard was lost (an outage),
        ServiceTimeout when it passed while the shard was there (slow)."""
        started = time.monotonic()
        try:
            return await self._batches[shard, lane].call(method, *args)
        except (TimeoutError, Withdrawn, ServiceTimeout) as e:
            if self._lost_at.get(self._refs[shard].name, -1.0) >= started:  # lost while this call waited
                raise ActorLost(f"shard {shard} was lost and has not answered {method} since") from e
            raise ServiceTimeout(f"shard {shard} did not answer {method}: {type(e).__name__}") from e

    async def _send(self, ref: ActorRef, awaited: Callable[[], list[Call]]) -> dict[Key, Answer]:
        """The batch's calls that are still awaited, once; if the shard was lost meanwhile, those still awaited
        then, again, until none is (Ray itself does not send it again: it would send the calls given up
        meanwhile). A shard lost with its node comes back elsewhere within seconds: its callers wait for it
        within their own deadlines, as they would for a shard that is slow."""
        lost = 0
        while calls := awaited():
            try:
                waited = max(c[3] for c in calls) - time.time()  # no longer than the last of its callers waits
                answers: list[Answer] = await call(ref, "run_batch", calls, timeout=max(waited, 0.001), attempts=1)
            except ActorLost:
                self._lost_at[ref.name] = time.monotonic()
                await asyncio.sleep(min(RESEND_AFTER * 2 ** lost, RESEND_AFTER_AT_MOST))
                lost += 1
                continue
            return {c[0]: a for c, a in zip(calls, answers, strict=True)}
        return {}

    def _withdraw(self, ref: ActorRef, keys: list[Key]) -> None:
        """A task of its own: the caller has given up already and does not wait for it. Without a handle (the
        shard failed), nothing is looked up: the calls' deadlines keep them from running when sent again."""
        if ref.known() is None or self.watch is None:
            return
        watch = self.watch
        task = asyncio.get_running_loop().create_task(watch.run(
            "withdrawing calls", lambda: call(ref, "withdraw", keys, timeout=self.timeout, attempts=1)))
        self._withdrawals.add(task)
        task.add_done_callback(self._withdrawals.discard)


def _kept(keys: list[Key]) -> None:
    """Calls that run to the end once they left, as unbatched ones do."""
