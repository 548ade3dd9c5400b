"""The HTTP ingress: a FastAPI app served by Ray Serve. It translates HTTP into commands and queries
for the actors and the read side, and errors into RFC 9457 problem responses; it holds no business
rules. ``build_app(settings)`` is the only entry point; nothing connects at import time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import StringConstraints
from pydantic.json_schema import SkipJsonSchema
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors import metrics as m
from actors.client import ServiceUnavailable, call
from commerce import exposition, logs
from commerce import schemas as api
from commerce.auth import Forbidden, InvalidCredentials, Principal, Role, Verifier
from commerce.http import (
    KNOWN_ERRORS,
    TITLES,
    BodyGuard,
    RateLimited,
    RequestRecord,
    Work,
    error_response,
    idempotent,
    problem,
)
from commerce.services import Services, ServicesProvider
from commerce.settings import ResolvedSettings, Settings
from domain import cart as cart_domain
from domain import errors, inventory, order
from domain.events import Recorded, encode
from store import queries
from store.errors import StoreUnavailable
from store.ratelimit import retry_after
from store.reservations import DirectReservation

API = "/api/v1"
NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # an event or aggregate type
ABANDONED_AFTER = 24 * 3600.0


class CommerceAPI(FastAPI):
    """FastAPI, whose OpenAPI document also holds the problem schemas: error responses name them under
    application/problem+json only (a ``model`` would list them under application/json too, which no error is)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in api.PROBLEM_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return self.openapi_schema  # type: ignore[return-value]


app = CommerceAPI(
    title="Commerce service",
    version="1.0.0",
    description="Orders, carts and inventory with CQRS, event sourcing and sagas on Ray. "
    "Callers authenticate with a bearer token: a customer's or a service's JWT, or the admin token. "
    "Errors are application/problem+json (RFC 9457). Every POST accepts an Idempotency-Key header, "
    "scoped to its caller.",
    redoc_url=None,
)
app.add_middleware(BodyGuard, limit=64 * 1024)
app.add_middleware(RequestRecord)  # outermost: the body guard's answers name their request too


# --- errors -------------------------------------------------------------------------------------


async def _known_error(request: Request, e: Exception) -> JSONResponse:
    return error_response(e)


for _cls in KNOWN_ERRORS:
    app.add_exception_handler(_cls, _known_error)
app.add_exception_handler(Exception, _known_error)  # anything else: a 500 problem, never a stack trace


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    kinds = {404: "not-found", 405: "method-not-allowed"}
    detail = e.detail if isinstance(e.detail, str) else TITLES.get(e.status_code, "error")
    return problem(e.status_code, kinds.get(e.status_code, "http-error"), detail, headers=e.headers)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    errs = e.errors()
    body_shape = {"json_invalid", "model_attributes_type", "dict_type", "missing"}
    if any(x.get("type") == "json_invalid" or (tuple(x.get("loc", ())) == ("body",) and x.get("type") in body_shape)
           for x in errs):
        return problem(400, "malformed-body", "the body must be a JSON object")
    fields = [{"loc": [str(p) for p in x.get("loc", ())], "msg": str(x.get("msg", ""))} for x in errs]
    return problem(422, "validation-error", "the request is not valid", errors=fields)


# --- dependencies -------------------------------------------------------------------------------


class Replica:
    """This replica's settings and connections, set by the deployment's constructor.

    Serve serves a frozen copy of ``app``, so ``app.state`` set at run time does not reach requests.
    """

    settings: ResolvedSettings | None = None
    provider: ServicesProvider | None = None
    verifier: Verifier | None = None

    @classmethod
    def configure(cls, settings: ResolvedSettings) -> None:
        logs.install()
        logs.flush_every("ray.serve", 1.0)
        cls.settings = settings
        cls.provider = ServicesProvider(settings)
        cls.verifier = Verifier(settings)

    @classmethod
    def services_provider(cls) -> ServicesProvider:
        if cls.provider is None:
            raise ServiceUnavailable("the replica is not initialised")
        return cls.provider


async def services() -> Services:
    return await Replica.services_provider().get()


Svc = Depends(services)
bearer = HTTPBearer(auto_error=False, description="A customer's or a service's JWT, or the admin token")
Bearer = Security(bearer)


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Bearer,
                 svc: Services = Svc) -> Principal | None:
    """The authenticated caller, or None for an anonymous one; customers spend their request budget here."""
    return await identify(request, svc)


