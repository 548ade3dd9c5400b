"""The baseline of the HTTP benchmark: a trivial Serve route that makes one call to a trivial actor.

It is what every route of the service pays before doing any work of its own: HAProxy, a Serve replica,
FastAPI, and one Ray actor call through the service's own client (``actors.client.call``). It runs as a
second Serve application next to the service's, on the same Serve instance, port and HAProxy, under
its own route prefix (Serve routes a request to the application with the longest matching prefix), and
its deployment and actor take the same options as the service's ingress and shards.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from actors.client import ActorRef, call
from actors.deploy import actor_options
from commerce import collector
from commerce.settings import Settings

APP_NAME = "baseline"
ROUTE_PREFIX = "/baseline"
PATH = f"{ROUTE_PREFIX}/ping"
ACTOR_NAME = "bench-baseline-echo"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


class Echo:
    """An actor with nothing to do: an async actor like the shards, answering at once."""

    def __init__(self) -> None:
        collector.tune()  # as the service's actors and replicas, so that the two sides compare

    async def ping(self) -> str:
        return "ok"


class Replica:
    """The actor this replica calls; set by the deployment's constructor (Serve serves a frozen copy
    of ``app``, as serve_app.py notes, so the reference lives here and not in ``app.state``)."""

    echo: ActorRef | None = None


@app.get("/ping")
async def ping() -> dict[str, str]:
    if Replica.echo is None:
        raise RuntimeError("the replica is not initialised")
    return {"status": await call(Replica.echo, "ping")}


@serve.deployment(ray_actor_options={"num_cpus": Settings().replica_cpus}, max_ongoing_requests=200)  # as the ingress
@serve.ingress(app)
class BaselineIngress:
    def __init__(self, namespace: str) -> None:
        collector.tune()
        Replica.echo = ActorRef(ACTOR_NAME, namespace)


def deploy_baseline(namespace: str, replicas: int) -> None:
    """Start the actor and the baseline application on the running Serve instance (serve.start first)."""
    echo: Any = ray.remote(Echo).options(**actor_options(ACTOR_NAME, namespace, Settings().shard_cpus)).remote()
    ray.get(echo.ping.remote())
    # A name of its own: serve.run without one leaves no other application running (Ray's docs).
    serve.run(BaselineIngress.options(num_replicas=replicas).bind(namespace), name=APP_NAME,
              route_prefix=ROUTE_PREFIX)


def remove_baseline(namespace: str) -> None:
    """Kill the actor: it is detached, like the shards. The application goes with serve.shutdown()."""
    if not ray.is_initialized():  # Ray never started: nothing to kill (and get_actor would start it)
        return
    with contextlib.suppress(ValueError):  # the actor never started
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=namespace), no_restart=True)
