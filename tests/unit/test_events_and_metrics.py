from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from commerce.exposition import merge
from domain import events as ev
from domain import inventory as inv


def test_events_round_trip_through_primitives() -> None:
    e = inv.StockReserved(uuid.uuid4(), 3, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "order:1")
    assert ev.decode("StockReserved", 1, ev.encode(e)) == e
    s = inv.StockSet(uuid.uuid4(), 5, Decimal("29.99"), "Mug")
    assert ev.encode(s)["price"] == "29.99" and ev.decode("StockSet", 1, ev.encode(s)) == s


def test_old_schema_versions_are_upcast_on_read() -> None:
    @ev.event
    @dataclasses.dataclass(frozen=True, slots=True)
    class ParcelWeighed(ev.DomainEvent):
        schema_version = 2
        grams: int

    @ev.upcaster("ParcelWeighed", 1)
    def kilograms_to_grams(data: dict[str, Any]) -> dict[str, Any]:
        return {"grams": int(Decimal(data.pop("kilograms")) * 1000)}

    assert ev.decode("ParcelWeighed", 1, {"kilograms": "1.5"}) == ParcelWeighed(1500)


def test_unknown_event_types_are_reported() -> None:
    try:
        ev.decode("NoSuchEvent", 1, {})
    except ev.UnknownEventType as e:
        assert "NoSuchEvent" in str(e)
    else:
        raise AssertionError("decoded an unknown type")


def test_metrics_of_several_processes_add_up() -> None:
    a = '# HELP x_total X\n# TYPE x_total counter\nx_total{status="ok"} 2.0\n'
    b = '# HELP x_total X\n# TYPE x_total counter\nx_total{status="ok"} 3.0\nx_total{status="no"} 1.0\n'
    merged = merge([a, b])
    assert 'x_total{status="ok"} 5.0' in merged and 'x_total{status="no"} 1.0' in merged
    assert merged.count("# TYPE x_total counter") == 1