async def identify(request: Request, svc: Services) -> Principal | None:
    """The caller of a route open to anyone: OpenAPI declares no security for it, yet a token that comes
    along must be valid (and a customer's still counts against its budget)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise InvalidCredentials("the Authorization header must be 'Bearer <token>'")
    if Replica.verifier is None:
        raise ServiceUnavailable("the replica is not initialised")
    principal = Replica.verifier.principal(credentials.strip())
    if principal.role is Role.CUSTOMER:
        await spend_budget(svc, principal)
    return principal


async def spend_budget(svc: Services, principal: Principal) -> None:
    try:
        wait = await svc.rate_limiter.take(principal.key)
    except StoreUnavailable:
        return  # without Redis the budget cannot be kept; requests go on (docs/operations.md)
    if wait > 0:
        raise RateLimited(retry_after(wait))


Caller = Depends(caller)

# Declared on every POST for the OpenAPI document and validated like any header; the route does not read
# it: ``idempotent`` (commerce/http.py) does, from the request.
IdempotencyKey = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[ -~]+$")] | SkipJsonSchema[None],
    Header(alias="Idempotency-Key",
           description="Printable ASCII, up to 255 characters, scoped to the caller: a repeat with the same body "
                       "gets the first final answer (with Idempotent-Replayed: true) without the work being done "
                       "again; the same key with another body is a 422. Kept at least 24 h.")]

# Error responses, per route: every route that identifies its caller may meet a bad token (401), a role
# that may not do this (403), a customer's spent budget (429; a customer's token spends it before its
# role is checked) and a dependency that is down (503); every route with a parameter, 422; with a body, 400
# and 413 as well.
CALLER = (401, 403, 422, 429, 503)
BODY = (400, 413)
KEY_IN_FLIGHT = "a request with the same Idempotency-Key is still in progress (request-in-progress)"


def allow(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    async def dependency(who: Principal | None = Caller) -> Principal:
        if who is None:
            raise InvalidCredentials("this needs a bearer token")
        if who.role not in roles:
            raise Forbidden(f"a {who.role} may not do this")
        return who

    return dependency


Shopper = Depends(allow(Role.CUSTOMER, Role.ADMIN))
Stockist = Depends(allow(Role.SERVICE, Role.ADMIN))
Admin = Depends(allow(Role.ADMIN))


def acting_for(who: Principal, customer_id: uuid.UUID | None) -> uuid.UUID:
    """The customer a shopper acts for: a customer itself; an admin names one."""
    if who.is_admin:
        if customer_id is None:
            raise errors.DomainError("an admin acting for a customer names it in customer_id")
        return customer_id
    if customer_id is not None and customer_id != who.customer_id:
        raise Forbidden("customer_id must be the caller's own")
    return who.customer_id


def owner_filter(who: Principal) -> uuid.UUID | None:
    """Whose entities a caller sees: an admin everyone's, a customer its own."""
    return None if who.is_admin else who.customer_id


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def keyed(request: Request, svc: Services, who: Principal, work: Work) -> JSONResponse:
    return await idempotent(request, svc.idempotency, svc.settings.derived_key("idempotency"), who, work)


# --- catalog and inventory ----------------------------------------------------------------------


@app.put(f"{API}/inventory/{{product_id}}", tags=["inventory"], response_model=Any, responses={
    200: api.answer(api.StockStatus, "The product's stock status"),
    **api.problems(*CALLER, *BODY, notes={409: "on_hand below the units reserved (stock-below-reserved)"})})
async def set_stock(product_id: uuid.UUID, body: api.SetStock, who: Principal = Admin,
                    svc: Services = Svc) -> dict[str, Any]:
    """Set a product's stock on hand, price and name (admin)."""
    return await svc.inventory.set_stock(product_id, body.on_hand, body.price, body.name)


@app.get(f"{API}/inventory/{{product_id}}", tags=["inventory"], response_model=Any, responses={
    200: api.answer(api.StockStatus, "The product's stock status"),
    **api.problems(422, 429, 503, notes={
        401: "No token is needed, but one that comes along must be valid", 404: "Unknown product"})})
