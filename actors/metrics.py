"""Prometheus metrics of each actor, and the exposition that /metrics serves.

Every shard and the projector keep their own registry. ``/metrics`` asks each actor for its samples as
plain data (:func:`families`, through the actor's ``metrics_samples``), adds the service-wide figures
read from PostgreSQL and Redis, and renders all of it with prometheus_client: a :class:`Collector`
yields one metric family per name, in which every actor's series carry a ``shard`` label
(``order-0``, ``inventory-1``, ``projector``). Series are never added up across actors: an actor
that restarts resets its own counters only, which ``rate()`` and ``increase()`` handle per series,
so queries sum after the rate (``sum(rate(...))``). Label values are written in lower case,
CamelCase split with underscores (``COMPLETED`` -> ``completed``, ``StockReserved`` ->
``stock_reserved``), and no ``_created`` samples are written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from actors.client import ActorDirectory

SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
KINDS = ("counter", "gauge", "histogram")
MEDIA_TYPE = "text/plain; version=0.0.4"  # what generate_latest writes


class OrderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.orders = Counter("commerce_orders_total", "Orders by the status they reached", ["status"],
                              registry=self.registry)
        self.order_value = Counter("commerce_order_value_total", "Sum of the totals of confirmed orders",
                                   registry=self.registry)
        self.saga_duration = Histogram("commerce_saga_duration_seconds", "Saga start to terminal state",
                                       ["outcome"], buckets=SAGA_BUCKETS, registry=self.registry)
        self.sagas_finished = Counter("commerce_sagas_finished_total", "Sagas that reached a terminal state",
                                      ["status"], registry=self.registry)
        self.saga_steps = Counter("commerce_saga_steps_total", "Saga step attempts by outcome",
                                  ["step", "action", "outcome"], registry=self.registry)
        self.active_entities = Gauge("commerce_active_entities", "Entities in memory", ["kind"],
                                     registry=self.registry)


class InventoryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.conflicts = Counter("commerce_inventory_conflicts_total",
                                 "Optimistic-locking conflicts on SKU streams (reload and decide again)",
                                 registry=self.registry)
        self.units_sold = Counter("commerce_inventory_units_sold_total", "Units committed to orders",
                                  registry=self.registry)
        self.reservations = Counter("commerce_inventory_reservations_total", "Reservations by outcome",
                                    ["outcome"], registry=self.registry)
        self.active_entities = Gauge("commerce_active_entities", "Entities in memory", ["kind"],
                                     registry=self.registry)


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


# --- samples as data: what an actor returns over Ray ---------------------------------------------

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Series:
    """One label set of a family: its value, or for a histogram its cumulative buckets and sum."""

    labels: Labels
    value: float = 0.0
    buckets: tuple[tuple[str, float], ...] = ()  # (le, cumulative count), ascending, the last one "+Inf"
    sum: float = 0.0


@dataclasses.dataclass(frozen=True)
class Family:
    """A metric family as plain, picklable data; ``name`` as prometheus_client names it (a counter's
    without ``_total``)."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    series: tuple[Series, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: a {self.kind} cannot be exposed, only {', '.join(KINDS)}")


def single(kind: str, name: str, help: str, value: float) -> Family:
    """A family of one series without labels."""
    return Family(name, kind, help, (Series((), float(value)),))


def by_label(kind: str, name: str, help: str, label: str, values: Mapping[str, float]) -> Family:
    """A family with one series per value of ``label``."""
    return Family(name, kind, help, tuple(Series(((label, v),), float(n)) for v, n in values.items()))


