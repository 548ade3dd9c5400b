"""The event envelope, the registry of event types and the upcasting of old schema versions.

Every event is a frozen, slotted dataclass registered under its class name with a schema version.
Stored events are never rewritten: an event written under an older schema is upcast when it is read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from domain.codec import from_primitive, to_primitive


class DomainEvent:
    """Base class of every event; subclasses are ``@event`` dataclasses."""

    __slots__ = ()
    schema_version: ClassVar[int] = 1


E = TypeVar("E", bound=type[DomainEvent])

_EVENT_TYPES: dict[str, type[DomainEvent]] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def event(cls: E) -> E:
    """Register an event class; its name is its stored ``event_type``."""
    if cls.__name__ in _EVENT_TYPES and _EVENT_TYPES[cls.__name__] is not cls:
        raise ValueError(f"event type {cls.__name__} registered twice")
    _EVENT_TYPES[cls.__name__] = cls
    return cls


def upcaster(event_type: str, from_version: int) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Register a function that lifts the data of ``event_type`` from ``from_version`` to the next one."""

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


class UnknownEventType(KeyError):
    """A stored event names a type this code does not know."""


def event_type_of(e: DomainEvent) -> str:
    return type(e).__name__


def encode(e: DomainEvent) -> dict[str, Any]:
    data: dict[str, Any] = to_primitive(e)
    return data


def decode(event_type: str, schema_version: int, data: dict[str, Any]) -> DomainEvent:
    """Decode stored data into an event, upcasting it to the current schema first."""
    try:
        cls = _EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None
    version = schema_version
    while version < cls.schema_version:
        data = _UPCASTERS[(event_type, version)](dict(data))
        version += 1
    decoded: DomainEvent = from_primitive(cls, data)
    return decoded


@dataclasses.dataclass(frozen=True, slots=True)
class Metadata:
    """Who and what caused an event: the command, the business flow (correlation) and the cause."""

    event_id: uuid.UUID
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    occurred_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    """An event as the store holds it: stream, version, metadata and, once stored, its global position."""

    aggregate_id: uuid.UUID
    aggregate_type: str
    version: int
    event: DomainEvent
    metadata: Metadata
    position: int | None = None

    @property
    def event_type(self) -> str:
        return event_type_of(self.event)

    @property
    def at(self) -> dt.datetime:
        return self.metadata.occurred_at
