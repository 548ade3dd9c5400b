"""The floor's stand-in for the service's ingress (``bench/ray_floor.py``): a Serve deployment whose one route
asks every idle actor, as the service's /health asks every shard, with the service's deployment options (its
JSON log lines; ``bench/floor_serve.py`` gives it the replicas' CPUs and count). It imports FastAPI and Serve,
as the service's replica does, and none of the service's actor classes, the store or the domain; the HTTP
benchmark's baseline would not do, as its module imports the service's actor classes into its replica."""

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


@serve.deployment(max_ongoing_requests=200, logging_config={"encoding": "JSON", "log_level": "INFO"})  # as the service's
@serve.ingress(app)
class FloorIngress:
    def __init__(self, names: list[str], namespace: str) -> None:
        collector.tune()
        Replica.names, Replica.namespace = names, namespace