async def get_stock(product_id: uuid.UUID, request: Request, svc: Services = Svc) -> dict[str, Any]:
    """A product's stock status (anyone may read the catalog)."""
    await identify(request, svc)
    return await svc.inventory.get_stock(product_id)


@app.post(f"{API}/inventory/{{product_id}}/reserve", status_code=201, tags=["inventory"], responses={
    201: api.answer(api.Reservation, "The reservation", keyed=True),
    **api.problems(*CALLER, *BODY, notes={
        404: "Unknown product",
        409: "Insufficient stock (`available`), a stale expected_version (`current_version`), a reservation_id "
             f"used otherwise before (reservation-id-conflict), or {KEY_IN_FLIGHT}"})})
async def reserve(product_id: uuid.UUID, body: api.Reserve, request: Request, who: Principal = Stockist,
                  svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Reserve units (service, admin). The same reservation_id again, by the same caller for the same
    product and quantity, returns the same reservation; any other reuse is a 409."""

    async def work(derived: uuid.UUID | None) -> JSONResponse:
        rid = body.reservation_id or derived or uuid.uuid4()
        claim = DirectReservation(rid, product_id, who.key, body.quantity)
        if not await svc.direct_reservations.claim(claim):
            raise inventory.ReservationIdConflict(rid)
        ttl = body.ttl_seconds or svc.settings.reservation_ttl
        r = await svc.inventory.reserve(product_id, rid, body.quantity, now() + dt.timedelta(seconds=ttl), who.key,
                                        body.expected_version)
        return JSONResponse({k: r[k] for k in ("reservation_id", "product_id", "quantity", "expires_at", "version")},
                            201)

    return await keyed(request, svc, who, work)


@app.post(f"{API}/inventory/{{product_id}}/release", tags=["inventory"], responses={
    200: api.answer(api.StockStatus, "The product's stock status (also when the reservation was released before)",
                    keyed=True),
    **api.problems(*CALLER, *BODY, notes={
        404: "Unknown product, or a reservation that is unknown or another caller's",
        409: f"The reservation is committed by a sale (reservation-committed), or {KEY_IN_FLIGHT}"})})
async def release(product_id: uuid.UUID, body: api.Release, request: Request, who: Principal = Stockist,
                  svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Release the caller's own active reservation (an admin: any direct one); a sale is a 409."""

    async def work(_: uuid.UUID | None) -> JSONResponse:
        result = await svc.inventory.release(product_id, body.reservation_id, who.key, who.is_admin)
        return JSONResponse(result["stock"])

    return await keyed(request, svc, who, work)


# --- carts --------------------------------------------------------------------------------------


def cart_view(c: cart_domain.Cart) -> dict[str, Any]:
    return {
        "id": str(c.id), "customer_id": str(c.customer_id),
        "items": [{"product_id": str(x.product_id), "quantity": x.quantity, "unit_price": str(x.unit_price),
                   "line_total": str(x.line_total)} for x in c.lines],
        "total": str(c.total), "created_at": c.created_at.isoformat(), "updated_at": c.updated_at.isoformat(),
        "expires_at": c.expires_at.isoformat(), "status": c.status.value,
        **({"order_id": str(c.order_id)} if c.order_id else {}),
    }


@app.post(f"{API}/cart", status_code=201, tags=["cart"], responses={
    201: api.answer(api.CartView, "The new, empty cart", keyed=True, location="The cart's URL"),
    **api.problems(*CALLER, *BODY, notes={
        403: "A service may not; a customer may name only its own customer_id", 409: KEY_IN_FLIGHT.capitalize(),
        422: "Well-formed but invalid (schema, unknown field, Idempotency-Key), or an admin that names no "
             "customer_id"})})
async def create_cart(request: Request, body: api.CreateCart | None = None, who: Principal = Shopper,
                      svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A new cart for the caller (an admin names the customer)."""
    customer_id = acting_for(who, body.customer_id if body else None)

    async def work(derived: uuid.UUID | None) -> JSONResponse:
        cart = await svc.carts.create(derived or uuid.uuid4(), customer_id, now())
        return JSONResponse(cart_view(cart), 201, headers={"Location": f"{API}/cart/{cart.id}"})

    return await keyed(request, svc, who, work)


@app.get(f"{API}/cart/{{cart_id}}", tags=["cart"], response_model=Any, responses={
    200: api.answer(api.CartView, "The cart"),
    **api.problems(*CALLER, notes={404: "Unknown or expired cart, or another customer's"})})
async def get_cart(cart_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
    return cart_view(await svc.carts.get(cart_id, owner_filter(who)))


@app.put(f"{API}/cart/{{cart_id}}/items", tags=["cart"], response_model=Any, responses={
    200: api.answer(api.CartView, "The cart"),
    **api.problems(*CALLER, *BODY, notes={404: "Unknown product, or an unknown or expired cart, or another "
                                               "customer's", 409: "The cart is checked out"})})
async def set_cart_item(cart_id: uuid.UUID, body: api.SetCartItem, who: Principal = Shopper,
                        svc: Services = Svc) -> dict[str, Any]:
    """Set a line's quantity at the catalog's price; 0 removes the line. The cart store refuses an
    unknown or another customer's cart (404) or one already checked out (409) in the same atomic step."""
    stock = await svc.inventory.get_stock(body.product_id)
    operation = "remove_item" if body.quantity == 0 else "set_item"
    return cart_view(await svc.carts.set_line(cart_id, body.product_id, body.quantity, stock["price"], now(),
                                              operation, owner_filter(who)))


@app.delete(f"{API}/cart/{{cart_id}}/items/{{product_id}}", tags=["cart"], response_model=Any, responses={
    200: api.answer(api.CartView, "The cart, without that product's line"),
    **api.problems(*CALLER, notes={404: "Unknown or expired cart, or another customer's",
                                   409: "The cart is checked out"})})
async def remove_cart_item(cart_id: uuid.UUID, product_id: uuid.UUID, who: Principal = Shopper,
                           svc: Services = Svc) -> dict[str, Any]:
    return cart_view(await svc.carts.set_line(cart_id, product_id, 0, Decimal(0), now(), "remove_item",
                                              owner_filter(who)))


@app.post(f"{API}/cart/{{cart_id}}/checkout", status_code=202, tags=["cart"], responses={
    202: api.answer(api.OrderAccepted, "The cart's order (the same one for a second checkout); its saga runs in "
                    "the background", keyed=True, location="The order's URL"),
    **api.problems(*CALLER, *BODY, notes={
        404: "Unknown or expired cart, or another customer's; or a product of the cart that no longer exists",
        409: f"The cart is empty (empty-cart) or its state forbids a checkout, or {KEY_IN_FLIGHT}"})})
async def checkout(cart_id: uuid.UUID, body: api.Checkout, request: Request, who: Principal = Shopper,
                   svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Turn the cart into an order once; a second checkout answers with the same order."""

    async def work(_: uuid.UUID | None) -> JSONResponse:
        cart = await svc.carts.begin_checkout(cart_id, cart_domain.checkout_order_id(cart_id), now(),
                                              owner_filter(who))
        order_id = cart.order_id or cart_domain.checkout_order_id(cart_id)
        logs.correlate(order_id)
        try:
            placed = await svc.orders.create_order(
                order_id, cart.customer_id, [(x.product_id, x.quantity) for x in cart.lines],
                body.shipping_address.model_dump(), body.payment_token)
        except errors.DomainError:
            await svc.carts.abort_checkout(cart_id, order_id)  # no order: the cart is the customer's again
            raise
        await svc.carts.finish_checkout(cart_id)
        return JSONResponse(placed, 202, headers={"Location": f"{API}/orders/{order_id}"})

    return await keyed(request, svc, who, work)


# --- orders -------------------------------------------------------------------------------------


@app.post(f"{API}/orders", status_code=202, tags=["orders"], responses={
    202: api.answer(api.OrderAccepted, "The order is PENDING; its saga runs in the background", keyed=True,
                    location="The order's URL"),
    **api.problems(*CALLER, *BODY, notes={
        403: "A service may not; a customer may name only its own customer_id", 404: "An unknown product",
        409: f"The order exists already (order-exists), or {KEY_IN_FLIGHT}",
        422: "Well-formed but invalid (schema, ranges, unknown field, Idempotency-Key), or an admin that names "
             "no customer_id"})})
async def create_order(body: api.CreateOrder, request: Request, who: Principal = Shopper,
                       svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Place an order at catalog prices; its fulfilment saga runs in the background."""
    customer_id = acting_for(who, body.customer_id)

    async def work(derived: uuid.UUID | None) -> JSONResponse:
        order_id = derived or uuid.uuid4()
        logs.correlate(order_id)
        items = [(item.product_id, item.quantity) for item in body.items]  # the order merges repeated products
        placed = await svc.orders.create_order(order_id, customer_id, items,
                                               body.shipping_address.model_dump(), body.payment_token)
        return JSONResponse(placed, 202, headers={"Location": f"{API}/orders/{order_id}"})

    return await keyed(request, svc, who, work)


async def owned_order(svc: Services, who: Principal, order_id: uuid.UUID) -> dict[str, Any]:
    """The order, if the caller may see it: another customer's order is not found."""
    view = await svc.orders.get_order(order_id)
    if not who.is_admin and view["customer_id"] != str(who.customer_id):
        raise errors.NotFound(f"unknown order {order_id}")
    logs.correlate(order_id)  # the caller's own order: the request's lines belong to its story
    return view


@app.get(f"{API}/orders/{{order_id}}", tags=["orders"], response_model=Any, responses={
    200: api.answer(api.OrderView, "The order"),
    **api.problems(*CALLER, notes={404: "Unknown order, or another customer's"})})
async def get_order(order_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
    return await owned_order(svc, who, order_id)


@app.get(f"{API}/orders", tags=["orders"], response_model=Any, responses={
    200: api.answer(api.OrderList, "A page of orders, newest first"),
    **api.problems(*CALLER, notes={
        403: "A service may not; a customer may name only its own customer_id",
        422: "Invalid query parameters, or a cursor this service did not hand out (invalid-cursor)"})})
async def list_orders(customer_id: uuid.UUID | None = None, status: order.OrderStatus | None = None,
                      limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=500),
                      who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
    """Orders newest first, from the read model: a customer's own; an admin's, anyone's."""
    if not who.is_admin:
        customer_id = acting_for(who, customer_id)
    items, next_cursor = await queries.list_orders(svc.pool, customer_id=customer_id,
                                                   status=status.value if status else None, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}


@app.post(f"{API}/orders/{{order_id}}/reorder", status_code=201, tags=["orders"], responses={
    201: api.answer(api.CartView, "A new cart with the order's lines at today's prices", keyed=True,
                    location="The cart's URL"),
    **api.problems(*CALLER, notes={404: "Unknown order, or another customer's", 409: KEY_IN_FLIGHT.capitalize()})})
async def reorder(order_id: uuid.UUID, request: Request, who: Principal = Shopper, svc: Services = Svc,
                  idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A new cart holding a past order's lines at today's catalog prices; products gone are skipped."""

    async def work(derived: uuid.UUID | None) -> JSONResponse:
        past = await owned_order(svc, who, order_id)
        cart = await svc.carts.create(derived or uuid.uuid4(), uuid.UUID(past["customer_id"]), now())
        prices = await svc.inventory.prices([uuid.UUID(x["product_id"]) for x in past["items"]])
        for item in past["items"]:
            pid = uuid.UUID(item["product_id"])
            if pid in prices:
                cart = await svc.carts.set_line(cart.id, pid, item["quantity"], prices[pid], now(), "set_item")
        return JSONResponse(cart_view(cart), 201, headers={"Location": f"{API}/cart/{cart.id}"})

    return await keyed(request, svc, who, work)


@app.post(f"{API}/orders/{{order_id}}/cancel", status_code=202, tags=["orders"], responses={
    202: api.answer(api.OrderView, "Accepted: the order compensates in the background", keyed=True),
    200: api.answer(api.OrderView, "The order was cancelled already", keyed=True),
    **api.problems(*CALLER, *BODY, notes={
        404: "Unknown order, or another customer's",
        409: f"The order's state forbids a cancel (`current_status`), or {KEY_IN_FLIGHT}"})})
async def cancel_order(order_id: uuid.UUID, request: Request, body: api.CancelOrder | None = None,
                       who: Principal = Shopper, svc: Services = Svc,
                       idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Cancel an order: its saga compensates the steps that had succeeded (202); 200 if it is cancelled already."""

    async def work(derived: uuid.UUID | None) -> JSONResponse:
        await owned_order(svc, who, order_id)
        reason = (body.reason if body else None) or "cancelled by customer"
        result = await svc.orders.cancel_order(order_id, reason, derived)
        return JSONResponse(result["order"], 202 if result["accepted"] else 200)

    return await keyed(request, svc, who, work)


@app.get(f"{API}/orders/{{order_id}}/events", tags=["orders"], response_model=Any, responses={
    200: api.answer(api.OrderEvents, "The order's events in version order"),
    **api.problems(*CALLER, notes={404: "Unknown order, or another customer's"})})
async def order_events(order_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
    """The order's event stream, in version order (payment tokens are not shown back)."""
    await owned_order(svc, who, order_id)  # before any stream is read: only an order's owner reads it
    records = await svc.events.load_stream(order_id)
    return {"items": [{"event_id": str(r.metadata.event_id), "event_type": r.event_type, "version": r.version,
                       "data": _event_data(r), "created_at": r.at.isoformat()} for r in records]}


def _event_data(r: Recorded) -> dict[str, Any]:
    data: dict[str, Any] = encode(r.event)
    data.pop("payment_token", None)  # a payment method reference is not shown back
    return data


# --- admin --------------------------------------------------------------------------------------


def saga_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"saga_id": str(row["saga_id"]), "saga_type": row["saga_type"], "order_id": str(row["order_id"]),
            "status": row["status"], "current_step": row["current_step"], "attempts": row["attempts"],
            "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}


@app.get(f"{API}/admin/sagas", dependencies=[Admin], tags=["admin"], response_model=Any, responses={
    200: api.answer(api.SagaList, "A page of sagas, newest first"),
    **api.problems(*CALLER, notes={
        422: "Invalid query parameters, or a cursor this service did not hand out (invalid-cursor)"})})
async def list_sagas(status: str | None = Query(None, pattern="^(RUNNING|COMPLETED|COMPENSATING|COMPENSATED|FAILED)$"),
                     order_id: uuid.UUID | None = None,
                     stuck_for: float | None = Query(None, ge=0, le=10**9,
                                                     description="Only unfinished sagas that have not moved for "
                                                                 "this many seconds"),
                     limit: int = Query(50, ge=1, le=500),
                     cursor: str | None = Query(None, max_length=500), svc: Services = Svc) -> dict[str, Any]:
    rows = await svc.sagas.list(status=status, order_id=order_id, limit=limit + 1, cursor=queries.decode_cursor(cursor),
                                stuck_for=stuck_for)
    next_cursor = queries.encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["saga_id"]) if len(rows) > limit else None
    return {"items": [saga_summary(r) for r in rows[:limit]], "next_cursor": next_cursor}


async def _saga(svc: Services, saga_id: uuid.UUID) -> dict[str, Any]:
    saga = await svc.sagas.get(saga_id)
    if saga is None:
        raise errors.NotFound(f"unknown saga {saga_id}")
    logs.correlate(saga["order_id"])
    return saga


@app.get(f"{API}/admin/sagas/{{saga_id}}", dependencies=[Admin], tags=["admin"], response_model=Any, responses={
    200: api.answer(api.SagaDetail, "The saga with its step history"),
    **api.problems(*CALLER, notes={404: "Unknown saga"})})
async def get_saga(saga_id: uuid.UUID, svc: Services = Svc) -> dict[str, Any]:
    """A saga (admin): its state, why it compensates or failed, and every step's attempts."""
    saga = await _saga(svc, saga_id)
    steps = [{"step": s["step"], "action": s["action"], "outcome": s["outcome"], "attempt": s["attempt"],
              "at": s["at"].isoformat(), **({"error": s["error"]} if s["error"] else {})} for s in saga["steps"]]
    retry_at = saga["saga_data"].get("retry_at") if saga["status"] in ("RUNNING", "COMPENSATING") else None
    return {**saga_summary(saga), "reason": saga["saga_data"].get("reason"), "steps": steps,
            **({"next_attempt_at": retry_at} if retry_at else {})}


@app.get(f"{API}/admin/actors", dependencies=[Admin], tags=["admin"], response_model=Any, responses={
    200: api.answer(api.ActorList, "Every actor of the service, where it runs and how busy it is"),
    **api.problems(401, 403, 429, 503)})
async def list_actors(svc: Services = Svc) -> dict[str, Any]:
    """The shard actors and the projector (admin): placement on nodes, restarts, entities, mailboxes."""
    return {"items": await svc.actors.describe()}


@app.get(f"{API}/admin/actors/locate", dependencies=[Admin], tags=["admin"], response_model=Any, responses={
    200: api.answer(api.Location, "The shard that hosts the order or SKU, and whether it is in memory now"),
    **api.problems(*CALLER, notes={404: "No order or SKU has this id"})})
async def locate_entity(entity_id: uuid.UUID, svc: Services = Svc) -> dict[str, Any]:
    """Where an order or a SKU lives (admin): its shard actor and node, and whether it is active."""
    kind = await svc.events.aggregate_type(entity_id)
    if kind not in (order.AGGREGATE_TYPE, inventory.AGGREGATE_TYPE):
        raise errors.NotFound(f"no order or SKU {entity_id}")
    name = "order" if kind == order.AGGREGATE_TYPE else "inventory"
    shard = svc.actors.shard_of(name, entity_id)
    where = await call(shard, "describe", timeout=10.0)
    found = await call(shard, "locate", entity_id, timeout=10.0)
    return {"entity_id": str(entity_id), "kind": name, "shard": where["shard"], "actor_id": where["actor_id"],
            "node_id": where["node_id"], "active": found["active"]}


@app.post(f"{API}/admin/sagas/{{saga_id}}/retry", status_code=202, tags=["admin"], responses={
    202: api.answer(api.SagaAccepted, "The saga resumes from its failed step", keyed=True),
    **api.problems(*CALLER, notes={404: "Unknown saga",
                                   409: f"The saga is not FAILED (`current_status`), or {KEY_IN_FLIGHT}"})})
async def retry_saga(saga_id: uuid.UUID, request: Request, who: Principal = Admin, svc: Services = Svc,
                     idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Resume a FAILED saga from its failed step (admin)."""
    async def work(derived: uuid.UUID | None) -> JSONResponse:
        saga = await _saga(svc, saga_id)
        return JSONResponse(await svc.orders.retry_saga(saga["order_id"], derived), 202)

    return await keyed(request, svc, who, work)


@app.post(f"{API}/admin/sagas/{{saga_id}}/compensate", status_code=202, tags=["admin"], responses={
    202: api.answer(api.SagaAccepted, "The saga compensates in the background", keyed=True),
    **api.problems(*CALLER, *BODY, notes={
        404: "Unknown saga", 409: f"The saga is COMPENSATED already (`current_status`), or {KEY_IN_FLIGHT}"})})
async def compensate_saga(saga_id: uuid.UUID, request: Request, body: api.Compensate | None = None,
                          who: Principal = Admin, svc: Services = Svc,
                          idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Compensate a RUNNING, FAILED or COMPLETED saga (admin)."""
    async def work(derived: uuid.UUID | None) -> JSONResponse:
        saga = await _saga(svc, saga_id)
        reason = (body.reason if body else None) or "compensated by an operator"
        return JSONResponse(await svc.orders.compensate_saga(saga["order_id"], reason, derived), 202)

    return await keyed(request, svc, who, work)


@app.get(f"{API}/admin/events", dependencies=[Admin], tags=["admin"], response_model=Any, responses={
    200: api.answer(api.EventPage, "A page of events in commit order"),
    **api.problems(*CALLER)})
async def query_events(aggregate_id: uuid.UUID | None = None,
                       aggregate_type: str | None = Query(None, max_length=100, pattern=NAME),
                       event_type: str | None = Query(None, max_length=100, pattern=NAME), after_position: int = Query(0, ge=0, le=2**63 - 1),
                       limit: int = Query(100, ge=1, le=500), svc: Services = Svc) -> dict[str, Any]:
    """Events in commit order; pass ``next_position`` back as ``after_position`` for the next page."""
    records = await svc.events.query(aggregate_id=aggregate_id, aggregate_type=aggregate_type,
                                     event_type=event_type, after_position=after_position, limit=limit)
    items = [{"position": r.position, "event_id": str(r.metadata.event_id), "aggregate_id": str(r.aggregate_id),
              "aggregate_type": r.aggregate_type, "event_type": r.event_type, "version": r.version,
              "data": _event_data(r), "created_at": r.at.isoformat()} for r in records]
    return {"items": items, "next_position": records[-1].position if len(records) == limit else None}


# --- health and metrics -------------------------------------------------------------------------


@app.get("/livez", tags=["operations"], response_model=Any, responses={
    200: api.answer(api.Liveness, "The replica answers")})
async def livez() -> dict[str, str]:
    """Liveness: the replica answers; no dependency is consulted (see /health for those)."""
    return {"status": "ok"}


@app.get("/health", tags=["operations"], responses={
    200: api.answer(api.Health, "Every check is ok"),
    503: {**api.answer(api.Health, "A check failed (the same shape); a problem if the replica is not initialised"),
          "content": api.problem_content(503)}})
async def health(request: Request) -> JSONResponse:
    """The status of each check; their details (positions, counts, errors) only for an admin."""
    from commerce.health import check_health

    report = await check_health(Replica.services_provider())
    if not _is_admin(request.headers.get("authorization", "")):
        report = {"status": report["status"], "checks": {k: {"status": c["status"]} for k, c in report["checks"].items()}}
    return JSONResponse(report, 200 if report["status"] == "ok" else 503)


def _is_admin(header: str) -> bool:
    """Whether the Authorization header is an admin's; /health answers anyone, so nothing here raises."""
    scheme, _, token = header.partition(" ")
    try:
        return scheme.lower() == "bearer" and Replica.verifier is not None and Replica.verifier.principal(
            token.strip()).is_admin
    except InvalidCredentials:
        return False


@app.get("/metrics", tags=["operations"], response_class=PlainTextResponse, responses={
    200: {"description": "Prometheus text format, aggregated over every replica and actor"},
    **api.problems(503)})
async def metrics(svc: Services = Svc) -> Response:
    from commerce.health import service_metrics

    per_actor = await exposition.actor_families(svc.actors)
    service = await service_metrics(svc, now(), ABANDONED_AFTER)
    return PlainTextResponse(exposition.exposition(per_actor, service), media_type=m.MEDIA_TYPE)


# --- operator console: static files of commerce/console, no build step, nothing fetched elsewhere ---

CONSOLE_DIR = Path(api.__file__).resolve().parent / "console"  # commerce/console, shipped as package data
CONSOLE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "X-Content-Type-Options": "nosniff",
                   "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _console_file(name: str) -> Response:
    path = CONSOLE_DIR / name
    if name.startswith(".") or path.suffix not in CONSOLE_TYPES or not path.is_file():
        raise StarletteHTTPException(404, "no such console file")
    return Response(path.read_bytes(), media_type=CONSOLE_TYPES[path.suffix], headers=CONSOLE_HEADERS)


@app.api_route("/console", methods=["GET", "HEAD"], include_in_schema=False)
async def console() -> Response:
    """The operator console (a static page; the admin token is entered in the page)."""
    return _console_file("index.html")


@app.api_route("/console/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def console_file(name: str) -> Response:
    return _console_file(name)


# --- Serve --------------------------------------------------------------------------------------


# JSON logs: Serve adds each request's id, route and application to every line a replica writes.
@serve.deployment(max_ongoing_requests=200, logging_config={"encoding": "JSON", "log_level": "INFO"})
@serve.ingress(app)
class CommerceIngress:
    def __init__(self, settings: ResolvedSettings) -> None:
        Replica.configure(settings)


# Serve adds replicas when each has more requests under way than this, down to ``replicas`` when idle.
TARGET_ONGOING_REQUESTS = 64


def ingress(settings: Settings) -> Any:
    """The ingress deployment: a fixed number of replicas, or autoscaled up to ``max_replicas``."""
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": settings.replica_cpus}}
    if settings.max_replicas and settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {"min_replicas": settings.replicas, "initial_replicas": settings.replicas,
                                         "max_replicas": settings.max_replicas,
                                         "target_ongoing_requests": TARGET_ONGOING_REQUESTS}
    else:
        options["num_replicas"] = settings.replicas
    return CommerceIngress.options(**options)


def build_app(settings: Settings) -> Any:
    """The Serve application for these settings, which its replicas get complete (refused here otherwise)."""
    resolved = settings.resolved()
    return ingress(resolved).bind(resolved)
