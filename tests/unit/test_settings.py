from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from commerce.settings import ResolvedSettings, Settings, SettingsError, load_settings, unknown_variables


def test_defaults_follow_the_api_contract() -> None:
    s = load_settings({})
    assert (s.port, s.saga_timeout, s.saga_retry_attempts, s.saga_retry_delay) == (8084, 300.0, 3, 5.0)
    assert (s.cart_ttl, s.reservation_ttl, s.order_shards, s.inventory_shards) == (604_800, 900, 4, 4)
    assert s.database_url is None and s.redis_url is None and s.data_dir == Path(".commerce")


def test_environment_overrides_the_yaml_file_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "commerce.yaml"
    config.write_text(
        "database:\n  postgresql: {host: db, port: 5433, database: shop, user: app, password: s3cret, pool_size: 7}\n"
        "redis: {host: cache, port: 6380, db: 2, max_connections: 9}\n"
        "sagas:\n  order_fulfillment: {timeout: 120, retry_attempts: 5, retry_delay: 1, compensation_timeout: 30}\n")
    s = load_settings({"COMMERCE_CONFIG": str(config), "COMMERCE_SAGA_RETRY_ATTEMPTS": "2"})
    assert s.database_url == "postgresql://app:s3cret@db:5433/shop" and s.database_pool_size == 7
    assert s.redis_url == "redis://cache:6380/2" and s.redis_max_connections == 9
    assert (s.saga_timeout, s.saga_retry_attempts, s.saga_retry_delay, s.saga_compensation_timeout) == (120, 2, 1, 30)


@pytest.mark.parametrize(("name", "value"), [
    ("COMMERCE_PORT", "eighty"), ("COMMERCE_PORT", "70000"), ("COMMERCE_ORDER_SHARDS", "0"),
    ("COMMERCE_SAGA_TIMEOUT", "-1"), ("COMMERCE_ADMIN_TOKEN", " "),
])
def test_a_bad_value_fails_with_its_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize("missing", ["database_url", "redis_url"])
def test_joining_a_cluster_starts_no_embedded_server(tmp_path: Path, missing: str) -> None:
    from commerce.runtime import Runtime

    urls = {"database_url": "postgresql://db.internal/commerce", "redis_url": "redis://redis.internal:6379/0"}
    settings = Settings(ray_address="auto", data_dir=tmp_path, **{**urls, missing: None})
    with pytest.raises(SettingsError, match="COMMERCE_DATABASE_URL and COMMERCE_REDIS_URL"):
        Runtime(settings).prepare()
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


def test_replicas_are_fixed_or_autoscaled_and_reserve_their_cpus() -> None:
    from serve_app import TARGET_ONGOING_REQUESTS, ingress

    fixed = ingress(load_settings({"COMMERCE_REPLICAS": "3", "COMMERCE_REPLICA_CPUS": "0.5"}))
    assert fixed.num_replicas == 3 and fixed.ray_actor_options["num_cpus"] == 0.5
    scaled = ingress(load_settings({"COMMERCE_REPLICAS": "2", "COMMERCE_MAX_REPLICAS": "6"}))
    autoscaling = scaled._deployment_config.autoscaling_config  # Serve has no public accessor for it
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (2, 6)
    assert autoscaling.target_ongoing_requests == TARGET_ONGOING_REQUESTS
    with pytest.raises(SettingsError, match="max_replicas"):
        load_settings({"COMMERCE_REPLICAS": "4", "COMMERCE_MAX_REPLICAS": "2"})
    with pytest.raises(SettingsError, match="COMMERCE_SHARD_CPUS"):
        load_settings({"COMMERCE_SHARD_CPUS": "-1"})


SEED = ("database:\n  postgresql: {host: db, port: 5433, database: shop, user: app, password: s3cret, pool_size: 7}\n"
        "redis: {host: cache, port: 6380, db: 2, max_connections: 9}\n")


def resolved_settings(**changes: Any) -> ResolvedSettings:
    return Settings().resolved(**{"database_url": "postgresql://db/shop", "redis_url": "redis://cache:6379/0",
                                  "admin_token": "admin", "server_secret": "server", "jwt_secret": "jwt", **changes})


def test_the_yaml_sections_become_fields_and_the_environment_overrides_each(tmp_path: Path) -> None:
    config = tmp_path / "commerce.yaml"
    config.write_text(SEED)
    s = load_settings({"COMMERCE_CONFIG": str(config), "COMMERCE_DATABASE_POOL_SIZE": "3",
                       "COMMERCE_REDIS_URL": "redis://elsewhere:6379/0"})
    assert s.database_url == "postgresql://app:s3cret@db:5433/shop" and s.database_pool_size == 3
    assert s.redis_url == "redis://elsewhere:6379/0" and s.redis_max_connections == 9


def test_pool_sizes_come_from_the_environment_too() -> None:
    s = load_settings({"COMMERCE_DATABASE_POOL_SIZE": "5", "COMMERCE_REDIS_MAX_CONNECTIONS": "50"})
    assert (s.database_pool_size, s.redis_max_connections) == (5, 50)
    with pytest.raises(SettingsError, match="COMMERCE_DATABASE_POOL_SIZE"):
        load_settings({"COMMERCE_DATABASE_POOL_SIZE": "0"})


