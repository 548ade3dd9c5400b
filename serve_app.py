"""The HTTP ingress on Ray Serve. Each route is a method of the ingress that hands its request to a use
case (``commerce/usecases.py``); ``commerce/http.py`` turns errors into problems, ``commerce/openapi.py``
documents the routes. ``build_app(settings)`` is the only entry point; nothing connects at import time."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve

from commerce import collector, logs, routing
from commerce import schemas as api
from commerce import usecases as uc
from commerce.auth import Principal, Verifier
from commerce.http import Admin, Gate, Shopper, Stockist, Svc, Work, answer, idempotent
from commerce.openapi import IdempotencyKey
from commerce.operator_routes import OperatorRoutes
from commerce.routing import delete, get, post, put
from commerce.services import Services, ServicesProvider
from commerce.settings import ResolvedSettings, Settings
from domain import order

API = "/api/v1"


class Ingress(OperatorRoutes):
    """One replica's HTTP API: its settings, its connections (made on first use) and its routes."""

    def __init__(self, settings: ResolvedSettings, provider: ServicesProvider | None = None) -> None:
        self.settings = settings
        self.provider = provider or ServicesProvider(settings)
        self.gate = Gate(Verifier(settings), self.provider)

    def app(self) -> FastAPI:
        return routing.build(self, self.gate)

    async def keyed(self, request: Request, svc: Services, who: Principal, work: Work) -> JSONResponse:
        return await idempotent(request, svc.idempotency, self.settings.derived_key("idempotency"), who, work)

    # --- catalog and inventory -------------------------------------------------------------------------

    @put(f"{API}/inventory/{{product_id}}")
    async def set_stock(self, product_id: uuid.UUID, body: api.SetStock, who: Principal = Admin,
                        svc: Services = Svc) -> dict[str, Any]:
        """Set a product's stock on hand, price and name (admin); with expected_version, only at that version."""
        return (await svc.inventory.set_stock(product_id, **body.model_dump())).json()

    @get(f"{API}/inventory/{{product_id}}")
    async def get_stock(self, product_id: uuid.UUID, request: Request, svc: Services = Svc) -> dict[str, Any]:
        """A product's stock status (anyone may read the catalog)."""
        await self.gate.identify(request)
        return (await svc.inventory.get_stock(product_id)).json()

    @post(f"{API}/inventory/{{product_id}}/reserve")
    async def reserve(self, product_id: uuid.UUID, body: api.Reserve, request: Request, who: Principal = Stockist,
                      svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Reserve units (service, admin). The same reservation_id again, by the same caller for the same
        product and quantity, returns the same reservation; any other reuse is a 409."""
        return await self.keyed(request, svc, who, lambda derived: answer(uc.reserve(
            svc, who, product_id, body.reservation_id or derived or uuid.uuid4(), body.quantity, body.ttl_seconds,
            body.expected_version), 201))

    @post(f"{API}/inventory/{{product_id}}/release")
    async def release(self, product_id: uuid.UUID, body: api.Release, request: Request, who: Principal = Stockist,
                      svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Release the caller's own active reservation (an admin: any direct one); a sale is a 409."""
        return await self.keyed(request, svc, who, lambda _: answer(uc.release(
            svc, who, product_id, body.reservation_id)))

    # --- carts -----------------------------------------------------------------------------------------

    @post(f"{API}/cart")
    async def create_cart(self, request: Request, body: api.CreateCart | None = None, who: Principal = Shopper,
                          svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """A new cart for the caller (an admin names the customer)."""
        customer_id = uc.acting_for(who, body.customer_id if body else None)

        async def work(derived: uuid.UUID | None) -> JSONResponse:
            cart_id = derived or uuid.uuid4()
            return await answer(uc.create_cart(svc, cart_id, customer_id), 201, f"{API}/cart/{cart_id}")

        return await self.keyed(request, svc, who, work)

    @get(f"{API}/cart/{{cart_id}}")
    async def get_cart(self, cart_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
        return await uc.get_cart(svc, who, cart_id)

    @put(f"{API}/cart/{{cart_id}}/items")
    async def set_cart_item(self, cart_id: uuid.UUID, body: api.SetCartItem, who: Principal = Shopper,
                            svc: Services = Svc) -> dict[str, Any]:
        """Set a line's quantity at the catalog's price; 0 removes the line. The cart store refuses an
        unknown or another customer's cart (404) or one already checked out (409) in the same atomic step."""
        return await uc.set_cart_line(svc, who, cart_id, body.product_id, body.quantity)

    @delete(f"{API}/cart/{{cart_id}}/items/{{product_id}}")
    async def remove_cart_item(self, cart_id: uuid.UUID, product_id: uuid.UUID, who: Principal = Shopper,
                               svc: Services = Svc) -> dict[str, Any]:
        return await uc.remove_cart_line(svc, who, cart_id, product_id)

    @post(f"{API}/cart/{{cart_id}}/checkout")
    async def checkout(self, cart_id: uuid.UUID, body: api.Checkout, request: Request, who: Principal = Shopper,
                       svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Turn the cart into an order once; a second checkout answers with the same order."""
        async def work(_: uuid.UUID | None) -> JSONResponse:
            order_id, placed = await uc.checkout(svc, who, cart_id, body.shipping_address.model_dump(),
                                                 body.payment_token)
            return JSONResponse(placed, 202, headers={"Location": f"{API}/orders/{order_id}"})

        return await self.keyed(request, svc, who, work)

    # --- orders ----------------------------------------------------------------------------------------

    @post(f"{API}/orders")
    async def create_order(self, body: api.CreateOrder, request: Request, who: Principal = Shopper,
                           svc: Services = Svc, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Place an order at catalog prices; its fulfilment saga runs in the background."""
        customer_id = uc.acting_for(who, body.customer_id)

        async def work(derived: uuid.UUID | None) -> JSONResponse:
            items = [(item.product_id, item.quantity) for item in body.items]  # the order merges repeated products
            order_id, placed = await uc.place_order(svc, customer_id, derived, items,
                                                    body.shipping_address.model_dump(), body.payment_token)
            return JSONResponse(placed, 202, headers={"Location": f"{API}/orders/{order_id}"})

        return await self.keyed(request, svc, who, work)

    @get(f"{API}/orders/{{order_id}}")
    async def get_order(self, order_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
        return await uc.owned_order(svc, who, order_id)

    @get(f"{API}/orders")
    async def list_orders(self, customer_id: uuid.UUID | None = None, status: order.OrderStatus | None = None,
                          limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=500),
                          who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
        """Orders newest first, from the read model: a customer's own; an admin's, anyone's."""
        return await uc.list_orders(svc, who, customer_id, status, limit, cursor)

    @post(f"{API}/orders/{{order_id}}/reorder")
    async def reorder(self, order_id: uuid.UUID, request: Request, who: Principal = Shopper, svc: Services = Svc,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """A new cart holding a past order's lines at today's catalog prices; products gone are skipped."""
        async def work(derived: uuid.UUID | None) -> JSONResponse:
            cart_id = derived or uuid.uuid4()
            return await answer(uc.reorder(svc, who, order_id, cart_id), 201, f"{API}/cart/{cart_id}")

        return await self.keyed(request, svc, who, work)

    @post(f"{API}/orders/{{order_id}}/cancel")
    async def cancel_order(self, order_id: uuid.UUID, request: Request, body: api.CancelOrder | None = None,
                           who: Principal = Shopper, svc: Services = Svc,
                           idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Cancel an order: its saga compensates the steps that had succeeded (202); 200 if it is cancelled already."""
        async def work(derived: uuid.UUID | None) -> JSONResponse:
            accepted, view = await uc.cancel_order(svc, who, order_id, body.reason if body else None, derived)
            return JSONResponse(view, 202 if accepted else 200)

        return await self.keyed(request, svc, who, work)

    @get(f"{API}/orders/{{order_id}}/events")
    async def order_events(self, order_id: uuid.UUID, who: Principal = Shopper, svc: Services = Svc) -> dict[str, Any]:
        """The order's event stream, in version order (payment tokens are not shown back)."""
        return await uc.order_events(svc, who, order_id)


# Serve adds replicas when each has more requests under way than this, down to ``replicas`` when idle.
TARGET_ONGOING_REQUESTS = 64


# JSON logs: Serve adds each request's id, route and application to every line a replica writes.
@serve.deployment(max_ongoing_requests=200, logging_config={"encoding": "JSON", "log_level": "INFO"})
@serve.ingress()
class CommerceIngress(Ingress):
    def __init__(self, settings: ResolvedSettings) -> None:
        logs.install()
        logs.flush_every("ray.serve", 1.0)
        collector.tune()  # Serve freezes what the start made once this returns (replica.py's gc.freeze)
        super().__init__(settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.app()


def ingress(settings: Settings) -> Any:
    """The ingress deployment: a fixed number of replicas, or autoscaled up to ``max_replicas``."""
    scaling = {"min_replicas": settings.replicas, "initial_replicas": settings.replicas,
               "max_replicas": settings.max_replicas, "target_ongoing_requests": TARGET_ONGOING_REQUESTS}
    autoscaled = settings.max_replicas and settings.max_replicas > settings.replicas
    replicas: dict[str, Any] = {"autoscaling_config": scaling} if autoscaled else {"num_replicas": settings.replicas}
    return CommerceIngress.options(ray_actor_options={"num_cpus": settings.replica_cpus}, **replicas)


def build_app(settings: Settings) -> Any:
    """The Serve application for these settings, which its replicas get complete (refused here otherwise)."""
    return ingress(settings).bind(settings.resolved())
