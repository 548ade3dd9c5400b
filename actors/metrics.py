"""Prometheus metrics of each actor, handed out as plain data.

Every shard and the projector keep their own registry; ``metrics_samples`` gives its families as data
(:func:`families`), which ``commerce.exposition`` turns into what /metrics serves.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from domain import events as ev
from domain import inventory as inv
from domain import order as o
from domain import saga as sg

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

    def observe(self, order: o.Order | None, saga: sg.Saga | None, records: list[ev.Recorded]) -> None:
        """Count what an order's and its saga's new events say, given their states after them."""
        for r in records:
            e = r.event
            if isinstance(e, o.OrderCreated):
                self.orders.labels("created").inc()
            elif isinstance(e, o.OrderConfirmed):
                self.orders.labels("confirmed").inc()
                if order is not None:
                    self.order_value.inc(float(order.total_amount))
            elif isinstance(e, o.OrderCancelled):
                self.orders.labels("cancelled").inc()
            elif isinstance(e, (sg.SagaCompleted, sg.SagaCompensated)) and saga is not None:
                self.sagas_finished.labels(saga.status.value).inc()
                self.saga_duration.labels(saga.status.value).observe((r.at - saga.created_at).total_seconds())
            elif isinstance(e, sg.SagaParked):
                self.sagas_finished.labels("FAILED").inc()
            elif isinstance(e, (sg.StepSucceeded, sg.StepFailed)):
                outcome = "succeeded" if isinstance(e, sg.StepSucceeded) else "failed"
                self.saga_steps.labels(e.step, e.action.value, outcome).inc()


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

    def count(self, records: list[ev.Recorded]) -> None:
        """Count the units sold and the reservations' outcomes that a SKU's new events record."""
        for r in records:
            e = r.event
            if isinstance(e, inv.ReservationCommitted):
                self.units_sold.inc(e.quantity)
            if isinstance(e, (inv.StockReserved, inv.ReservationReleased, inv.ReservationExpired,
                              inv.ReservationCommitted, inv.SaleReturned)):
                self.reservations.labels(type(e).__name__).inc()


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
