"""HTTP plumbing of the ingress: problem+json responses, the error table, the request body guard and
the Idempotency-Key protocol."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.client import ServiceUnavailable
from commerce import logs
from commerce.auth import Forbidden, InvalidCredentials, Principal
from domain import cart, errors, inventory, order
from store import queries
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.idempotency import IdempotencyStore, KeyInFlight, KeyReused, StoredResponse, fingerprint

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://commerce.example/problems/"
# The ingress's own lines go where Serve writes its replicas' JSON logs (a child of Serve's logger).
log = logging.getLogger("ray.serve").getChild("commerce")
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def problem(code: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response; ``extra`` members never replace the standard ones."""
    body = {**extra, "type": f"{PROBLEM_BASE}{kind}", "title": TITLES.get(code, "Error"), "status": code,
            "detail": detail}
    return JSONResponse(body, code, headers=headers, media_type=PROBLEM)


class RateLimited(Exception):
    def __init__(self, retry_after: str) -> None:
        super().__init__("the request budget of this caller is spent; retry later")
        self.retry_after = retry_after


# --- errors -------------------------------------------------------------------------------------

_STATUS: list[tuple[type[Exception], int, str]] = [
    (InvalidCredentials, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (RateLimited, 429, "rate-limited"),
    (errors.NotFound, 404, "not-found"),
    (inventory.InsufficientStock, 409, "insufficient-stock"),
    (inventory.VersionMismatch, 409, "version-conflict"),
    (inventory.ReservationIdConflict, 409, "reservation-id-conflict"),
    (inventory.ReservationAlreadyCommitted, 409, "reservation-committed"),
    (errors.TransitionForbidden, 409, "state-conflict"),
    (inventory.StockBelowReserved, 409, "stock-below-reserved"),
    (inventory.ReservationNotActive, 409, "reservation-closed"),
    (cart.EmptyCart, 409, "empty-cart"),
    (order.OrderAlreadyExists, 409, "order-exists"),
    (ConcurrencyConflict, 409, "concurrent-update"),
    (KeyInFlight, 409, "request-in-progress"),
    (KeyReused, 422, "idempotency-key-reused"),
    (queries.BadCursor, 422, "invalid-cursor"),
    (errors.DomainError, 422, "invalid-request"),
    (StoreUnavailable, 503, "dependency-unavailable"),
    (ServiceUnavailable, 503, "dependency-unavailable"),
    (RayActorError, 503, "dependency-unavailable"),
]
KNOWN_ERRORS = tuple(cls for cls, _, _ in _STATUS)
# Answers that say "not now" rather than "this is the result": a retry must do the work again.
TRANSIENT = frozenset({"concurrent-update", "request-in-progress", "rate-limited"})


def error_response(e: Exception) -> JSONResponse:
    for cls, status, kind in _STATUS:
        if isinstance(e, cls):
            return problem(status, kind, _detail(e, status), headers=_headers(e, status), **_extra(e))
    return problem(500, "internal-error", "the request failed unexpectedly")


def _detail(e: Exception, status: int) -> str:
    return "a dependency is unavailable; retry later" if status == 503 else str(e)


def _headers(e: Exception, status: int) -> dict[str, str] | None:
    if isinstance(e, RateLimited):
        return {"Retry-After": e.retry_after}
    if isinstance(e, InvalidCredentials):
        return {"WWW-Authenticate": "Bearer"}
    if status == 503 or isinstance(e, (KeyInFlight, ConcurrencyConflict)):
        return {"Retry-After": "1"}
    return None


def _extra(e: Exception) -> dict[str, Any]:
    extra = {k: getattr(e, k) for k in ("available", "current_version") if hasattr(e, k)}
    if isinstance(e, errors.TransitionForbidden):
        extra["current_status"] = e.status  # "status" is the HTTP status in RFC 9457
    return extra


def is_final(response: JSONResponse) -> bool:
    """Whether an answer may be replayed for a repeated Idempotency-Key."""
    if response.status_code >= 500 or response.status_code == 429:
        return False
    if response.media_type != PROBLEM:
        return True
    kind = str(json.loads(response.body).get("type", "")).removeprefix(PROBLEM_BASE)
    return kind not in TRANSIENT


# --- the request body -----------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


class BodyGuard:
    """Reads the body before the app sees it: over ``limit`` bytes is a 413, bytes that are not UTF-8
    a 400. Bodies are small (the limit is 64 KiB), so reading them whole costs nothing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except _Refused as refused:
            await refused.response(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise _Refused(self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _Refused(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(problem(400, "malformed-body", "the body is not UTF-8")) from None
        return body

    def _too_large(self) -> JSONResponse:
        return problem(413, "body-too-large", f"the request body exceeds {self.limit} bytes")


class RequestRecord:
    """Names every request: a problem answer gets an RFC 9457 ``instance`` (its path and the id under
    which the replica's JSON logs record the request). A command (POST, PUT, PATCH, DELETE) and every
    problem answer get a log line of their own, which carries the request id and, once a route has said
    which order the request concerns (``logs.correlate``), the correlation id. An exception no handler
    took becomes a 500 problem here, with its ``instance`` and its traceback in the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        instance = f"{quote(path)[:500]}#request={quote(request_id(scope), safe='')[:200]}"
        token = logs.bind()
        start: Message | None = None
        body: list[bytes] = []
        kind = ""
        failure: BaseException | None = None

        async def rewrite(message: Message) -> None:
            nonlocal start, kind
            if message["type"] == "http.response.start":
                start = message
                if not _is_problem(message):
                    await send(message)
                return
            if start is None or not _is_problem(start):
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            payload, kind = _named(b"".join(body), instance)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload, "more_body": False})

        try:
            await self.app(scope, receive, rewrite)
        except Exception as e:
            failure = e
            if start is not None:
                raise  # the answer has begun: nothing else can be said
            await error_response(e)(scope, receive, rewrite)
        except BaseException as e:  # cancelled: the client went away, or the request timed out
            failure = e
            raise
        finally:
            try:
                _log_request(scope, path, start, kind, instance, failure)
            finally:
                logs.unbind(token)


