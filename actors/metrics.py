"""Prometheus metrics of each process, and the merge that /metrics serves.

Every shard, the projector and each HTTP replica keep their own registry; ``/metrics`` collects the
text of all of them and adds up samples with the same name and labels, so counters and histograms
are totals over the whole service.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


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


def merge(texts: Iterable[str]) -> str:
    """Add up the samples of several Prometheus text expositions."""
    families: OrderedDict[str, tuple[str, str, OrderedDict[tuple[str, tuple[tuple[str, str], ...]], float]]] = OrderedDict()
    for text in texts:
        for family in text_string_to_metric_families(text):
            kind = family.type
            _, _, samples = families.setdefault(family.name, (kind, family.documentation, OrderedDict()))
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = samples.get(key, 0.0) + s.value
    lines = []
    for name, (kind, doc, samples) in families.items():
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
