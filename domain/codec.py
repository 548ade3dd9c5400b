"""Conversion of frozen dataclasses to JSON-ready primitives and back, driven by type hints.

Events and snapshots hold UUIDs, Decimals, datetimes, enums, tuples and nested dataclasses; JSON holds
strings, numbers, lists and objects. Decimals travel as strings so that no amount is ever a float.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

JSON = Any


def to_primitive(value: Any) -> JSON:
    """Turn a dataclass (or any supported value) into JSON-ready primitives."""
    try:
        encode = _ENCODERS[type(value)]
    except KeyError:
        encode = _ENCODERS[type(value)] = _encoder(type(value))
    return encode(value)


def from_primitive(tp: Any, data: JSON) -> Any:
    """Rebuild a value of type ``tp`` from primitives produced by :func:`to_primitive`."""
    try:
        decode = _DECODERS[tp]
    except KeyError:
        decode = _DECODERS[tp] = _decoder(tp)
    return decode(data)


# What each type becomes, worked out once per type from the checks below and kept: an event is encoded on
# every write and a saga's row on every step, and walking those checks for every value of every field was
# a sixteenth of the order shard's CPU (docs/benchmarks.md, eighteenth round).
_ENCODERS: dict[type, Callable[[Any], JSON]] = {}
_DECODERS: dict[Any, Callable[[JSON], Any]] = {}


def _same(value: Any) -> Any:
    return value


def _value(value: enum.Enum) -> Any:
    return value.value


def _isoformat(value: dt.datetime) -> str:
    return value.isoformat()


def _items(value: collections.abc.Iterable[Any]) -> list[JSON]:
    return [to_primitive(v) for v in value]


def _mapping(value: collections.abc.Mapping[Any, Any]) -> dict[str, JSON]:
    return {str(k): to_primitive(v) for k, v in value.items()}


def _encoder(cls: type) -> Callable[[Any], JSON]:
    if cls is type(None) or issubclass(cls, (bool, int, str, float)):
        return _value if issubclass(cls, enum.Enum) else _same
    if issubclass(cls, enum.Enum):
        return _value
    if issubclass(cls, (uuid.UUID, Decimal)):
        return str
    if issubclass(cls, dt.datetime):
        return _isoformat
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))

        def fields(value: Any) -> dict[str, JSON]:
            return {name: to_primitive(getattr(value, name)) for name in names}
        return fields
    if issubclass(cls, (tuple, list, frozenset, set)):
        return _items
    if issubclass(cls, collections.abc.Mapping):
        return _mapping
    raise TypeError(f"cannot encode {cls.__name__}")


def _decoder(tp: Any) -> Callable[[JSON], Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # One type besides None: JSON does not say which of several a value was (and ``int | str`` is cached
        # as ``str | int``, equal to it).
        inner, *others = [a for a in typing.get_args(tp) if a is not type(None)]
        if others:
            raise TypeError(f"cannot decode {tp!r}: a union of several types")
        return lambda data: None if data is None else from_primitive(inner, data)
    if tp is Any:
        return _same
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        return lambda data: tuple(from_primitive(item_type, v) for v in data)
    if origin in (dict, collections.abc.Mapping):
        key_t, val_t = typing.get_args(tp)
        return lambda data: {from_primitive(key_t, k): from_primitive(val_t, v) for k, v in data.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            fields = tuple((f.name, hints[f.name]) for f in dataclasses.fields(tp))

            def build(data: JSON) -> Any:
                return tp(**{name: from_primitive(hint, data[name]) for name, hint in fields if name in data})
            return build
        if issubclass(tp, enum.Enum) or tp in (uuid.UUID, Decimal, int, str, bool, float):
            return tp
        if tp is dt.datetime:
            return dt.datetime.fromisoformat
    raise TypeError(f"cannot decode {tp!r}")
