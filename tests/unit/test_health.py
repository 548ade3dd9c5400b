"""/health's verdict from its checks, over fakes of its dependencies: a parked projection and a saga
waiting for an operator each make it fail (503), and the failing check says why. Probes that come at
once share one run of the checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

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
        self.go = asyncio.Event()

    async def __call__(self) -> int:
        self.runs += 1
        number = self.runs
        await self.go.wait()
        if isinstance(self.failure, Exception):
            raise self.failure
        return number

    failure: Exception | None = None


async def test_callers_arriving_while_a_run_is_under_way_share_it_and_later_ones_start_the_next() -> None:
    shared, probe = Coalesced[int](), Probe()
    burst = [asyncio.ensure_future(shared.run(probe)) for _ in range(50)]
    await asyncio.sleep(0)  # every caller has arrived
    probe.go.set()
    assert await asyncio.gather(*burst) == [1] * 50
    assert await shared.run(probe) == 2  # after it ended: a run of its own


async def test_a_caller_that_leaves_does_not_stop_the_run_for_the_others_and_a_failure_reaches_them_all() -> None:
    shared, probe = Coalesced[int](), Probe()
    leaving, staying = asyncio.ensure_future(shared.run(probe)), asyncio.ensure_future(shared.run(probe))
    await asyncio.sleep(0)
    leaving.cancel()
    probe.go.set()
    assert await staying == 1
    probe.failure = StoreUnavailable("PostgreSQL is down")
    failing = [asyncio.ensure_future(shared.run(probe)) for _ in range(3)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert probe.runs == 2 and all(r is probe.failure for r in results)
