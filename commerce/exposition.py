"""The exposition that /metrics serves, built in the ingress from every actor's samples.

``/metrics`` asks each actor for its samples as plain data (``actors.metrics.families``, through the
actor's ``metrics_samples``), adds the service-wide figures read from PostgreSQL and Redis, and renders
all of it with prometheus_client: a :class:`Collector` yields one metric family per name, in which
every actor's series carry a ``shard`` label (``order-0``, ``inventory-1``, ``projector``). Series are
never added up across actors: an actor that restarts resets its own counters only, which ``rate()``
and ``increase()`` handle per series, so queries sum after the rate (``sum(rate(...))``). Label values
are written in lower case, CamelCase split with underscores (``COMPLETED`` -> ``completed``,
``StockReserved`` -> ``stock_reserved``), and no ``_created`` samples are written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import Family, Labels, Series, families
from actors.watch import Watch

if TYPE_CHECKING:
    from actors.directory import ActorDirectory

_WATCH = Watch("metrics of the actors")  # an actor's own error, by shard label


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
            _WATCH.succeeded(name)
            return name, found
        except ServiceUnavailable:  # lost or slow
            return name, None
        except Exception as e:  # its own error (its store down while it starts, or a bug): the others are shown
            _WATCH.fail(name, e)  # logged once per change, not once per scrape
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
