"""The service's settings: one typed, frozen object, checked whenever one is made.

``load_settings`` reads, in this order of precedence, the environment (``COMMERCE_*``, and Ray's
``RAY_ADDRESS``), the YAML file named by ``COMMERCE_CONFIG`` (the seed's ``database``, ``redis`` and
``sagas`` sections), then the defaults. A bad value stops the start with a message naming the variable
or the YAML key it came from. A ``COMMERCE_*`` variable that names no setting is reported, not refused:
a misspelt one would otherwise go unnoticed, but other tools may share the prefix.

The URLs and secrets may be unset here: the runtime starts embedded servers and makes secrets at start.
Actors, services and the ingress get a :class:`ResolvedSettings`, in which all of them are present, so
that none of them has to decide what a missing one means.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from domain.saga import SagaPolicy

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A configuration value is missing, malformed or out of range."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
Count = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
Cpus = Annotated[float, Field(ge=0, le=64)]
# Not "no timeout" at 0: every saga, compensation step or actor call would time out at once.
Timeout = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# 0 means at once: retry without waiting, passivate as soon as an entity is idle.
Delay = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# Read by load_settings while it builds a Settings; empty for one built directly.
_LOADING: contextvars.ContextVar[tuple[PydanticBaseSettingsSource, ...]] = contextvars.ContextVar(
    "commerce_settings_sources", default=())
# Never repeated in an error message.
SECRET_FIELDS = frozenset({"database_url", "redis_url", "admin_token", "server_secret", "jwt_secret"})


def _tick(seconds: float) -> float:
    if 0 < seconds < 0.001:
        raise ValueError("a tick is 0 (none) or at least 0.001 s")
    return seconds


class Settings(BaseSettings):
    """Every setting of the service. Built directly (tests, benchmarks, :meth:`replace`), it takes only
    the values it is given; :func:`load_settings` adds the environment and the YAML file."""

    model_config = SettingsConfigDict(env_prefix="COMMERCE_", frozen=True, extra="forbid", populate_by_name=True)

    database_url: Text | None = None
    database_pool_size: Count = 10
    redis_url: Text | None = None
    redis_max_connections: Count = 20
    ray_address: Text | None = Field(default=None, validation_alias="RAY_ADDRESS")
    data_dir: Path = Path(".commerce")
    host: Text = "127.0.0.1"
    port: Port = 8084
    admin_token: Text | None = None
    server_secret: Text | None = None
    jwt_secret: Text | None = None
    jwt_public_key: Text | None = None
    jwt_issuer: Text | None = None
    jwt_audience: Text | None = None
    rate_limit_per_second: Rate = 20.0
    rate_limit_burst: Count = 40
    saga_timeout: Timeout = 300.0
    saga_retry_attempts: Count = 3
    saga_retry_delay: Delay = 5.0
    saga_compensation_timeout: Timeout = 60.0
    # the steps of a shard's sagas start together, every this many seconds (0: each at once); 1 ms to 1 s
    saga_step_tick: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), AfterValidator(_tick)] = 0.1
    cart_ttl: Count = 604_800
    reservation_ttl: Count = 900
    order_shards: Count = 4
    inventory_shards: Count = 4
    replicas: Count = 1
    max_replicas: Count | None = None  # above replicas: Serve scales the replicas between the two
    shard_cpus: Cpus = 0.1  # what each shard actor reserves, so that placement and the autoscaler see it
    replica_cpus: Cpus = 0.1
    # Serve's: where its HTTP proxy runs
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    max_active_entities: Count = 1000
    passivate_after: Delay = 300.0
    snapshot_every: Count = 50
    namespace: Text = "commerce"
    dashboard_host: Text = "127.0.0.1"
    dashboard_port: Port = 8265
    request_timeout: Timeout = 30.0

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then what load_settings is reading: never the process's environment or a
        .env file behind its back."""
        return init_settings, *_LOADING.get()

    @model_validator(mode="after")
    def _replicas_in_order(self) -> Self:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        return self

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked as a new one is (pydantic's ``model_copy`` checks nothing)."""
        return _build(type(self), {**self._values(), **changes})

    def resolved(self, **changes: Any) -> ResolvedSettings:
        """A copy with ``changes`` that must have its URLs and secrets: what actors, services and the
        ingress are given. Refused, naming what is missing, when it does not."""
        return _build(ResolvedSettings, {**self._values(), **changes})

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

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


class ResolvedSettings(Settings):
    """Settings complete for a running service: the database and Redis URLs, the admin token, the server
    secret, and a JWT secret or public key, as the runtime resolves them at start (configured, or embedded
    servers and secrets in the data directory) or a cluster's environment provides them."""

    database_url: Text
    redis_url: Text
    admin_token: Text
    server_secret: Text

    @model_validator(mode="after")
    def _tokens_verifiable(self) -> Self:
        if not (self.jwt_secret or self.jwt_public_key):
            raise ValueError("jwt_secret (or jwt_public_key) is not resolved")
        return self


S = TypeVar("S", bound=Settings)


def _build(cls: type[S], values: Mapping[str, Any]) -> S:
    """``cls`` from field values; an unset one (None) is left to its default, or reported as missing."""
    try:
        return cls(**{name: value for name, value in values.items() if value is not None})
    except ValidationError as e:
        raise SettingsError(describe(e, {})) from e


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (the process's environment by default) and the YAML file it names.
    Given a mapping, reads that mapping only: neither ``os.environ`` nor a .env file."""
    # Imported here: the sources raise this module's SettingsError.
    from commerce.settings_sources import CONFIG_VARIABLE, EnvironmentSource, SeedYamlSource

    env = dict(os.environ if environ is None else environ)
    unknown = unknown_variables(env)
    if unknown:
        log.warning("ignored, no such setting: %s (misspelt? docs: README.md, Configuration)", ", ".join(unknown))
    from_env = EnvironmentSource(Settings, env)
    from_yaml = SeedYamlSource(Settings, env.get(CONFIG_VARIABLE))
    token = _LOADING.set((from_env, from_yaml))
    try:
        return Settings()
    except ValidationError as e:
        raise SettingsError(describe(e, {**from_yaml.origins, **from_env.origins})) from e
    finally:
        _LOADING.reset(token)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``COMMERCE_*`` variables in ``environ`` that name no setting: misspelt, or another tool's."""
    from commerce.settings_sources import CONFIG_VARIABLE, variables

    prefix = Settings.model_config.get("env_prefix", "")
    known = {CONFIG_VARIABLE, *variables(Settings).values()}
    return sorted(name for name in environ if name.startswith(prefix) and name not in known)


def describe(error: ValidationError, origins: Mapping[str, str]) -> str:
    """Pydantic's errors in the operator's terms: each names the variable or YAML key of its value
    (``origins``, by field), or the field where the value was given in code."""
    from commerce.settings_sources import variables

    details = error.errors()
    names = variables(Settings)
    missing = [f"{d['loc'][0]} ({names.get(str(d['loc'][0]), '')})" for d in details if d["type"] == "missing"]
    problems = [_problem(d, origins) for d in details if d["type"] != "missing"]
    if missing:
        problems.append(f"not resolved: {', '.join(missing)}; the runtime sets them at start, before actors, "
                        "services or the ingress get the settings")
    return "; ".join(problems)


def _problem(detail: ErrorDetails, origins: Mapping[str, str]) -> str:
    reason = detail["msg"].removeprefix("Value error, ")
    if not detail["loc"]:
        return reason  # a rule across fields: its message names them
    field = str(detail["loc"][0])
    where = origins.get(field, field)
    return f"{where}: {reason}" if field in SECRET_FIELDS else f"{where}: {reason} (got {detail['input']!r})"
