"""Every actor of the service at once, for health checks, metrics and operations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from actors.client import ActorRef, ServiceUnavailable, call
from actors.routing import PROJECTOR_NAME, inventory_shard_name, order_shard_name, shard_of
from actors.watch import Watch


def restart_count(actor_id: str) -> int:
    """How often Ray has restarted the actor, from its actor table (-1 when Ray does not say)."""
    from ray._private import state  # the actor table; ray.util.state would need the dashboard running

    try:
        return int(state.actors(actor_id)["NumRestarts"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        return -1


class ActorDirectory:
    """Every actor of the service, for health checks, metrics and operations."""

    def __init__(self, namespace: str, order_shards: int, inventory_shards: int, timeout: float = 10.0) -> None:
        self.order = [ActorRef(order_shard_name(i), namespace) for i in range(order_shards)]
        self.inventory = [ActorRef(inventory_shard_name(i), namespace) for i in range(inventory_shards)]
        self.projector = ActorRef(PROJECTOR_NAME, namespace)
        self.timeout = timeout
        self.watch = Watch("actor directory")  # an actor's own errors, logged once per change

    @property
    def all(self) -> list[ActorRef]:
        return [*self.order, *self.inventory, self.projector]

    async def describe(self) -> list[dict[str, Any]]:
        """Every actor of the service as the admin API shows it; an actor that does not answer is left out."""
        found = [r for r in (await self.each("describe")).values() if isinstance(r, dict)]
        restarts = await asyncio.to_thread(lambda: {a["actor_id"]: restart_count(a["actor_id"]) for a in found})
        return [{**a, "restarts": restarts[a["actor_id"]]} for a in found]

    def shard_of(self, kind: str, entity_id: uuid.UUID) -> ActorRef:
        refs = self.order if kind == "order" else self.inventory
        return refs[shard_of(entity_id, len(refs))]

    async def each(self, method: str) -> dict[str, Any]:
        """Call ``method`` on every actor; a failing actor maps to its exception, whatever it is (lost, slow,
        its store down while it starts): one actor's failure does not hide the others."""
        async def one(ref: ActorRef) -> Any:
            task = f"{method} of {ref.name}"
            try:
                answer = await call(ref, method, timeout=self.timeout)
            except ServiceUnavailable as e:  # lost or slow: the caller says so
                return e
            except Exception as e:  # its own error (its store down while it starts, or a bug)
                self.watch.fail(task, e)
                return e
            self.watch.succeeded(task)
            return answer

        results = await asyncio.gather(*[one(ref) for ref in self.all])
        return {ref.name: r for ref, r in zip(self.all, results, strict=True)}

