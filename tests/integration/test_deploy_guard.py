"""A start with other shard counts next to running shards is refused: found by name, they would keep
the counts they were made with, and entities and sagas would be routed by two different layouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from actors.deploy import deploy_actors
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