def _log_request(scope: Scope, path: str, start: Message | None, kind: str, instance: str,
                 failure: BaseException | None) -> None:
    if start is None:
        log.info("%s %s: cancelled before an answer", scope.get("method"), path,
                 extra={"status": None, "problem": None, "instance": instance})
        return
    status = int(start["status"])
    if scope.get("method") in _COMMANDS or status >= 400:
        log.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s: %d%s", scope.get("method"), path, status,
                f" {kind}" if kind else "", extra={"status": status, "problem": kind or None, "instance": instance},
                exc_info=failure if isinstance(failure, Exception) else None)


_COMMANDS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_problem(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(PROBLEM.encode()) for k, v in start["headers"])


def request_id(scope: Scope) -> str:
    """The id Serve gives the request (its JSON logs carry it as ``request_id``); outside Serve, the
    caller's X-Request-ID or a new one."""
    from ray.serve.context import _get_serve_request_context  # Serve's request context: no public accessor

    serve_id = _get_serve_request_context().request_id
    if serve_id:
        return str(serve_id)
    header = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")[:100]
    return header or uuid.uuid4().hex


def _named(body: bytes, instance: str) -> tuple[bytes, str]:
    """The problem with its ``instance``, and its kind (the end of its ``type``)."""
    try:
        problem_body = json.loads(body)
    except ValueError:
        return body, ""
    if not isinstance(problem_body, dict):
        return body, ""
    problem_body.setdefault("instance", instance)
    kind = str(problem_body.get("type", "")).removeprefix(PROBLEM_BASE)
    return json.dumps(problem_body, separators=(",", ":")).encode(), kind


# --- idempotency ----------------------------------------------------------------------------------

Work = Callable[[uuid.UUID | None], Awaitable[JSONResponse]]


def derived_id(key: bytes, scope: str, idempotency_key: str) -> uuid.UUID:
    """The id that the work of a keyed request uses: the same for every repeat by the same caller, and
    impossible for anyone else to compute (it is keyed with a server secret)."""
    digest = hmac.new(key, f"{scope}\n{idempotency_key}".encode(), hashlib.sha256).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable() and key.isascii()):
        raise errors.DomainError("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


async def idempotent(request: Request, store: IdempotencyStore, secret: bytes, caller: Principal,
                     work: Work) -> JSONResponse:
    """Run ``work`` once per caller and Idempotency-Key; repeats get the first final answer, another body
    a 422. ``work`` receives an id derived from the key (or None), so even the work is idempotent."""
    key = idempotency_key(request)
    if key is None:
        return await work(None)
    scope = f"{caller.key} {request.method} {request.url.path}"
    body = await request.body()
    stored = await store.claim(scope, key, fingerprint(request.method, request.url.path, body))
    if stored is not None:
        headers = {**stored.headers, "Idempotent-Replayed": "true"}
        return JSONResponse(stored.body, stored.status, headers=headers, media_type=stored.headers.get("content-type"))
    try:
        async with store.held(scope, key):
            response = await work(derived_id(secret, scope, key))
    except Exception as e:
        response = error_response(e)
    except BaseException:
        await store.release(scope, key)
        raise
    if is_final(response):
        headers = {k: v for k, v in response.headers.items() if k in ("location", "content-type")}
        await store.complete(scope, key, StoredResponse(response.status_code, json.loads(response.body), headers))
    else:
        await store.release(scope, key)
    return response
