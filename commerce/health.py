"""/health checks and the service-wide figures of /metrics that come from PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from actors import metrics as m
from actors.calls import ServiceUnavailable
from actors.client import call
from commerce.services import Services, ServicesProvider
from domain.saga import SagaStatus
from store import queries
from store.migrations import LATEST, current_version

T = TypeVar("T")


class Coalesced(Generic[T]):
    """A computation that callers arriving while it runs share, rather than each starting their own: a burst of
    anonymous /health probes or /metrics scrapes, however large, costs PostgreSQL and the actors one run at a
    time per replica. A caller that joins gets the run under way, which began before it arrived (at most one
    run old); a caller that comes after it ended starts the next. A caller that leaves does not stop the run
    for the others, and a run lasts at most ``deadline`` seconds (then ServiceUnavailable, a 503), so that one
    stuck on a dependency does not hold up every later caller after the dependency is back."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._run: asyncio.Task[T] | None = None

    async def run(self, compute: Callable[[], Awaitable[T]]) -> T:
        """The run under way, or ``compute``'s, started now."""
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(self._bounded(compute))
        return await asyncio.shield(self._run)

    async def _bounded(self, compute: Callable[[], Awaitable[T]]) -> T:
        try:
            return await asyncio.wait_for(compute(), self.deadline)
        except TimeoutError as e:
            raise ServiceUnavailable(f"not done within {self.deadline:.0f} s") from e


async def _check(probe: Any, timeout: float = 5.0) -> dict[str, Any]:
    try:
        details = await asyncio.wait_for(probe(), timeout)
        return {"status": "ok", **(details or {})}
    except Exception as e:
        return {"status": "fail", "error": f"{type(e).__name__}: {e}"[:300]}


async def check_health(provider: ServicesProvider) -> dict[str, Any]:
    """Every check's status, and its details."""
    svc_or_error: Services | Exception
    try:
        svc_or_error = await asyncio.wait_for(provider.get(), 5.0)
    except Exception as e:
        svc_or_error = e
    if isinstance(svc_or_error, Exception):
        failed = {"status": "fail", "error": f"{type(svc_or_error).__name__}: {svc_or_error}"[:300]}
        checks = dict.fromkeys(("postgres", "redis", "event_store", "sagas", "actors"), failed)
        return {"status": "fail", "checks": checks}
    svc = svc_or_error

    async def postgres() -> dict[str, Any]:
        await svc.pool.fetchval("SELECT 1")
        return {}

    async def redis() -> dict[str, Any]:
        await svc.carts.ping()
        return {}

    async def event_store() -> dict[str, Any]:
        async with svc.pool.acquire() as conn:
            version = await current_version(conn)
        if version != LATEST:
            raise RuntimeError(f"schema at version {version}, expected {LATEST}")
        status = await call(svc.actors.projector, "status", timeout=5.0)
        broken = {name: f"{p['error']} (at event {p.get('failed_event_id')})" for name, p in status.items()
                  if p["error"]}
        if broken:
            raise RuntimeError(f"projections parked: {broken}")
        return {"schema_version": version, "projections": status}

    async def sagas() -> dict[str, Any]:
        counts = await svc.sagas.counts()
        oldest = await svc.sagas.oldest_unfinished_age()
        stuck_after = svc.settings.saga_timeout + 10 * svc.settings.saga_compensation_timeout + 60
        running_too_long = oldest > stuck_after and (counts.get("RUNNING", 0) + counts.get("COMPENSATING", 0)) > 0
        if running_too_long:
            raise RuntimeError(f"oldest unfinished saga is {oldest:.0f}s old")
        if counts.get("FAILED", 0):  # parked: nothing moves them on but an operator
            raise RuntimeError(f"{counts['FAILED']} saga(s) FAILED, waiting for an operator")
        return {"counts": counts, "oldest_unfinished_seconds": round(oldest, 1),
                "waiting_for_operator": counts.get("FAILED", 0)}

    async def actors() -> dict[str, Any]:
        results = await svc.actors.each("ping")
        down = [name for name, r in results.items() if isinstance(r, Exception)]
        if down:
            raise RuntimeError(f"actors not answering: {down}")
        failing = {name: r["failing"] for name, r in results.items() if isinstance(r, dict) and r.get("failing")}
        if failing:
            raise RuntimeError(f"background work failing: {failing}")
        return {"count": len(results)}

    names = ("postgres", "redis", "event_store", "sagas", "actors")
    results = await asyncio.gather(*[_check(p) for p in (postgres, redis, event_store, sagas, actors)])
    checks = dict(zip(names, results, strict=True))
    ok = all(c["status"] == "ok" for c in checks.values())
    return {"status": "ok" if ok else "fail", "checks": checks}


async def service_metrics(svc: Services, now: dt.datetime, abandoned_after: float) -> list[m.Family]:
    """Figures kept in PostgreSQL and Redis: sagas by status, carts, stock, for the KPIs."""
    saga_counts = await svc.sagas.counts()
    oldest = await svc.sagas.oldest_unfinished_age()
    carts = await svc.carts.stats(now, abandoned_after)
    stock = await queries.inventory_totals(svc.pool)
    return service_families(saga_counts, oldest, carts, stock, abandoned_after)


def service_families(saga_counts: dict[str, int], oldest_unfinished: float, carts: dict[str, Any],
                     stock: dict[str, int], abandoned_after: float) -> list[m.Family]:
    """The service-wide families of /metrics (no ``shard`` label): every saga status, 0 when none is in it."""
    sagas = {s.value: 0 for s in SagaStatus} | saga_counts
    return [
        m.by_label("gauge", "commerce_sagas", "Sagas by status", "status", sagas),
        m.single("gauge", "commerce_saga_oldest_unfinished_seconds", "Age of the oldest saga not in a terminal state",
                 oldest_unfinished),
        m.by_label("counter", "commerce_cart_operations", "Cart operations by kind", "operation", carts["operations"]),
        m.single("counter", "commerce_carts_created", "Carts created", carts["created"]),
        m.single("counter", "commerce_carts_checked_out", "Carts checked out", carts["checked_out"]),
        m.single("gauge", "commerce_carts_abandoned", f"Open carts idle for more than {abandoned_after:.0f}s",
                 carts["abandoned"]),
        m.single("gauge", "commerce_carts_open", "Carts not checked out", carts["open"]),
        m.single("gauge", "commerce_inventory_units_sold_net", "Units sold net of returns (read model)", stock["sold"]),
        m.single("gauge", "commerce_inventory_on_hand_units", "Units on hand over all SKUs (read model)",
                 stock["on_hand"]),
        m.single("gauge", "commerce_inventory_reserved_units", "Units reserved over all SKUs (read model)",
                 stock["reserved"]),
    ]
