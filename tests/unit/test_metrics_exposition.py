"""/metrics as prometheus_client renders it: every actor's samples as data, one family per name, a `shard`
label on every actor's series, label values in one case, no `_created` samples, and every metric the
Grafana dashboard queries present. Built from the actors' own metric objects (an inventory shard driven
over the in-memory event store), without Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib.util
import json
import pickle
import re
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from actors import metrics as m
from actors.client import ServiceUnavailable
from actors.inventory_shard import InventoryShard
from actors.order_shard import OrderShard
from actors.projector import Projector
from actors.routing import PROJECTOR_NAME, inventory_shard_name, order_shard_name
from commerce import exposition as ex
from commerce.health import service_families
from commerce.settings import Settings
from domain import saga as sg
from store.errors import StoreUnavailable
from store.memory import InMemoryEventStore

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SETTINGS = Settings(database_url="unused", redis_url="unused", server_secret="s")


@dataclasses.dataclass
class Scrape:
    text: str
    per_actor: dict[str, list[m.Family]]  # by shard label
    service: list[m.Family]

    def samples(self) -> Iterator[tuple[str, Sample]]:
        """(family type, sample) of every sample of the exposition."""
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                yield family.type, sample

    def actor_family_names(self) -> set[str]:
        return {f.name for found in self.per_actor.values() for f in found}


def started(actor: Any) -> None:
    """An actor that need not connect to anything: its start() returns at once."""
    actor._started = asyncio.get_running_loop().create_future()
    actor._started.set_result(None)


async def inventory_shard() -> InventoryShard:
    """An inventory shard over the in-memory store, after a sale and a released reservation."""
    shard = InventoryShard(SETTINGS, 0)
    shard.use(InMemoryEventStore())
    started(shard)
    pid, soon = uuid.uuid4(), dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    await shard.set_stock(pid, 10, "2.50", "Mug")
    sold, released = uuid.uuid4(), uuid.uuid4()
    await shard.reserve(pid, sold, 3, soon, "order:1")
    await shard.commit(pid, sold, "order:1")
    await shard.reserve(pid, released, 1, soon, "svc")
    await shard.release(pid, released, "svc")
    assert isinstance(shard.metrics, m.InventoryMetrics)
    shard.metrics.conflicts.inc(2)  # conflicts take two writers of one SKU; here, counted as the shard does
    return shard


def order_shard(index: int, orders: int) -> OrderShard:
    """An order shard whose metrics saw what ``OrderShard._observe`` counts, with the domain's own values."""
    shard = OrderShard(SETTINGS, index)
    shard.host = types.SimpleNamespace(active=orders)  # type: ignore[assignment]
    started(shard)
    metrics = shard.metrics
    assert isinstance(metrics, m.OrderMetrics)
    for status, n in (("created", orders), ("confirmed", orders - 1), ("cancelled", 1)):
        metrics.orders.labels(status).inc(n)
    metrics.order_value.inc(59.98 * (orders - 1))
    for status, seconds in ((sg.SagaStatus.COMPLETED, 1.7), (sg.SagaStatus.COMPLETED, 0.4),
                            (sg.SagaStatus.COMPENSATED, 42.0)):
        metrics.sagas_finished.labels(status.value).inc()
        metrics.saga_duration.labels(status.value).observe(seconds)
    metrics.sagas_finished.labels("FAILED").inc()  # as _observe counts a parked saga
    for step in sg.STEPS:
        metrics.saga_steps.labels(step, sg.Phase.EXECUTE.value, "succeeded").inc(orders)
    metrics.saga_steps.labels("process_payment", sg.Phase.EXECUTE.value, "failed").inc()
    metrics.saga_steps.labels("reserve_inventory", sg.Phase.COMPENSATE.value, "succeeded").inc()
    return shard


def projector() -> Projector:
    p = Projector(SETTINGS)

    async def status() -> dict[str, Any]:  # what Projector.status sets from its runners
        for name, events, seconds in (("order_views", 3, 0.8), ("inventory_views", 0, 0.0)):
            p.lag_events.labels(name).set(events)
            p.lag_seconds.labels(name).set(seconds)
            p.errors.labels(name).set(0)
        return {}

    p.status = status  # type: ignore[method-assign]
    return p


