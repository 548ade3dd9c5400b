"""The service's busy processes, its actors and its Serve replicas, collect young objects less often than
Python's default (commerce/collector.py); what that is worth is a benchmark's figure (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import ray

from actors.routing import PROJECTOR_NAME, inventory_shard_name, order_shard_name
from commerce import collector


def thresholds(handle: Any) -> tuple[int, int, int]:
    return ray.get(handle.__ray_call__.remote(lambda _: gc.get_threshold()), timeout=60)  # type: ignore[no-any-return]


async def test_the_actors_and_the_replicas_collect_young_objects_less_often(api: str, actor_settings: Any) -> None:
    ns = actor_settings.namespace
    names = [*(order_shard_name(i) for i in range(actor_settings.order_shards)),
             *(inventory_shard_name(i) for i in range(actor_settings.inventory_shards)), PROJECTOR_NAME]
    actors = [ray.get_actor(name, namespace=ns) for name in names]
    replicas = [ray.get_actor(a["name"], namespace=a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::commerce#")]
    assert replicas, "no replica of the commerce application found"
    found = await asyncio.to_thread(lambda: [thresholds(h) for h in [*actors, *replicas]])
    _, middle, old = gc.get_threshold()  # Python's own for the older generations, as this process has them
    assert found == [(collector.YOUNG_THRESHOLD, middle, old)] * len(found)
