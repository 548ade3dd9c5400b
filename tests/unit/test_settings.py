from __future__ import annotations

from pathlib import Path

import pytest

from commerce.settings import Settings, SettingsError, load_settings


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
