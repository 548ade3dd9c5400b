"""Calling the service's actors by name: a deadline on every call, the actor's own errors raised out of Ray's,
a dead actor looked up again once, and the caller's giving up passed on to the actor."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RaySystemError, RayTaskError

from domain.errors import DomainError
from store.errors import StoreError


class ServiceUnavailable(Exception):
    """An actor did not answer in time or is down; the request may be retried later."""


class ActorLost(ServiceUnavailable):
    """The actor died (or could not be reached) while it had the call: whether the call ran is unknown."""


class ServiceTimeout(ServiceUnavailable):
    """The actor is there but did not answer within the call's deadline: slow, not down."""


class ActorRef:
    """A named actor, looked up when first used and again after it failed."""

    def __init__(self, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        self._handle: Any = None

    def handle(self) -> Any:
        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError as e:
                raise ServiceUnavailable(f"actor {self.name} is not running") from e
        return self._handle

    def known(self) -> Any:
        """The handle if it was looked up and has not failed since; None otherwise (nothing is looked up)."""
        return self._handle

    def forget(self) -> None:
        self._handle = None


async def call(ref: ActorRef, method: str, *args: Any, timeout: float = 30.0, withdraw: bool = False,
               attempts: int = 2, **kwargs: Any) -> Any:
    """Call a method of a named actor, with a deadline; dead or slow actors raise ServiceUnavailable.

    With ``withdraw``, a call its caller gives up on (timeout, cancellation) is cancelled in the actor
    too, so that a command nobody waits for any more does not run later. With ``attempts=1`` the call is
    made once, by this client and by Ray (no task retry): an actor lost raises ActorLost.
    """
    for attempt in range(attempts):
        try:
            remote = getattr(ref.handle(), method)
            if attempts == 1:
                remote = remote.options(max_task_retries=0)
            object_ref = remote.remote(*args, **kwargs)
            if not withdraw:
                return await asyncio.wait_for(object_ref, timeout)
            return await _await_or_withdraw(object_ref, timeout)
        except RayTaskError as e:
            # The method raised: a business outcome (or the store's) is raised here as the actor raised it.
            if isinstance(e.cause, (DomainError, StoreError, ServiceUnavailable)):
                raise e.cause from None
            if isinstance(e.cause, TimeoutError):  # the actor's own wait on something below it
                raise ServiceUnavailable(f"actor {ref.name} timed out: {e.cause}") from e
            raise
        except (RayActorError, RaySystemError) as e:
            if not isinstance(e, ActorUnavailableError):  # a restarting actor keeps its handle: no lookup again
                ref.forget()
            if attempt == attempts - 1:
                raise ActorLost(f"actor {ref.name} is unavailable: {type(e).__name__}") from e
            await asyncio.sleep(0.5)
        except (TimeoutError, GetTimeoutError) as e:
            raise ServiceTimeout(f"actor {ref.name} did not answer within {timeout}s") from e
    raise ServiceUnavailable(ref.name)


async def _await_or_withdraw(object_ref: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(object_ref, timeout)
    except (TimeoutError, asyncio.CancelledError):
        ray.cancel(object_ref, recursive=False)
        raise
