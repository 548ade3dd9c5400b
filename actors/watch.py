"""Background work whose failures are seen: counted, logged once per change of state, and reported by
the actor's ``ping`` (so ``/health``) while they persist. Nothing here swallows an error silently."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
PERSISTS_AFTER = 3  # consecutive failures before a task counts as failing in health


class Watch:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.failures: Counter[str] = Counter()  # every failure, by task
        self._streak: Counter[str] = Counter()
        self._last: dict[str, str] = {}

    async def run(self, task: str, step: Callable[[], Awaitable[object]]) -> bool:
        """Run one round of ``task``; True when it succeeded. A cancellation that was not aimed at the task
        running the round (a future it awaited, shared with a caller that gave up) is one of its failures: it
        must not end the loop that runs the rounds."""
        try:
            await step()
        except Exception as e:  # counted and logged below, reported while it persists
            self.fail(task, e)
            return False
        except asyncio.CancelledError as e:
            if being_cancelled():
                raise
            self.fail(task, e)
            return False
        self.succeeded(task)
        return True

    def succeeded(self, task: str) -> None:
        """A round of ``task`` that worked: said once after failures, and no longer failing."""
        if self._last.pop(task, None) is not None:
            log.info("%s: %s works again", self.owner, task)
        self._streak.pop(task, None)

    def fail(self, task: str, e: BaseException) -> None:
        text = f"{type(e).__name__}: {e}"[:300]
        self.failures[task] += 1
        self._streak[task] += 1
        if self._last.get(task) != text:
            log.warning("%s: %s failed: %s", self.owner, task, text)
        self._last[task] = text

    def failing(self) -> dict[str, str]:
        """The tasks that have failed several times in a row, with their last error."""
        return {task: self._last[task] for task, n in self._streak.items() if n >= PERSISTS_AFTER}


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled, rather than a future it awaited by someone else."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
