"""One typed settings object: defaults, then the YAML file named by COMMERCE_CONFIG, then the
environment. A bad value fails at start with a message naming it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from domain.saga import SagaPolicy


class SettingsError(ValueError):
    """A configuration value is missing, malformed or out of range."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    database_pool_size: int = 10
    redis_url: str | None = None
    redis_max_connections: int = 20
    ray_address: str | None = None
    data_dir: Path = Path(".commerce")
    host: str = "127.0.0.1"
    port: int = 8084
    admin_token: str | None = None
    server_secret: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 40
    saga_timeout: float = 300.0
    saga_retry_attempts: int = 3
    saga_retry_delay: float = 5.0
    saga_compensation_timeout: float = 60.0
    cart_ttl: int = 604_800
    reservation_ttl: int = 900
    order_shards: int = 4
    inventory_shards: int = 4
    replicas: int = 1
    max_replicas: int | None = None  # above replicas: Serve scales the replicas between the two
    shard_cpus: float = 0.1  # what each shard actor reserves, so that placement and the autoscaler see it
    replica_cpus: float = 0.1
    proxy_location: str = "EveryNode"  # Serve's: where its HTTP proxy runs (EveryNode, HeadOnly, Disabled)
    max_active_entities: int = 1000
    passivate_after: float = 300.0
    snapshot_every: int = 50
    namespace: str = "commerce"
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise SettingsError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")

    def derived_key(self, purpose: str) -> bytes:
        """A key for one purpose (ids derived from idempotency keys, order reservations), derived from the
        server secret so that nobody without it can compute those ids in advance."""
        if not self.server_secret:
            raise SettingsError("the server secret is not set (the runtime resolves it at start)")
        return hmac.new(self.server_secret.encode(), purpose.encode(), hashlib.sha256).digest()

    @property
    def saga_policy(self) -> SagaPolicy:
        return SagaPolicy(self.saga_retry_attempts, self.saga_retry_delay, self.saga_timeout,
                          self.saga_compensation_timeout)


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def _non_negative_float(v: str) -> float:
    x = float(v)
    if not x >= 0:
        raise ValueError("must be a number >= 0")
    return x


def _positive_float(v: str) -> float:
    x = float(v)
    if not x > 0 or x == float("inf"):
        raise ValueError("must be a number > 0")
    return x


def _cpus(v: str) -> float:
    x = float(v)
    if not 0 <= x <= 64:
        raise ValueError("must be a number of CPUs from 0 to 64 (fractions allowed)")
    return x


def _one_of(v: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}")
    return v


def _port(v: str) -> int:
    n = int(v)
    if not 1 <= n <= 65535:
        raise ValueError("must be a port number 1..65535")
    return n


