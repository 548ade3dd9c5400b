"""Another team's Serve application on the same cluster: ``python -m tests.cluster.other_app ADDRESS``
deploys it at /other and exits (Serve keeps it running)."""

from __future__ import annotations

import sys

import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Other:
    async def __call__(self, request: Request) -> str:
        return "other"


if __name__ == "__main__":
    ray.init(address=sys.argv[1], namespace="other-team")
    serve.run(Other.bind(), name="other", route_prefix="/other")