def families(metrics: Iterable[Metric]) -> list[Family]:
    """A registry's ``collect()`` (or parsed exposition text) as data; ``_created`` samples are dropped (in
    text they come as gauges of their own, ``<counter or histogram>_created``)."""
    metrics = list(metrics)
    created = {f"{x.name}_created" for x in metrics if x.type in ("counter", "histogram")}
    out = []
    for metric in metrics:
        if metric.type == "gauge" and metric.name in created:
            continue
        if metric.type in ("counter", "gauge"):
            wanted = f"{metric.name}_total" if metric.type == "counter" else metric.name
            series = tuple(Series(_labels(s.labels), float(s.value)) for s in metric.samples if s.name == wanted)
        elif metric.type == "histogram":
            buckets: OrderedDict[Labels, list[tuple[str, float]]] = OrderedDict()
            sums: dict[Labels, float] = {}
            for s in metric.samples:
                if s.name == f"{metric.name}_bucket":
                    key = _labels({k: v for k, v in s.labels.items() if k != "le"})
                    buckets.setdefault(key, []).append((s.labels["le"], float(s.value)))
                elif s.name == f"{metric.name}_sum":
                    sums[_labels(s.labels)] = float(s.value)
            series = tuple(Series(key, buckets=tuple(b), sum=sums.get(key, 0.0)) for key, b in buckets.items())
        else:
            raise ValueError(f"{metric.name}: a {metric.type} cannot be exposed, only {', '.join(KINDS)}")
        out.append(Family(metric.name, metric.type, metric.documentation, series))
    return out


def _labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))  # parsed text does not keep the declared order


class _Shard(Protocol):
    @property
    def KIND(self) -> str: ...

    @property
    def metrics(self) -> OrderMetrics | InventoryMetrics: ...

    @property
    def host(self) -> Any: ...

    async def start(self) -> bool: ...


class _Projector(Protocol):
    @property
    def registry(self) -> CollectorRegistry: ...

    async def status(self) -> dict[str, Any]: ...


async def shard_samples(shard: _Shard) -> list[Family]:
    """What ``Shard.metrics_samples`` returns: the shard's registry as data."""
    await shard.start()
    shard.metrics.active_entities.labels(shard.KIND).set(shard.host.active)
    return families(shard.metrics.registry.collect())


async def projector_samples(projector: _Projector) -> list[Family]:
    """What ``Projector.metrics_samples`` returns: its lag gauges, refreshed, as data."""
    await projector.status()
    return families(projector.registry.collect())


def shard_label(actor_name: str) -> str:
    """The ``shard`` label of an actor: order-shard-0 -> order-0, projector -> projector."""
    return actor_name.replace("-shard-", "-")


async def actor_families(directory: ActorDirectory) -> dict[str, list[Family]]:
    """Every actor's families by ``shard`` label; an actor that does not answer is left out (its series
    disappear from this scrape). An actor without ``metrics_samples`` (started before it existed) is read
    through its ``metrics_text``."""
    from actors.client import ServiceUnavailable, call

    async def one(name: str, ref: Any) -> tuple[str, list[Family] | None]:
        try:
            try:
                found: list[Family] = await call(ref, "metrics_samples", timeout=directory.timeout)
            except AttributeError:  # the handle knows no such method
                text = await call(ref, "metrics_text", timeout=directory.timeout)
                found = families(text_string_to_metric_families(text))
            return name, found
        except ServiceUnavailable:
            return name, None

    answers = await asyncio.gather(*[one(shard_label(ref.name), ref) for ref in directory.all])
    return {name: found for name, found in answers if found is not None}


# --- the exposition --------------------------------------------------------------------------------


