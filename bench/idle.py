"""The floor's stand-ins for the service's actors and ingress (``bench/ray_floor.py``), in a module that
imports nothing beyond what the service's own actors and replica import: an idle actor, and a Serve ingress
whose one route asks every idle actor, as the service's /health asks every shard. The HTTP benchmark's
baseline would not do: its module imports the service's actor classes (and with them the store and the
domain) into its replica, which the service's replica never loads."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from commerce import collector

APP_NAME = "floor"
ROUTE_PREFIX = "/floor"
PATH = f"{ROUTE_PREFIX}/ping"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


class Idle:
    """An async actor like the shards, answering at once."""

    def __init__(self) -> None:
        collector.tune()  # as the service's actors

    async def ping(self) -> str:
        return "ok"


class Replica:
    """The idle actors' names and namespace, set by the deployment's constructor (Serve serves a frozen copy of
    ``app``, so they live here and not in ``app.state``); their handles, once found."""

    names: list[str] = []
    namespace = ""
    handles: list[Any] = []


@app.get("/ping")
async def ping() -> dict[str, int]:
    if not Replica.handles:
        Replica.handles = [ray.get_actor(name, namespace=Replica.namespace) for name in Replica.names]
    answers = await asyncio.gather(*(h.ping.remote() for h in Replica.handles))
    return {"answered": len(answers)}


@serve.deployment(max_ongoing_requests=200)  # as the service's ingress; its CPUs and replicas set as the service's
@serve.ingress(app)
class FloorIngress:
    def __init__(self, names: list[str], namespace: str) -> None:
        collector.tune()
        Replica.names, Replica.namespace = names, namespace
