"""A start with other shard counts next to running shards is refused: found by name, they would keep
the counts they were made with, and entities and sagas would be routed by two different layouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from actors.base import PROTOCOL
from actors.deploy import check_layout, deploy_actors, remove_actors, running_shards
from actors.routing import order_shard_name
from commerce.settings import SettingsError
from tests.integration.ray_support import eventually


async def test_other_shard_counts_are_refused_while_the_old_shards_run(actor_settings: Any) -> None:
    more = actor_settings.replace(order_shards=actor_settings.order_shards + 1)
    with pytest.raises(SettingsError, match="order_shards"):
        await asyncio.to_thread(deploy_actors, more)
    with pytest.raises(ValueError):  # nothing was made for the refused layout
        ray.get_actor(order_shard_name(actor_settings.order_shards), namespace=actor_settings.namespace)
    fewer = actor_settings.replace(inventory_shards=1)
    with pytest.raises(SettingsError, match="inventory_shards"):
        await asyncio.to_thread(deploy_actors, fewer)
    same = await asyncio.to_thread(deploy_actors, actor_settings)  # the same layout finds the running shards
    assert len(same) == actor_settings.order_shards + actor_settings.inventory_shards + 1


@ray.remote(num_cpus=0)
class LeftOver:
    """A shard of a larger layout whose lower shards were removed: it still runs, and says its counts."""

    def __init__(self, layout: dict[str, int]) -> None:
        self._layout = layout

    def layout(self) -> dict[str, int]:
        return self._layout


async def test_a_shard_left_over_from_a_larger_layout_is_refused_and_removed_the_documented_way(
        actor_settings: Any) -> None:
    name = order_shard_name(actor_settings.order_shards + 3)
    larger = {"order_shards": actor_settings.order_shards + 4, "inventory_shards": actor_settings.inventory_shards,
              "protocol": PROTOCOL}
    namespace = f"{actor_settings.namespace}-left"  # the session's own actors stay out of it
    left = LeftOver.options(name=name, namespace=namespace).remote(larger)  # type: ignore[attr-defined]
    try:
        assert await left.layout.remote() == larger
        settings = actor_settings.replace(namespace=namespace)
        with pytest.raises(SettingsError, match=name):
            await asyncio.to_thread(check_layout, settings)
        await asyncio.to_thread(remove_actors, settings)  # with this start's counts, as docs/operations.md runs it

        async def gone() -> bool:
            return name not in await asyncio.to_thread(running_shards, namespace)

        await eventually(gone, bool, timeout=30)
        await asyncio.to_thread(check_layout, settings)  # nothing left to refuse
    finally:
        ray.kill(left)
