"""Conversion of frozen dataclasses to JSON-ready primitives and back, driven by type hints.

Events and snapshots hold UUIDs, Decimals, datetimes, enums, tuples and nested dataclasses; JSON holds
strings, numbers, lists and objects. Decimals travel as strings so that no amount is ever a float.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import types
import typing
import uuid
from decimal import Decimal
from typing import Any

JSON = Any


def to_primitive(value: Any) -> JSON:
    """Turn a dataclass (or any supported value) into JSON-ready primitives."""
    if value is None or isinstance(value, (bool, int, str, float)):
        if isinstance(value, enum.Enum):
            return value.value
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_primitive(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list, frozenset, set)):
        return [to_primitive(v) for v in value]
    if isinstance(value, collections.abc.Mapping):
        return {str(k): to_primitive(v) for k, v in value.items()}
    raise TypeError(f"cannot encode {type(value).__name__}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_primitive(tp: Any, data: JSON) -> Any:
    """Rebuild a value of type ``tp`` from primitives produced by :func:`to_primitive`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return from_primitive(args[0], data)
    if tp is Any:
        return data
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        return tuple(from_primitive(item_type, v) for v in data)
    if origin in (dict, collections.abc.Mapping):
        key_t, val_t = typing.get_args(tp)
        return {from_primitive(key_t, k): from_primitive(val_t, v) for k, v in data.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            kwargs = {f.name: from_primitive(hints[f.name], data[f.name])
                      for f in dataclasses.fields(tp) if f.name in data}
            return tp(**kwargs)
        if issubclass(tp, enum.Enum):
            return tp(data)
        if tp is uuid.UUID:
            return uuid.UUID(data)
        if tp is Decimal:
            return Decimal(data)
        if tp is dt.datetime:
            return dt.datetime.fromisoformat(data)
        if tp in (int, str, bool, float):
            return tp(data)
    raise TypeError(f"cannot decode {tp!r}")
