"""Creating the service's actors: named, detached, restarted by Ray after a crash, spread over nodes,
each reserving a fraction of a CPU so that Ray's placement and its autoscaler count them."""

from __future__ import annotations

from typing import Any

import ray

from actors.base import PROTOCOL
from actors.inventory_shard import InventoryShard
from actors.order_shard import OrderShard
from actors.projector import Projector
from actors.routing import INVENTORY_SHARD, ORDER_SHARD, PROJECTOR_NAME, inventory_shard_name, order_shard_name
from commerce.settings import Settings, SettingsError

START_TIMEOUT = 300.0
LAYOUT_TIMEOUT = 60.0


def actor_options(name: str, namespace: str, cpus: float) -> dict[str, Any]:
    return {
        "name": name, "namespace": namespace, "lifetime": "detached", "get_if_exists": True,
        "max_restarts": -1, "max_task_retries": 3, "num_cpus": cpus, "scheduling_strategy": "SPREAD",
        "max_concurrency": 10_000,
    }


def running_shards(namespace: str) -> list[str]:
    """The names of the shard actors that run in the namespace, of any index (a larger layout's too)."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == namespace and a["name"].startswith((ORDER_SHARD, INVENTORY_SHARD)))


def check_layout(settings: Settings) -> None:
    """Refuse to start next to shards made with other counts: found by name, they would be used with the
    counts they were made with, and the entities and sagas they route would not match this start's. Every
    running shard is asked, so that one left over from a larger layout (its lower shards removed) is found
    too: it would go on resuming sagas by its own counts."""
    for name in running_shards(settings.namespace):
        try:
            running = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:  # gone meanwhile
            continue
        try:
            layout = ray.get(running.layout.remote(), timeout=LAYOUT_TIMEOUT)
        except (ray.exceptions.RayError, AttributeError) as e:  # not answering, or made by an older release
            raise SettingsError(f"{name} runs in namespace {settings.namespace!r} but cannot say its shard counts "
                                f"({type(e).__name__}); remove the service's actors (docs/operations.md), then start") from e
        wanted = {"order_shards": settings.order_shards, "inventory_shards": settings.inventory_shards,
                  "protocol": PROTOCOL}
        if layout != wanted:
            raise SettingsError(
                f"shard actors made with {layout} ({name} among them) run in namespace {settings.namespace!r}, and "
                f"this start asks for {wanted} (a protocol differs after an upgrade): stop the service that runs "
                "them (or remove them, see docs/operations.md), then start")


def deploy_actors(settings: Settings, check: bool = True) -> list[Any]:
    """Create (or find) every shard and the projector, and wait until each has started; ``check`` False when
    the caller has checked the layout itself. The actors get the settings complete (:class:`ResolvedSettings`)."""
    handles, started = create_actors(settings, check)
    await_started(started)
    return handles


def create_actors(settings: Settings, check: bool = True) -> tuple[list[Any], list[ray.ObjectRef]]:
    """As :func:`deploy_actors`, without waiting: the handles, and what :func:`await_started` waits for. The
    actors' processes start meanwhile, so that a caller may start other things alongside."""
    settings = settings.resolved()  # refused here, naming what is missing, rather than in an actor
    if check:
        check_layout(settings)
    ns, cpus = settings.namespace, settings.shard_cpus
    handles = [
        *[ray.remote(InventoryShard).options(**actor_options(inventory_shard_name(i), ns, cpus)).remote(settings, i)
          for i in range(settings.inventory_shards)],
        *[ray.remote(OrderShard).options(**actor_options(order_shard_name(i), ns, cpus)).remote(settings, i)
          for i in range(settings.order_shards)],
        ray.remote(Projector).options(**actor_options(PROJECTOR_NAME, ns, cpus)).remote(settings),
    ]
    return handles, [h.start.remote() for h in handles]


def await_started(started: list[ray.ObjectRef]) -> None:
    # A shard that cannot start (its database unreachable from its node) fails the start, not hangs it.
    ray.get(started, timeout=START_TIMEOUT)


def remove_actors(settings: Settings) -> None:
    """Kill every actor of the service in its namespace (no restart), shards of another layout's counts too
    (those check_layout refuses to start next to); their state is all in PostgreSQL."""
    names = {*(inventory_shard_name(i) for i in range(settings.inventory_shards)),
             *(order_shard_name(i) for i in range(settings.order_shards)), PROJECTOR_NAME,
             *running_shards(settings.namespace)}
    for name in sorted(names):
        try:
            ray.kill(ray.get_actor(name, namespace=settings.namespace), no_restart=True)
        except ValueError:
            continue