class Collector:
    """The families of every actor, each series labelled with its actor's ``shard``, and the service-wide
    families (no ``shard``); one family per name. Raises ValueError on a name used by two families
    (of two kinds, or by an actor and the service, or a sample name of one that is another's)."""

    def __init__(self, per_actor: Mapping[str, Sequence[Family]], service: Sequence[Family] = ()) -> None:
        self.per_actor = per_actor
        self.service = service

    def collect(self) -> Iterator[Metric]:
        merged: OrderedDict[str, tuple[str, str, list[Series]]] = OrderedDict()
        for shard, found in self.per_actor.items():
            for family in found:
                self._add(merged, family, (("shard", shard),))
        actor_names = set(merged)
        for family in self.service:
            if family.name in actor_names:
                kind = merged[family.name][0]
                raise ValueError(f"{family.name} is both an actor's {kind} and a service-wide {family.kind}")
            self._add(merged, family, ())
        _check_exposed_names(merged)
        for name, (kind, help, series) in merged.items():
            yield _metric(name, kind, help, series)

    @staticmethod
    def _add(merged: OrderedDict[str, tuple[str, str, list[Series]]], family: Family, extra: Labels) -> None:
        kind, _, series = merged.setdefault(family.name, (family.kind, family.help, []))
        if kind != family.kind:
            raise ValueError(f"{family.name} is both a {kind} and a {family.kind}")
        for s in family.series:
            if any(k == "shard" for k, _ in s.labels) and extra:
                raise ValueError(f"{family.name} has a shard label of its own")
            labels = tuple(sorted((k, label_value(v)) for k, v in (*s.labels, *extra)))
            series.append(dataclasses.replace(s, labels=labels))


def label_value(value: str) -> str:
    """Label values in one case: lower, CamelCase split with underscores."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", value).lower()


def _sample_names(name: str, kind: str) -> set[str]:
    return {"counter": {f"{name}_total"}, "gauge": {name},
            "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}[kind]


def _check_exposed_names(merged: Mapping[str, tuple[str, str, list[Series]]]) -> None:
    owner: dict[str, str] = {}
    for name, (kind, _, _) in merged.items():
        for exposed in _sample_names(name, kind) | {name}:
            if owner.setdefault(exposed, name) != name:
                raise ValueError(f"{exposed} is written by both {owner[exposed]} and {name}")


def _metric(name: str, kind: str, help: str, series: list[Series]) -> Metric:
    names = {tuple(k for k, _ in s.labels) for s in series}
    if len(names) > 1:
        raise ValueError(f"{name}: series with different label names {sorted(names)}")
    label_names = list(next(iter(names), ()))
    family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if kind == "counter":
        family = CounterMetricFamily(name, help, labels=label_names)
        for s in series:
            family.add_metric([v for _, v in s.labels], s.value)
    elif kind == "gauge":
        family = GaugeMetricFamily(name, help, labels=label_names)
        for s in series:
            family.add_metric([v for _, v in s.labels], s.value)
    else:
        family = HistogramMetricFamily(name, help, labels=label_names)
        for s in series:
            family.add_metric([v for _, v in s.labels], list(s.buckets), s.sum)
    return family


def exposition(per_actor: Mapping[str, Sequence[Family]], service: Sequence[Family] = ()) -> bytes:
    """The Prometheus text of /metrics, rendered by prometheus_client from a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(per_actor, service))
    return generate_latest(registry)


def merge(texts: Iterable[str]) -> str:
    """Add up the samples of several Prometheus text expositions.

    No longer used by /metrics (see :class:`Collector`); kept for tests/unit/test_events_and_metrics.py.
    """
    merged: OrderedDict[str, tuple[str, str, OrderedDict[tuple[str, tuple[tuple[str, str], ...]], float]]] = OrderedDict()
    for text in texts:
        for family in text_string_to_metric_families(text):
            kind = family.type
            _, _, samples = merged.setdefault(family.name, (kind, family.documentation, OrderedDict()))
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = samples.get(key, 0.0) + s.value
    lines = []
    for name, (kind, doc, samples) in merged.items():
        exposed = f"{name}_total" if kind == "counter" else name  # as prometheus_client writes it
        lines.append(f"# HELP {exposed} {doc}")
        lines.append(f"# TYPE {exposed} {kind}")
        for (sample, labels), value in samples.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{label_text}}} {_number(value)}" if label_text else f"{sample} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}.0" if abs(value) < 1e15 else repr(value)
