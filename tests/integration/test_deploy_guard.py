"""A start with other shard counts next to running shards is refused: found by name, they would keep
the counts they were made with, and entities and sagas would be routed by two different layouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from actors.base import PROTOCOL
from actors.deploy import check_layout, deploy_actors
from actors.routing import order_shard_name
from commerce.settings import SettingsError


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


async def test_a_shard_left_over_from_a_larger_layout_is_refused(actor_settings: Any) -> None:
    name = order_shard_name(actor_settings.order_shards + 3)
    larger = {"order_shards": actor_settings.order_shards + 4, "inventory_shards": actor_settings.inventory_shards,
              "protocol": PROTOCOL}
    left = LeftOver.options(name=name, namespace=actor_settings.namespace).remote(larger)  # type: ignore[attr-defined]
    try:
        assert await left.layout.remote() == larger
        with pytest.raises(SettingsError, match=name):
            await asyncio.to_thread(check_layout, actor_settings)
    finally:
        ray.kill(left)
