"""Which shard owns an entity: a stable hash of its id modulo the shard count."""

from __future__ import annotations

import uuid


def shard_of(entity_id: uuid.UUID, shards: int) -> int:
    # The UUID's own bits: Python's hash() of a str differs between processes.
    return entity_id.int % shards


ORDER_SHARD = "order-shard-"
INVENTORY_SHARD = "inventory-shard-"


def order_shard_name(index: int) -> str:
    return f"{ORDER_SHARD}{index}"


def inventory_shard_name(index: int) -> str:
    return f"{INVENTORY_SHARD}{index}"


PROJECTOR_NAME = "projector"
