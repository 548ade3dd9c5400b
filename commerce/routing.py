"""Routes as methods: ``@get(path)`` and friends mark a method of the ingress class, and ``build`` makes
the FastAPI app of one ingress object, its bound methods as the endpoints, each documented as
``commerce/openapi.py`` says under the method's name. The app is built in the replica, after the ingress
object (``__serve_build_asgi_app__``), so the app and its ``state`` are the ones that serve requests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.params import Depends

from commerce import openapi
from commerce.http import Gate, install_error_handlers
from commerce.middleware import BodyGuard, RequestRecord

F = TypeVar("F", bound=Callable[..., Any])
BODY_LIMIT = 64 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    methods: tuple[str, ...]
    path: str
    dependencies: tuple[Depends, ...]


def route(*methods: str) -> Callable[..., Callable[[F], F]]:
    def at(path: str, *dependencies: Depends) -> Callable[[F], F]:
        def mark(fn: F) -> F:
            fn.__route__ = Route(methods, path, dependencies)  # type: ignore[attr-defined]
            return fn

        return mark

    return at


get, put, post, delete = route("GET"), route("PUT"), route("POST"), route("DELETE")
page = route("GET", "HEAD")  # a static page of the console


def routes(owner: object) -> Sequence[tuple[str, Route]]:
    """The marked methods of ``owner``'s class, in the order they are declared."""
    found: dict[str, Route] = {}
    for cls in reversed(type(owner).__mro__):
        for name, value in vars(cls).items():
            if isinstance(getattr(value, "__route__", None), Route):
                found[name] = value.__route__
    return list(found.items())


def build(owner: object, gate: Gate) -> FastAPI:
    """The app that serves ``owner``'s routes."""
    app = openapi.CommerceAPI(title="Commerce service", version="1.0.0", description=openapi.DESCRIPTION,
                              redoc_url=None)
    app.add_middleware(BodyGuard, limit=BODY_LIMIT)
    app.add_middleware(RequestRecord)  # outermost: the body guard's answers name their request too
    install_error_handlers(app)
    app.state.gate = gate
    for name, r in routes(owner):
        app.add_api_route(r.path, getattr(owner, name), methods=list(r.methods), name=name,
                          dependencies=list(r.dependencies), **openapi.ROUTES[name])
    return app
