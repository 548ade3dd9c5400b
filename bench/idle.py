"""The floor's stand-in for the service's actors (``bench/ray_floor.py``), in a module that imports nothing
beyond what the service's own actors import (``commerce.collector``): Ray loads an actor's class from its
module in the actor's process, so whatever this module imports, every stand-in's process imports too."""

from __future__ import annotations

from commerce import collector


class IdleActor:
    """An async actor like the shards, answering at once."""

    def __init__(self) -> None:
        collector.tune()  # as the service's actors

    async def ping(self) -> str:
        return "ok"
