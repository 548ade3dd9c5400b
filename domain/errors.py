"""The root of the domain's error hierarchy; each context derives its own errors from it."""

from __future__ import annotations

from typing import Any


class Remade(Exception):
    """An exception that is pickled as the call that made it, so that it crosses a process boundary (a Ray
    call) whole: its type, its message and its attributes. ``Exception`` pickles only ``args``, which a
    subclass with its own constructor does not take back."""

    _made_with: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls, *args, **kwargs)
        self._made_with = (args, kwargs)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._made_with
        return _remake, (type(self), args, kwargs)


def _remake(cls: type[Exception], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    return cls(*args, **kwargs)


class DomainError(Remade):
    """A command that the current state of an aggregate forbids."""


class NotFound(DomainError):
    """The aggregate or the item a command names does not exist."""


class TransitionForbidden(DomainError):
    """The aggregate's status does not allow the command."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status
