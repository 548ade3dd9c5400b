"""The operators' routes of the ingress: sagas, actors and events under ``/admin``, health, metrics and
the console. A mixin of ``serve_app.Ingress``; it uses the ingress's gate, connections and ``keyed``."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from actors import metrics as m
from commerce import exposition, views
from commerce import schemas as api
from commerce import usecases as uc
from commerce.auth import Principal
from commerce.console_files import console_file
from commerce.health import Coalesced, check_health, service_metrics
from commerce.http import Admin, Gate, Svc, Work, answer
from commerce.openapi import IdempotencyKey
from commerce.routing import get, page, post
from commerce.services import Services, ServicesProvider

API = "/api/v1"
NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # an event or aggregate type
SAGA_STATUS = "^(RUNNING|COMPLETED|COMPENSATING|COMPENSATED|FAILED)$"
ABANDONED_AFTER = 24 * 3600.0


class OperatorRoutes:
    gate: Gate
    provider: ServicesProvider
    keyed: Callable[[Request, Services, Principal, Work], Awaitable[JSONResponse]]

    # --- admin --------------------------------------------------------------------------------------------

    @get(f"{API}/admin/sagas", Admin)
    async def list_sagas(self, status: str | None = Query(None, pattern=SAGA_STATUS), order_id: uuid.UUID | None = None,
                         stuck_for: float | None = Query(None, ge=0, le=10**9, description="Only unfinished sagas that "
                                                         "have not moved for this many seconds"),
                         limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=500),
                         svc: Services = Svc) -> dict[str, Any]:
        return await uc.list_sagas(svc, status, order_id, stuck_for, limit, cursor)

    @get(f"{API}/admin/sagas/{{saga_id}}", Admin)
    async def get_saga(self, saga_id: uuid.UUID, svc: Services = Svc) -> dict[str, Any]:
        """A saga (admin): its state, why it compensates or failed, and every step's attempts."""
        return views.saga_detail(await uc.saga(svc, saga_id))

    @get(f"{API}/admin/actors", Admin)
    async def list_actors(self, svc: Services = Svc) -> dict[str, Any]:
        """The shard actors and the projector (admin): placement on nodes, restarts, entities, mailboxes."""
        return {"items": await svc.actors.describe()}

    @get(f"{API}/admin/actors/locate", Admin)
    async def locate_entity(self, entity_id: uuid.UUID, svc: Services = Svc) -> dict[str, Any]:
        """Where an order or a SKU lives (admin): its shard actor and node, and whether it is active."""
        return await uc.locate(svc, entity_id)

    @post(f"{API}/admin/sagas/{{saga_id}}/retry")
    async def retry_saga(self, saga_id: uuid.UUID, request: Request, who: Principal = Admin, svc: Services = Svc,
                         idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Resume a FAILED saga from its failed step (admin)."""
        return await self.keyed(request, svc, who, lambda derived: answer(uc.retry_saga(svc, saga_id, derived), 202))

    @post(f"{API}/admin/sagas/{{saga_id}}/compensate")
    async def compensate_saga(self, saga_id: uuid.UUID, request: Request, body: api.Compensate | None = None,
                              who: Principal = Admin, svc: Services = Svc,
                              idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Compensate a RUNNING, FAILED or COMPLETED saga (admin)."""
        return await self.keyed(request, svc, who, lambda derived: answer(uc.compensate_saga(
            svc, saga_id, body.reason if body else None, derived), 202))

    @get(f"{API}/admin/events", Admin)
    async def query_events(self, aggregate_id: uuid.UUID | None = None,
                           aggregate_type: str | None = Query(None, max_length=100, pattern=NAME),
                           event_type: str | None = Query(None, max_length=100, pattern=NAME),
                           after_position: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(50, ge=1, le=500),
                           svc: Services = Svc) -> dict[str, Any]:
        """Events in commit order; pass ``next_position`` back as ``after_position`` for the next page."""
        return await uc.query_events(svc, limit, aggregate_id=aggregate_id, aggregate_type=aggregate_type,
                                     event_type=event_type, after_position=after_position)

    # --- operations ------------------------------------------------------------------------------------

    @get("/livez")
    async def livez(self) -> dict[str, str]:
        """Liveness: the replica answers; no dependency is consulted (see /health for those)."""
        return {"status": "ok"}

    @functools.cached_property
    def _shared(self) -> dict[str, Coalesced[Any]]:
        """This replica's shared runs of what anyone may ask for at will (``Coalesced``). Their deadlines are above
        what a run takes when a dependency is slow: /health's checks take 5 s each at most, side by side, after
        at most 5 s for the connections; a scrape asks each actor twice for 10 s at most before leaving it out."""
        return {"health": Coalesced(deadline=15.0), "metrics": Coalesced(deadline=30.0)}

    @get("/health")
    async def health(self, request: Request) -> JSONResponse:
        """The status of each check; their details (positions, counts, errors) only for an admin, whose
        request runs the checks afresh (an operator who has just acted sees its effect)."""
        if self.gate.is_admin(request.headers.get("authorization", "")):
            report = await check_health(self.provider)
        else:
            shared = await self._shared["health"].run(lambda: check_health(self.provider))
            report = {"status": shared["status"], "checks": {k: {"status": c["status"]} for k, c in shared["checks"].items()}}
        return JSONResponse(report, 200 if report["status"] == "ok" else 503)

    @get("/metrics")
    async def metrics(self, svc: Services = Svc) -> Response:
        async def scrape() -> str:
            per_actor = await exposition.actor_families(svc.actors)
            service = await service_metrics(svc, uc.now(), ABANDONED_AFTER)
            return exposition.exposition(per_actor, service)

        return PlainTextResponse(await self._shared["metrics"].run(scrape), media_type=m.MEDIA_TYPE)

    @page("/console")
    async def console(self) -> Response:
        """The operator console (a static page; the admin token is entered in the page)."""
        return console_file("index.html")

    @page("/console/{name}")
    async def console_file(self, name: str) -> Response:
        return console_file(name)
