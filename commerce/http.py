"""HTTP plumbing of the ingress: problem+json responses and the error table, who calls (the bearer
token, the roles a route admits, a customer's request budget) and the Idempotency-Key protocol."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.client import ServiceUnavailable
from commerce.auth import Forbidden, InvalidCredentials, Principal, Role, Verifier
from commerce.services import Services, ServicesProvider
from domain import cart, errors, inventory, order
from store import queries
from store.errors import ConcurrencyConflict, StoreUnavailable
from store.idempotency import IdempotencyStore, KeyInFlight, KeyReused, StoredResponse, fingerprint
from store.ratelimit import retry_after

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
    (inventory.ProductIdTaken, 409, "product-id-conflict"),
    (inventory.ReservationAlreadyCommitted, 409, "reservation-committed"),
    (errors.TransitionForbidden, 409, "state-conflict"),
    (inventory.StockBelowReserved, 409, "stock-below-reserved"),
    (inventory.ReservationNotActive, 409, "reservation-closed"),
    (cart.EmptyCart, 409, "empty-cart"),
    (cart.CartFull, 409, "cart-full"),
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


def install_error_handlers(app: FastAPI) -> None:
    """Every error a route can raise, FastAPI's own (404, 405, validation) and anything else answer with a
    problem; nothing answers with a stack trace."""

    async def known(request: Request, e: Exception) -> JSONResponse:
        return error_response(e)

    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not-found", 405: "method-not-allowed"}
        detail = e.detail if isinstance(e.detail, str) else TITLES.get(e.status_code, "error")
        return problem(e.status_code, kinds.get(e.status_code, "http-error"), detail, headers=e.headers)

    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        body_shape = {"json_invalid", "model_attributes_type", "dict_type", "missing"}
        if any(x.get("type") == "json_invalid" or (tuple(x.get("loc", ())) == ("body",) and x.get("type") in body_shape)
               for x in errs):
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):  # not read as JSON at all
                return problem(415, "unsupported-media-type", "send the body as JSON, with Content-Type: "
                               f"application/json (not {media or 'none'})")
            return problem(400, "malformed-body", "the body must be a JSON object")
        fields = [{"loc": [str(p) for p in x.get("loc", ())], "msg": str(x.get("msg", ""))} for x in errs]
        return problem(422, "validation-error", "the request is not valid", errors=fields)

    for cls in (*KNOWN_ERRORS, Exception):
        app.add_exception_handler(cls, known)
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]


# --- who calls ------------------------------------------------------------------------------------


class Gate:
    """Who calls: the principal a bearer token names, and a customer's request budget, spent on every
    request its token comes with. The app holds one (``app.state.gate``), with its services."""

    def __init__(self, verifier: Verifier, provider: ServicesProvider) -> None:
        self.verifier = verifier
        self.provider = provider

    async def identify(self, request: Request) -> Principal | None:
        """The caller, or None for an anonymous one. A route open to anyone identifies its caller too: a
        token that comes along must be valid, and a customer's still counts against its budget."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        principal = self._principal(header)
        if principal.role is Role.CUSTOMER:
            await self._spend(principal)
        return principal

    async def _spend(self, principal: Principal) -> None:
        svc = await self.provider.get()
        try:
            wait = await svc.rate_limiter.take(principal.key)
        except StoreUnavailable:
            return  # without Redis the budget cannot be kept; requests go on (docs/operations.md)
        if wait > 0:
            raise RateLimited(retry_after(wait))

    def is_admin(self, header: str) -> bool:
        """Whether the Authorization header is an admin's, for a route that answers anyone: never raises."""
        try:
            return self._principal(header).is_admin
        except InvalidCredentials:
            return False

    def _principal(self, header: str) -> Principal:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise InvalidCredentials("the Authorization header must be 'Bearer <token>'")
        return self.verifier.principal(credentials.strip())


bearer = HTTPBearer(auto_error=False, description="A customer's or a service's JWT, or the admin token")
Bearer = Security(bearer)


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Bearer) -> Principal | None:
    gate: Gate = request.app.state.gate
    return await gate.identify(request)


async def services(request: Request) -> Services:
    gate: Gate = request.app.state.gate
    return await gate.provider.get()


Caller = Depends(caller)


def allow(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only callers in ``roles``."""

    async def dependency(who: Principal | None = Caller) -> Principal:
        if who is None:
            raise InvalidCredentials("this needs a bearer token")
        if who.role not in roles:
            raise Forbidden(f"a {who.role} may not do this")
        return who

    return dependency


Svc = Depends(services)
Shopper = Depends(allow(Role.CUSTOMER, Role.ADMIN))
Stockist = Depends(allow(Role.SERVICE, Role.ADMIN))
Admin = Depends(allow(Role.ADMIN))


async def answer(view: Awaitable[dict[str, Any]], status: int = 200, location: str | None = None) -> JSONResponse:
    """The JSON answer of a use case, with its status and, for what it created, its Location."""
    return JSONResponse(await view, status, headers={"Location": location} if location else None)


# --- idempotency ----------------------------------------------------------------------------------

Work = Callable[[uuid.UUID | None], Awaitable[JSONResponse]]


def derived_id(key: bytes, scope: str, idempotency_key: str, salt: uuid.UUID | None = None) -> uuid.UUID:
    """The id that the work of a keyed request uses: the same for every repeat by the same caller while the
    key is kept (its ``salt`` is the key's own, new once the key was purged), and impossible for anyone else
    to compute (it is keyed with a server secret)."""
    text = f"{scope}\n{idempotency_key}" if salt is None else f"{scope}\n{idempotency_key}\n{salt}"
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


_HYPHENATED = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Every spelling of an id that the routes' UUID parameters accept (pydantic's), and nothing else.
_ID = re.compile(rf"[0-9a-fA-F]{{32}}|{_HYPHENATED}|\{{{_HYPHENATED}\}}|urn:uuid:{_HYPHENATED}")


def canonical_path(path: str) -> str:
    """``path`` with every id in it written one way (lower case, hyphens), as the routes read it: a resource
    named in upper case, without hyphens, in braces or as a URN is the same resource, so a repeat spelt so is
    the same request."""
    return "/".join(str(uuid.UUID(part)) if _ID.fullmatch(part) else part for part in path.split("/"))


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
    path = canonical_path(request.url.path)
    scope = f"{caller.key} {request.method} {path}"
    body = await request.body()
    stored, salt = await store.claim_salted(scope, key, fingerprint(request.method, path, body))
    if stored is not None:
        headers = {**stored.headers, "Idempotent-Replayed": "true"}
        return JSONResponse(stored.body, stored.status, headers=headers, media_type=stored.headers.get("content-type"))
    try:
        async with store.held(scope, key):
            response = await work(derived_id(secret, scope, key, salt))
    except Exception as e:
        response = error_response(e)
        if response.status_code == 500:  # a bug, not an answer: its traceback, as an unkeyed request's failure has
            log.error("%s %s with an Idempotency-Key failed", request.method, path, exc_info=e)
    except BaseException:
        await store.release(scope, key)
        raise
    if is_final(response):
        headers = {k: v for k, v in response.headers.items() if k in ("location", "content-type")}
        await store.complete(scope, key, StoredResponse(response.status_code, json.loads(response.body), headers))
    else:
        await store.release(scope, key)
    return response
