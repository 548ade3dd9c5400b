"""The actors' processes load only what they use: redis-py, and the OpenTelemetry SDK it pulls in, belong to
the ingress, the one part of the service that talks to Redis (together about 70 ms of CPU at each shard's start
and 7.5 MiB of its memory; docs/benchmarks.md, twenty-first round). Checked after an order went through them, so that what their work
imports at run time counts too."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import ray

from actors.routing import PROJECTOR_NAME, inventory_shard_name, order_shard_name
from tests.e2e.helpers import confirmed_order


def loaded(handle: Any) -> list[str]:
    return ray.get(handle.__ray_call__.remote(  # type: ignore[no-any-return]
        lambda _: sorted({m.split(".")[0] for m in sys.modules} & {"redis", "opentelemetry"})), timeout=60)


async def test_the_shards_and_the_projector_do_not_load_redis(http: httpx.AsyncClient, actor_settings: Any) -> None:
    await confirmed_order(http, on_hand=5, quantity=1)
    ns = actor_settings.namespace
    names = [*(order_shard_name(i) for i in range(actor_settings.order_shards)),
             *(inventory_shard_name(i) for i in range(actor_settings.inventory_shards)), PROJECTOR_NAME]
    found = await asyncio.to_thread(lambda: {name: loaded(ray.get_actor(name, namespace=ns)) for name in names})
    assert found == {name: [] for name in names}
