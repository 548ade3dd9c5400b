"""What events, snapshots and saga rows become as JSON, branch by branch: the stored form must not change
when the codec does (events written by one release are read by the next)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal

import pytest

from domain.codec import from_primitive, to_primitive
from store.event_store import json_text


class Colour(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    SMALL = "s"


class Rank(enum.IntEnum):
    FIRST = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    sku: uuid.UUID
    price: Decimal


@dataclasses.dataclass(frozen=True, slots=True)
class Parcel:
    parcel_id: uuid.UUID
    colour: Colour
    size: Size
    rank: Rank
    at: dt.datetime
    lines: tuple[Line, ...]
    counts: dict[uuid.UUID, int]
    note: str | None = None
    fragile: bool = False
    weight: float = 0.0
    tags: tuple[str, ...] = ()


SKU = uuid.UUID("12345678-1234-5678-1234-567812345678")
PARCEL = Parcel(uuid.UUID(int=7), Colour.RED, Size.SMALL, Rank.FIRST,
                dt.datetime(2026, 11, 28, 9, 30, 0, 120, tzinfo=dt.UTC), (Line(SKU, Decimal("29.90")),),
                {SKU: 3}, None, True, 1.5, ("a", "b"))
PRIMITIVE = {
    "parcel_id": "00000000-0000-0000-0000-000000000007", "colour": "red", "size": "s", "rank": 1,
    "at": "2026-11-28T09:30:00.000120+00:00",
    "lines": [{"sku": "12345678-1234-5678-1234-567812345678", "price": "29.90"}],
    "counts": {"12345678-1234-5678-1234-567812345678": 3}, "note": None, "fragile": True, "weight": 1.5,
    "tags": ["a", "b"],
}


def typed(value: object) -> object:
    """``value`` with the type of every leaf, so that True is not 1 and 1.5 is not 1 or "1.5"."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return type(value), value


def test_a_dataclass_becomes_json_primitives_field_by_field() -> None:
    encoded = to_primitive(PARCEL)
    assert typed(encoded) == typed(PRIMITIVE)  # an enum's value, not the enum; True, not 1
    assert list(encoded) == list(PRIMITIVE)  # in the order of the fields
    assert typed(to_primitive(PARCEL)) == typed(PRIMITIVE)  # the second time, from the encoders kept


def test_json_primitives_become_the_dataclass_again() -> None:
    assert from_primitive(Parcel, PRIMITIVE) == PARCEL
    decoded = from_primitive(Parcel, {k: v for k, v in PRIMITIVE.items() if k not in {"note", "tags"}})
    assert decoded.note is None and decoded.tags == ()  # a field missing from the data takes its default


def test_plain_values_and_collections() -> None:
    assert typed([to_primitive(v) for v in (None, True, 3, "x", 2.5)]) == typed([None, True, 3, "x", 2.5])
    assert to_primitive(dt.datetime(2026, 1, 1)) == "2026-01-01T00:00:00"
    assert sorted(to_primitive(frozenset({1, 2}))) == [1, 2] and to_primitive([Colour.RED]) == ["red"]
    assert to_primitive({1: Decimal("1.0")}) == {"1": "1.0"}
    assert from_primitive(dict[str, int], {"a": 1}) == {"a": 1}
    assert from_primitive(dt.datetime | None, None) is None


@pytest.mark.parametrize("value", [dt.date(2026, 1, 1), object(), Line, b"bytes"])
def test_what_json_cannot_hold_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        to_primitive(value)


@pytest.mark.parametrize("tp", [dt.date, int | str, str | int | None])
def test_a_type_the_codec_cannot_decode_is_refused(tp: object) -> None:
    """A union of several types among them: JSON does not say which one a value was."""
    with pytest.raises(TypeError):
        from_primitive(tp, "5")


@pytest.mark.parametrize("value", [PRIMITIVE, {"n": 2**70}, {1: "a key that is not a string"}, [], "é\u2028",
                                   {"deep": [[[[{"x": 1e-7}]]]]}])
def test_a_json_parameter_reads_back_as_the_json_module_wrote_it(value: object) -> None:
    assert typed(json.loads(json_text(value))) == typed(json.loads(json.dumps(value)))


@pytest.mark.parametrize("value", [Decimal("1.00"), dt.date(2026, 1, 1), dt.datetime(2026, 1, 1), PARCEL, object()])
def test_a_json_parameter_json_cannot_hold_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        json_text({"value": value})