async def fake_scrape() -> Scrape:
    """The exposition of two order shards, an inventory shard and the projector, with the service-wide figures,
    through the same functions /metrics uses."""
    actors: dict[str, list[m.Family]] = {
        ex.shard_label(order_shard_name(0)): await m.shard_samples(order_shard(0, 5)),
        ex.shard_label(order_shard_name(1)): await m.shard_samples(order_shard(1, 2)),
        ex.shard_label(inventory_shard_name(0)): await m.shard_samples(await inventory_shard()),
        ex.shard_label(PROJECTOR_NAME): await m.projector_samples(projector()),
    }
    service = service_families(
        {"RUNNING": 2, "COMPLETED": 4, "COMPENSATED": 1, "FAILED": 1}, 12.5,
        {"operations": {"create": 6, "set_item": 9, "remove_item": 2, "checkout": 4},
         "created": 6, "checked_out": 4, "abandoned": 1, "open": 2},
        {"sold": 3, "on_hand": 7, "reserved": 0, "skus": 1}, 24 * 3600.0)
    return Scrape(ex.exposition(actors, service).decode(), actors, service)


@pytest.fixture
async def scrape() -> Scrape:
    return await fake_scrape()


# --- the dashboard -------------------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    return [t["expr"] for p in panels(json.loads(DASHBOARD.read_text())["panels"]) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (ours and Ray's all start with commerce_ or ray_)."""
    return set(re.findall(r"\b(?:commerce|ray)_[a-zA-Z0-9_:]*", expr))


def test_the_dashboard_shows_the_seed_metrics_the_kpis_and_serves_requests() -> None:
    names = set().union(*map(metric_names, dashboard_exprs()))
    for wanted in ("commerce_orders_total", "commerce_saga_duration_seconds_bucket", "commerce_inventory_conflicts_total",
                   "commerce_cart_operations_total", "commerce_projection_lag_seconds",
                   "ray_serve_num_http_requests_total", "ray_serve_http_request_latency_ms_bucket"):
        assert wanted in names, wanted
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Orders per hour", "Cart abandonment rate", "Inventory turnover (30 days)",
            "Saga success rate (1 hour)"} <= titles


def test_every_commerce_metric_of_the_dashboard_is_in_the_exposition(scrape: Scrape) -> None:
    exposed = {s.name for _, s in scrape.samples()}
    queried = set().union(*map(metric_names, dashboard_exprs()))
    missing = sorted(n for n in queried if n.startswith("commerce_") and n not in exposed)
    assert not missing, f"the dashboard queries metrics /metrics does not have: {missing}"


def test_every_serve_metric_of_the_dashboard_is_one_ray_exports() -> None:
    """Serve's metrics do not come through /metrics; Ray's own dashboards query them by the exported names."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin is not None
    ray_dir = Path(spec.origin).parent
    sources = [*ray_dir.glob("dashboard/modules/metrics/dashboards/*.py"), *ray_dir.glob("serve/**/*.py")]
    text = "\n".join(p.read_text(errors="replace") for p in sources)
    queried = set().union(*map(metric_names, dashboard_exprs()))
    serve = sorted(n for n in queried if n.startswith("ray_"))
    assert serve, "the dashboard shows no Ray Serve metric"
    unknown = [n for n in serve if not n.startswith("ray_serve_") or n not in text]
    assert not unknown, f"Ray {ray_dir} exports no such metrics: {unknown}"


# --- the exposition ------------------------------------------------------------------------------


def test_each_family_name_is_written_once(scrape: Scrape) -> None:
    typed = re.findall(r"^# TYPE (\S+) ", scrape.text, re.M)
    assert len(typed) == len(set(typed))
    parsed = [f.name for f in text_string_to_metric_families(scrape.text)]  # counters without _total
    assert len(parsed) == len(set(parsed)), sorted(n for n in parsed if parsed.count(n) > 1)
    assert "commerce_inventory_units_sold" in parsed and "commerce_inventory_units_sold_net" in parsed


def test_no_created_samples(scrape: Scrape) -> None:
    created = [line for line in scrape.text.splitlines()
               if line.split("{")[0].split(" ")[0].endswith("_created") or re.match(r"# \w+ \S+_created ", line)]
    assert not created, created


def test_label_values_are_lower_case(scrape: Scrape) -> None:
    values = {(s.name, k, v) for _, s in scrape.samples() for k, v in s.labels.items() if k != "le"}
    upper = sorted(x for x in values if x[2] != x[2].lower())
    assert not upper, upper
    assert ("commerce_orders_total", "status", "created") in values
    assert ("commerce_sagas", "status", "completed") in values
    assert ("commerce_sagas_finished_total", "status", "failed") in values
    assert ("commerce_saga_duration_seconds_count", "outcome", "compensated") in values
    assert ("commerce_inventory_reservations_total", "outcome", "stock_reserved") in values


def test_every_actor_series_carries_its_shard(scrape: Scrape) -> None:
    actor_families = scrape.actor_family_names()
    shards: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape.text):
        for s in family.samples:
            if family.name in actor_families:
                assert s.labels.get("shard") in scrape.per_actor, s
                shards.setdefault(family.name, set()).add(s.labels["shard"])
            else:
                assert "shard" not in s.labels, s
    assert shards["commerce_orders"] == {"order-0", "order-1"}
    assert shards["commerce_active_entities"] == {"order-0", "order-1", "inventory-0"}
    assert shards["commerce_projection_lag_seconds"] == {"projector"}
    assert set(scrape.per_actor) == {"order-0", "order-1", "inventory-0", "projector"}


def test_actors_are_not_added_up(scrape: Scrape) -> None:
    """A restarted shard resets its own series only: each shard's counter stays its own."""
    created = {s.labels["shard"]: s.value for _, s in scrape.samples()
               if s.name == "commerce_orders_total" and s.labels["status"] == "created"}
    assert created == {"order-0": 5.0, "order-1": 2.0}


