"""Creating the service's actors: named, detached, restarted by Ray after a crash, spread over nodes."""

from __future__ import annotations

from typing import Any

import ray

from actors.inventory_shard import InventoryShard
from actors.order_shard import OrderShard
from actors.projector import Projector
from actors.routing import PROJECTOR_NAME, inventory_shard_name, order_shard_name
from commerce.settings import Settings


def actor_options(name: str, namespace: str) -> dict[str, Any]:
    return {
        "name": name, "namespace": namespace, "lifetime": "detached", "get_if_exists": True,
        "max_restarts": -1, "max_task_retries": 3, "num_cpus": 0, "scheduling_strategy": "SPREAD",
        "max_concurrency": 10_000,
    }


def deploy_actors(settings: Settings) -> list[Any]:
    """Create (or find) every shard and the projector, and wait until each has started."""
    ns = settings.namespace
    handles = [
        *[ray.remote(InventoryShard).options(**actor_options(inventory_shard_name(i), ns)).remote(settings, i)
          for i in range(settings.inventory_shards)],
        *[ray.remote(OrderShard).options(**actor_options(order_shard_name(i), ns)).remote(settings, i)
          for i in range(settings.order_shards)],
        ray.remote(Projector).options(**actor_options(PROJECTOR_NAME, ns)).remote(settings),
    ]
    ray.get([h.start.remote() for h in handles])
    return handles


def remove_actors(settings: Settings) -> None:
    """Kill every actor of the service (no restart); their state is all in PostgreSQL."""
    names = [*(inventory_shard_name(i) for i in range(settings.inventory_shards)),
             *(order_shard_name(i) for i in range(settings.order_shards)), PROJECTOR_NAME]
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=settings.namespace), no_restart=True)
        except ValueError:
            continue
