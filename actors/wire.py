"""What crosses a Ray call: plain results, and domain or store errors as data.

Actor methods return ``{"ok": value}`` or ``{"error": {...}}`` rather than raising, so a business
outcome (insufficient stock, a forbidden transition) is never confused with a dead actor, and the
client raises the same typed error the domain raised.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

from domain import cart, errors, inventory, order, saga
from store import errors as store_errors

P = ParamSpec("P")

_ERRORS: dict[str, type[Exception]] = {}
for module in (errors, inventory, order, saga, cart, store_errors):
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module.__name__:
            _ERRORS[value.__name__] = value

_ATTRIBUTES = ("available", "current_version", "status", "outcome", "product_id")


def failure(e: Exception) -> dict[str, Any]:
    attrs = {a: _plain(getattr(e, a)) for a in _ATTRIBUTES if hasattr(e, a)}
    return {"error": {"type": type(e).__name__, "message": str(e), "attrs": attrs}}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, str, float, type(None))) else str(value)


def unwrap(result: dict[str, Any]) -> Any:
    """The value of a result, or the typed error it carries, raised."""
    if "error" not in result:
        return result["ok"]
    err = result["error"]
    cls = _ERRORS.get(err["type"], errors.DomainError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, err["message"])
    for name, value in err["attrs"].items():
        setattr(exc, name, value)
    raise exc


def returns_result(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[dict[str, Any]]]:
    """Turn an actor method's domain and store errors into results."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        try:
            return {"ok": await fn(*args, **kwargs)}
        except (errors.DomainError, store_errors.StoreError) as e:
            return failure(e)

    return wrapper