def test_the_inventory_shard_counts_what_it_did(scrape: Scrape) -> None:
    found = {(s.name, s.labels.get("outcome")): s.value for _, s in scrape.samples() if s.labels.get("shard") == "inventory-0"}
    assert found[("commerce_inventory_units_sold_total", None)] == 3
    assert found[("commerce_inventory_reservations_total", "reservation_committed")] == 1
    assert found[("commerce_inventory_reservations_total", "reservation_released")] == 1
    assert found[("commerce_active_entities", None)] == 1


def test_a_name_used_twice_is_refused() -> None:
    counter = m.single("counter", "commerce_inventory_units_sold", "Units committed to orders", 3)
    gauge = m.single("gauge", "commerce_inventory_units_sold", "Units sold net of returns", 2)
    with pytest.raises(ValueError, match="both an actor's counter and a service-wide gauge"):
        list(ex.Collector({"inventory-0": [counter]}, [gauge]).collect())
    with pytest.raises(ValueError, match="both a counter and a gauge"):
        list(ex.Collector({"inventory-0": [counter], "inventory-1": [gauge]}).collect())
    with pytest.raises(ValueError, match="written by both"):
        list(ex.Collector({"inventory-0": [counter]}, [m.single("gauge", "commerce_inventory_units_sold_total", "x", 2)]).collect())


async def test_samples_cross_ray_as_plain_data_and_equal_what_the_text_says() -> None:
    shard = order_shard(0, 3)
    found = await m.shard_samples(shard)
    assert pickle.loads(pickle.dumps(found)) == found
    assert m.families(text_string_to_metric_families(m.render(shard.metrics.registry))) == found


async def test_actors_without_metrics_samples_are_read_through_their_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until every actor has ``metrics_samples`` (and while older actors still run), /metrics reads their text;
    an actor that does not answer, or answers with an error, is left out."""
    shard = order_shard(0, 3)
    samples = await m.shard_samples(shard)
    text = m.render(shard.metrics.registry)

    async def call(ref: Any, method: str, *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        if ref.name == "projector":
            raise ServiceUnavailable("actor projector is not running")
        if ref.name == "order-shard-2":  # its start cannot reach PostgreSQL: the actor raises the store's error
            raise StoreUnavailable("the database is unavailable")
        if method == "metrics_samples" and ref.name == "order-shard-1":
            raise AttributeError("'ActorHandle' object has no attribute 'metrics_samples'")
        return samples if method == "metrics_samples" else text

    monkeypatch.setattr("actors.client.call", call)
    refs = [types.SimpleNamespace(name=n) for n in (order_shard_name(0), order_shard_name(1), order_shard_name(2),
                                                     PROJECTOR_NAME)]
    found = await ex.actor_families(types.SimpleNamespace(all=refs, timeout=1.0))  # type: ignore[arg-type]
    assert found == {"order-0": samples, "order-1": samples}