@pytest.mark.parametrize("name", ["COMMERCE_SAGA_TIMEOUT", "COMMERCE_SAGA_COMPENSATION_TIMEOUT",
                                  "COMMERCE_REQUEST_TIMEOUT"])
@pytest.mark.parametrize("value", ["0", "inf", "nan"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_with_its_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_a_zero_delay_means_at_once_and_is_accepted() -> None:
    s = load_settings({"COMMERCE_SAGA_RETRY_DELAY": "0", "COMMERCE_PASSIVATE_AFTER": "0",
                       "COMMERCE_SAGA_STEP_TICK": "0"})
    assert (s.saga_retry_delay, s.passivate_after, s.saga_step_tick) == (0, 0, 0)
    assert load_settings({}).saga_step_tick == 0.1
    assert load_settings({"COMMERCE_SAGA_STEP_TICK": "0.001"}).saga_step_tick == 0.001


@pytest.mark.parametrize("value", ["-0.01", "50", "inf", "nan", "fast", "1e-320", "0.0009"])
def test_a_saga_step_tick_outside_0_to_1_second_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(SettingsError, match="COMMERCE_SAGA_STEP_TICK"):  # 50: milliseconds meant, not seconds
        load_settings({"COMMERCE_SAGA_STEP_TICK": value})


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("sagas:\n  order_fulfillment: {timeout: 0}\n", "sagas.order_fulfillment.timeout"),
    ("database:\n  postgresql: {pool_size: none}\n", "database.postgresql.pool_size"),
    ("redis: {port: 70000}\n", "redis.port"),
    ("sagas: [order_fulfillment]\n", "sagas"),
])
def test_a_bad_yaml_value_fails_with_its_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "commerce.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SettingsError, match=re.escape(key)):
        load_settings({"COMMERCE_CONFIG": str(config)})


def test_an_unknown_commerce_variable_is_reported_but_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"COMMERCE_SAGA_TIMEOUTS": "10", "COMMERCE_PORT": "9000", "COMMERCE_CONFIG": "", "RAY_ADDRESS": "auto",
               "COMMERCE_DATABASE_POOL_SIZE": "4", "HOME": "/root"}
    assert unknown_variables(environ) == ["COMMERCE_SAGA_TIMEOUTS"]
    with caplog.at_level(logging.WARNING, logger="commerce.settings"):
        s = load_settings(environ)
    assert s.port == 9000 and s.saga_timeout == 300.0
    assert [r.getMessage() for r in caplog.records if "COMMERCE_SAGA_TIMEOUTS" in r.getMessage()]
    assert not [r for r in caplog.records if "COMMERCE_PORT" in r.getMessage()]


def test_commerce_prints_the_unknown_variables_when_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from commerce.cli import main

    for name in [n for n in os.environ if n.startswith("COMMERCE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COMMERCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COMMERCE_ADMIN_TOKN", "typo")
    assert main(["token", "--subject", "billing", "--role", "service"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("commerce: warning: ")]
    assert len(warnings) == 1 and "COMMERCE_ADMIN_TOKN" in warnings[0]


def test_an_explicit_mapping_is_all_that_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCE_PORT", "9999")
    assert load_settings({}).port == 8084
    assert load_settings().port == 9999


def test_resolved_settings_have_their_urls_and_secrets() -> None:
    s = resolved_settings()
    assert isinstance(s, ResolvedSettings)
    assert (s.database_url, s.redis_url, s.admin_token) == ("postgresql://db/shop", "redis://cache:6379/0", "admin")
    with pytest.raises(SettingsError, match=r"not resolved: database_url \(COMMERCE_DATABASE_URL\)"):
        load_settings({"COMMERCE_REDIS_URL": "redis://cache:6379/0"}).resolved(
            admin_token="admin", server_secret="server", jwt_secret="jwt")
    with pytest.raises(SettingsError, match="jwt_public_key"):
        resolved_settings(jwt_secret=None)
    assert resolved_settings(jwt_secret=None, jwt_public_key="-----BEGIN PUBLIC KEY-----").jwt_secret is None


def test_the_ingress_and_the_actors_are_never_given_unresolved_settings() -> None:
    from actors.deploy import deploy_actors
    from serve_app import build_app

    for build in (build_app, deploy_actors):
        with pytest.raises(SettingsError, match="not resolved"):
            build(load_settings({}))  # refused before Ray is asked for anything


def test_a_copy_is_checked_as_a_new_one_is() -> None:
    s = resolved_settings(replicas=2)
    assert s.replace(port=9000).port == 9000 and isinstance(s.replace(port=9000), ResolvedSettings)
    assert s.port == 8084  # frozen: the copy is another object
    for bad in ({"request_timeout": 0}, {"max_replicas": 1}, {"port": "eighty"}, {"database_url": None}):
        with pytest.raises(SettingsError):
            s.replace(**bad)
    with pytest.raises(SettingsError, match="request_timeout"):
        load_settings({}).replace(request_timeout=0.0)


def test_settings_survive_a_pickle_round_trip() -> None:
    for s in (load_settings({"RAY_ADDRESS": "auto", "COMMERCE_DATA_DIR": "/srv/commerce"}), resolved_settings()):
        copy = pickle.loads(pickle.dumps(s))
        assert copy == s and hash(copy) == hash(s) and type(copy) is type(s)
        assert copy.ray_address == s.ray_address and copy.data_dir == s.data_dir
