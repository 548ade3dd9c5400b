"""The Serve application, built the Ray way: a Serve config file (``deploy/serve-config.yaml``, for
``serve deploy``, ``serve run`` and KubeRay's RayService). The builder starts actors, so it must run on
the cluster: through a config (Serve's build task), not ``serve run commerce.app:app_builder``, which
calls it in the CLI's process before connecting.

Serve validates the config's ``args`` with ``AppArgs`` (this module keeps its annotations evaluated, so
Serve sees the pydantic model) and calls ``app_builder`` on the cluster. Everything else comes from the
``COMMERCE_*`` environment, as for ``commerce serve``: the nodes' (``ray start``'s) for secrets, the
config's ``runtime_env`` for the rest (Serve shows a runtime_env to whoever reads the config). On a cluster
nothing is embedded and nothing is generated: the builder refuses to build without the database, Redis
and the secrets, since each node would otherwise make up its own.
"""

import asyncio

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from commerce.runtime import check_server_secret, run_migrations
from commerce.settings import ResolvedSettings, SettingsError, load_settings


class AppArgs(BaseModel):
    """What a Serve config's ``args`` may set, over the ``COMMERCE_*`` environment. Other shard counts than
    the running shards' are refused at build; another namespace starts another set of actors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int | None = Field(None, ge=1, description="HTTP replicas (COMMERCE_REPLICAS)")
    max_replicas: int | None = Field(None, ge=1, description="above replicas: Serve autoscales up to it")
    shard_cpus: float | None = Field(None, ge=0, le=64, description="CPUs each shard actor reserves")
    replica_cpus: float | None = Field(None, ge=0, le=64, description="CPUs each HTTP replica reserves")
    order_shards: int | None = Field(None, ge=1, description="order shard actors (COMMERCE_ORDER_SHARDS)")
    inventory_shards: int | None = Field(None, ge=1, description="inventory shard actors")
    max_active_entities: int | None = Field(None, ge=1, description="entities one shard keeps in memory")
    database_pool_size: int | None = Field(None, ge=1, description="connections per actor and replica")
    namespace: str | None = Field(None, min_length=1, max_length=100, description="Ray namespace of the actors")


def cluster_settings(args: AppArgs) -> ResolvedSettings:
    """The environment's settings with the config's arguments over them, complete for a cluster."""
    settings = load_settings().replace(**args.model_dump(exclude_none=True))
    missing = [name for name, value in (
        ("COMMERCE_DATABASE_URL", settings.database_url), ("COMMERCE_REDIS_URL", settings.redis_url),
        ("COMMERCE_ADMIN_TOKEN", settings.admin_token), ("COMMERCE_SERVER_SECRET", settings.server_secret),
        ("COMMERCE_JWT_SECRET or COMMERCE_JWT_PUBLIC_KEY", settings.jwt_secret or settings.jwt_public_key),
    ) if not value]
    if missing:
        raise SettingsError(f"a Serve deployment of the service needs {', '.join(missing)} in the environment of "
                            "its nodes (ray start) or of its runtime_env")
    return settings.resolved()


def app_builder(args: AppArgs) -> Application:
    """Migrate the database, check the server secret, start (or find) the actors, and return the ingress."""
    from actors.deploy import deploy_actors
    from serve_app import build_app

    settings = cluster_settings(args)
    asyncio.run(run_migrations(settings.database_url))
    asyncio.run(check_server_secret(settings))
    deploy_actors(settings)
    return build_app(settings)
