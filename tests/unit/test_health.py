"""/health's verdict from its checks, over fakes of its dependencies: a parked projection and a saga
waiting for an operator each make it fail (503), and the failing check says why. Probes that come at
once share one run of the checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from actors.calls import ServiceUnavailable
from actors.directory import ActorDirectory
from commerce.health import Coalesced, check_health
from commerce.settings import Settings
from store.errors import StoreUnavailable
from store.migrations import LATEST


class FakeConnection:
    async def fetchval(self, sql: str, *args: Any) -> Any:
        return True if "to_regclass" in sql else LATEST


class FakePool:
    async def fetchval(self, sql: str, *args: Any) -> Any:
        return 1

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection()


class FakeActor:
    """Stands for an actor handle: ``handle.method.remote()`` gives something to await."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def __getattr__(self, method: str) -> Any:
        async def answer() -> Any:
            if isinstance(self.answers[method], Exception):
                raise self.answers[method]
            return self.answers[method]

        return SimpleNamespace(remote=lambda *args, **kwargs: answer())


def services(projections: dict[str, Any], saga_counts: dict[str, int]) -> Any:
    directory = ActorDirectory("test", 1, 1)
    for ref in directory.all:
        ref._handle = FakeActor({"ping": {"ok": True}, "status": projections})

    async def counts() -> dict[str, int]:
        return saga_counts

    async def oldest() -> float:
        return 1.0

    async def ping() -> bool:
        return True

    return SimpleNamespace(settings=Settings(), pool=FakePool(), actors=directory,
                           carts=SimpleNamespace(ping=ping), sagas=SimpleNamespace(counts=counts,
                                                                                 oldest_unfinished_age=oldest))


class Provider:
    def __init__(self, svc: Any) -> None:
        self.svc = svc

    async def get(self) -> Any:
        return self.svc


HEALTHY = {"order_views": {"position": 9, "lag_events": 0, "lag_seconds": 0.0, "error": None}}


async def test_all_checks_pass_when_nothing_is_parked() -> None:
    report = await check_health(Provider(services(HEALTHY, {"COMPLETED": 3})))  # type: ignore[arg-type]
    assert report["status"] == "ok" and {c["status"] for c in report["checks"].values()} == {"ok"}


async def test_a_parked_projection_fails_the_event_store_check_naming_the_event() -> None:
    parked = {"order_views": {**HEALTHY["order_views"], "error": "KeyError: 'lines'", "failed_event_id": "7f3e"}}
    report = await check_health(Provider(services(parked, {})))  # type: ignore[arg-type]
    assert report["status"] == "fail" and report["checks"]["event_store"]["status"] == "fail"
    assert "7f3e" in report["checks"]["event_store"]["error"]
    assert report["checks"]["sagas"]["status"] == "ok"


async def test_a_saga_waiting_for_an_operator_fails_the_sagas_check() -> None:
    report = await check_health(Provider(services(HEALTHY, {"FAILED": 2, "COMPLETED": 5})))  # type: ignore[arg-type]
    assert report["status"] == "fail" and report["checks"]["sagas"]["status"] == "fail"
    assert "2 saga(s) FAILED" in report["checks"]["sagas"]["error"]
    assert report["checks"]["event_store"]["status"] == "ok"


async def test_an_actor_that_answers_with_an_error_does_not_hide_the_others_from_the_operator() -> None:
    directory = ActorDirectory("test", 1, 1)
    order, inventory, projector = directory.all
    order._handle = FakeActor({"describe": StoreUnavailable("the database is unavailable")})  # its start failed
    inventory._handle = FakeActor({"describe": {"kind": "inventory"}})
    projector._handle = FakeActor({"describe": ValueError("a bug of its own")})
    found = await directory.each("describe")
    assert found[inventory.name] == {"kind": "inventory"}
    assert isinstance(found[order.name], StoreUnavailable) and isinstance(found[projector.name], ValueError)


# --- a burst of probes shares one run --------------------------------------------------------------------


class Probe:
    """A computation the test lets finish: how many runs were started, and each run's number."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.failure: Exception | None = None  # what the runs from now on raise

    async def __call__(self) -> int:
        self.runs += 1
        number = self.runs
        self.started.set()
        await self.go.wait()
        if self.failure is not None:
            raise self.failure
        return number


async def test_callers_arriving_while_a_run_is_under_way_share_it_and_later_ones_start_the_next() -> None:
    shared, probe = Coalesced[int](deadline=60), Probe()
    burst = [asyncio.ensure_future(shared.run(probe)) for _ in range(50)]
    await probe.started.wait()
    late = asyncio.ensure_future(shared.run(probe))  # joins the run under way
    probe.go.set()
    assert await asyncio.gather(*burst, late) == [1] * 51
    assert await shared.run(probe) == 2  # after it ended: a run of its own


async def test_a_caller_that_leaves_does_not_stop_the_run_for_the_others_and_a_failure_reaches_them_all() -> None:
    shared, probe = Coalesced[int](deadline=60), Probe()
    leaving, staying = asyncio.ensure_future(shared.run(probe)), asyncio.ensure_future(shared.run(probe))
    await asyncio.sleep(0)
    leaving.cancel()
    probe.go.set()
    assert await staying == 1
    probe.failure = StoreUnavailable("PostgreSQL is down")
    failing = [asyncio.ensure_future(shared.run(probe)) for _ in range(3)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert probe.runs == 2 and all(r is probe.failure for r in results)


async def test_a_run_stuck_past_its_deadline_is_a_503_and_the_next_caller_starts_afresh() -> None:
    shared, probe = Coalesced[int](deadline=0.05), Probe()  # the run waits for a go that never comes
    with pytest.raises(ServiceUnavailable):
        await shared.run(probe)
    probe.go.set()
    assert await shared.run(probe) == 2


class CountingProvider(Provider):
    """Counts the runs of the checks (each asks for the services once), and holds them until told."""

    def __init__(self, svc: Any) -> None:
        super().__init__(svc)
        self.asked = 0
        self.go = asyncio.Event()

    async def get(self) -> Any:
        self.asked += 1
        await self.go.wait()
        return self.svc


async def test_anonymous_probes_at_once_share_one_run_of_the_checks_and_an_admin_runs_them_afresh() -> None:
    import serve_app
    from tests.unit.test_openapi import request

    provider = CountingProvider(services(HEALTHY, {"FAILED": 1, "COMPLETED": 2}))
    ingress = serve_app.Ingress(Settings(server_secret="test", admin_token="admin-token"), provider)
    probes = [asyncio.ensure_future(ingress.health(request())) for _ in range(20)]
    admin_request = request()
    admin_request.scope["headers"] = [(b"authorization", b"Bearer admin-token")]
    admin = asyncio.ensure_future(ingress.health(admin_request))
    for _ in range(100):  # turns of the loop, until every request has started what it runs
        await asyncio.sleep(0)
    assert provider.asked == 2  # the probes' one run, and the admin's own, each asking for the services once
    provider.go.set()
    answers = await asyncio.gather(*probes)
    assert provider.asked == 2
    assert {a.status_code for a in answers} == {503}
    assert {json.dumps(json.loads(a.body)["checks"]["sagas"]) for a in answers} == {'{"status": "fail"}'}  # no details
    admin_report = json.loads((await admin).body)
    assert "1 saga(s) FAILED" in admin_report["checks"]["sagas"]["error"]
