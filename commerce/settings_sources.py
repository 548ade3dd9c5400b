"""Where ``load_settings`` reads values: one environment mapping, and the YAML file named by COMMERCE_CONFIG.

Both are pydantic-settings sources that hand over values under field names. Each remembers where every
value came from (a variable, a YAML key), so that an error names what the operator wrote rather than
the field it became.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from commerce.settings import SettingsError

CONFIG_VARIABLE = "COMMERCE_CONFIG"
SAGA_KEYS = {"timeout": "saga_timeout", "retry_attempts": "saga_retry_attempts", "retry_delay": "saga_retry_delay",
             "compensation_timeout": "saga_compensation_timeout"}


def variables(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Each field's environment variable: the prefix and its name in capitals, or the one its validation
    alias names (RAY_ADDRESS, which is Ray's own)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    return {name: field.validation_alias if isinstance(field.validation_alias, str) else f"{prefix}{name.upper()}"
            for name, field in settings_cls.model_fields.items()}


class _Source(PydanticBaseSettingsSource):
    """Values under field names, and where each came from."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class EnvironmentSource(_Source):
    """The settings' variables in one given mapping: the process's environment, or a test's dict. Read
    from the mapping alone (pydantic-settings' own source would read ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.origins = {field: name for field, name in variables(settings_cls).items() if name in environ}
        self.values = {field: environ[name] for field, name in self.origins.items()}


class SeedYamlSource(_Source):
    """The seed's YAML format: ``database.postgresql`` becomes the database URL and its pool size,
    ``redis`` the Redis URL and its connection limit, ``sagas.order_fulfillment`` the saga settings.
    Other sections are not the service's and are left alone."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.path = Path(path) if path else None
        if self.path is not None:
            doc = self._load(self.path)
            self._postgresql(self._section(doc, "database", "postgresql"))
            self._redis(self._section(doc, "redis"))
            saga = self._section(doc, "sagas", "order_fulfillment")
            for key, field in SAGA_KEYS.items():
                if key in saga:
                    self._set(field, saga[key], f"sagas.order_fulfillment.{key}")

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        import yaml

        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SettingsError(f"{CONFIG_VARIABLE}: cannot read {path}: {e}") from e
        if not isinstance(doc, dict):
            raise SettingsError(f"{CONFIG_VARIABLE}: {path} is not a mapping")
        return doc

    def _section(self, doc: dict[str, Any], *keys: str) -> dict[str, Any]:
        """The mapping at ``keys``; empty when absent or empty, refused when it is something else."""
        section: dict[str, Any] = doc
        for depth, key in enumerate(keys, 1):
            inner = section.get(key) or {}
            if not isinstance(inner, dict):
                raise SettingsError(f"{'.'.join(keys[:depth])} in {self.path}: must be a mapping")
            section = inner
        return section

    def _set(self, field: str, value: Any, key: str) -> None:
        self.values[field] = value
        self.origins[field] = f"{key} in {self.path}"

    def _port(self, section: dict[str, Any], key: str, default: int) -> int:
        value = section.get("port", default)
        try:
            port = int(value)
        except (TypeError, ValueError):
            port = 0
        if isinstance(value, bool) or not 1 <= port <= 65535:
            raise SettingsError(f"{key}.port in {self.path}: must be a port number 1..65535 (got {value!r})")
        return port

    def _postgresql(self, pg: dict[str, Any]) -> None:
        if not pg:
            return
        user, password = quote(str(pg.get("user", "postgres"))), quote(str(pg.get("password", "")))
        auth = f"{user}:{password}@" if password else f"{user}@"
        port = self._port(pg, "database.postgresql", 5432)
        self._set("database_url", f"postgresql://{auth}{pg.get('host', 'localhost')}:{port}/"
                                  f"{pg.get('database', 'commerce')}", "database.postgresql")
        if "pool_size" in pg:
            self._set("database_pool_size", pg["pool_size"], "database.postgresql.pool_size")

    def _redis(self, rd: dict[str, Any]) -> None:
        if not rd:
            return
        port = self._port(rd, "redis", 6379)
        self._set("redis_url", f"redis://{rd.get('host', 'localhost')}:{port}/{rd.get('db', 0)}", "redis")
        if "max_connections" in rd:
            self._set("redis_max_connections", rd["max_connections"], "redis.max_connections")