def _text(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "COMMERCE_DATABASE_URL": ("database_url", _text),
    "COMMERCE_REDIS_URL": ("redis_url", _text),
    "RAY_ADDRESS": ("ray_address", _text),
    "COMMERCE_DATA_DIR": ("data_dir", Path),
    "COMMERCE_HOST": ("host", _text),
    "COMMERCE_PORT": ("port", _port),
    "COMMERCE_ADMIN_TOKEN": ("admin_token", _text),
    "COMMERCE_SERVER_SECRET": ("server_secret", _text),
    "COMMERCE_JWT_SECRET": ("jwt_secret", _text),
    "COMMERCE_JWT_PUBLIC_KEY": ("jwt_public_key", _text),
    "COMMERCE_JWT_ISSUER": ("jwt_issuer", _text),
    "COMMERCE_JWT_AUDIENCE": ("jwt_audience", _text),
    "COMMERCE_RATE_LIMIT_PER_SECOND": ("rate_limit_per_second", _positive_float),
    "COMMERCE_RATE_LIMIT_BURST": ("rate_limit_burst", _positive_int),
    "COMMERCE_SAGA_TIMEOUT": ("saga_timeout", _non_negative_float),
    "COMMERCE_SAGA_RETRY_ATTEMPTS": ("saga_retry_attempts", _positive_int),
    "COMMERCE_SAGA_RETRY_DELAY": ("saga_retry_delay", _non_negative_float),
    "COMMERCE_SAGA_COMPENSATION_TIMEOUT": ("saga_compensation_timeout", _non_negative_float),
    "COMMERCE_CART_TTL": ("cart_ttl", _positive_int),
    "COMMERCE_RESERVATION_TTL": ("reservation_ttl", _positive_int),
    "COMMERCE_ORDER_SHARDS": ("order_shards", _positive_int),
    "COMMERCE_INVENTORY_SHARDS": ("inventory_shards", _positive_int),
    "COMMERCE_REPLICAS": ("replicas", _positive_int),
    "COMMERCE_MAX_REPLICAS": ("max_replicas", _positive_int),
    "COMMERCE_SHARD_CPUS": ("shard_cpus", _cpus),
    "COMMERCE_REPLICA_CPUS": ("replica_cpus", _cpus),
    "COMMERCE_PROXY_LOCATION": ("proxy_location", lambda v: _one_of(v, ("EveryNode", "HeadOnly", "Disabled"))),
    "COMMERCE_MAX_ACTIVE_ENTITIES": ("max_active_entities", _positive_int),
    "COMMERCE_PASSIVATE_AFTER": ("passivate_after", _non_negative_float),
    "COMMERCE_SNAPSHOT_EVERY": ("snapshot_every", _positive_int),
    "COMMERCE_NAMESPACE": ("namespace", _text),
    "COMMERCE_DASHBOARD_HOST": ("dashboard_host", _text),
    "COMMERCE_DASHBOARD_PORT": ("dashboard_port", _port),
    "COMMERCE_REQUEST_TIMEOUT": ("request_timeout", _non_negative_float),
}


def _from_yaml(path: Path) -> dict[str, str]:
    """Read the seed's YAML format (database, redis, sagas sections) into environment-style values."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SettingsError(f"COMMERCE_CONFIG: cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise SettingsError(f"COMMERCE_CONFIG: {path} is not a mapping")
    out: dict[str, str] = {}
    pg = (doc.get("database") or {}).get("postgresql")
    if pg:
        user, password = quote(str(pg.get("user", "postgres"))), quote(str(pg.get("password", "")))
        auth = f"{user}:{password}@" if password else f"{user}@"
        out["COMMERCE_DATABASE_URL"] = (
            f"postgresql://{auth}{pg.get('host', 'localhost')}:{pg.get('port', 5432)}/{pg.get('database', 'commerce')}")
        if "pool_size" in pg:
            out["database_pool_size"] = str(pg["pool_size"])
    rd = doc.get("redis")
    if rd:
        out["COMMERCE_REDIS_URL"] = f"redis://{rd.get('host', 'localhost')}:{rd.get('port', 6379)}/{rd.get('db', 0)}"
        if "max_connections" in rd:
            out["redis_max_connections"] = str(rd["max_connections"])
    saga = (doc.get("sagas") or {}).get("order_fulfillment") or {}
    for key, env in (("timeout", "COMMERCE_SAGA_TIMEOUT"), ("retry_attempts", "COMMERCE_SAGA_RETRY_ATTEMPTS"),
                     ("retry_delay", "COMMERCE_SAGA_RETRY_DELAY"),
                     ("compensation_timeout", "COMMERCE_SAGA_COMPENSATION_TIMEOUT")):
        if key in saga:
            out[env] = str(saga[key])
    return out


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, str] = {}
    if env.get("COMMERCE_CONFIG"):
        values.update(_from_yaml(Path(env["COMMERCE_CONFIG"])))
    values.update({k: v for k, v in env.items() if k in _ENV})
    fields: dict[str, Any] = {}
    for name in ("database_pool_size", "redis_max_connections"):
        if name in values:
            try:
                fields[name] = _positive_int(values.pop(name))
            except ValueError as e:
                raise SettingsError(f"COMMERCE_CONFIG {name}: {e}") from e
    for key, raw in values.items():
        field, parse = _ENV[key]
        try:
            fields[field] = parse(raw)
        except ValueError as e:
            raise SettingsError(f"{key}={raw!r}: {e}") from e
    return Settings(**fields)
