"""The ingress's request middleware: problem answers name their request, and an exception no handler
took is still a problem+json 500 with its instance, logged with its traceback."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from commerce.http import PROBLEM, problem
from commerce.middleware import RequestRecord


def app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(RequestRecord)

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @api.get("/missing")
    async def missing() -> JSONResponse:
        return problem(404, "not-found", "no such thing")

    @api.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    return api


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def test_an_unhandled_exception_is_a_500_problem_naming_its_request(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ray.serve.commerce"):
        r = await client.get("/boom", headers={"X-Request-ID": "req-1"})
    assert r.status_code == 500 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["instance"] == "/boom#request=req-1" and "a bug" not in r.text
    [line] = [x for x in caplog.records if x.name == "ray.serve.commerce"]
    assert line.levelno == logging.ERROR and line.exc_info and line.status == 500  # type: ignore[attr-defined]


async def test_a_problem_gets_an_instance_that_a_crafted_path_or_id_cannot_forge(client: httpx.AsyncClient) -> None:
    r = await client.get("/missing", headers={"X-Request-ID": "a#request=b c"})
    assert r.status_code == 404 and int(r.headers["content-length"]) == len(r.content)
    assert r.json()["instance"] == "/missing#request=a%23request%3Db%20c"


async def test_a_good_answer_is_passed_on_untouched_and_a_read_writes_no_line(
        client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ray.serve.commerce"):
        r = await client.get("/fine")
    assert r.status_code == 200 and r.json() == {"ok": "yes"} and "instance" not in r.text
    assert [x for x in caplog.records if x.name == "ray.serve.commerce"] == []


async def test_a_body_cut_short_by_the_client_leaving_never_reaches_the_app() -> None:
    from commerce.middleware import BodyGuard

    seen: list[bytes] = []

    async def inner(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        message = await receive()  # type: ignore[operator]
        seen.append(message["body"])

    messages = [{"type": "http.request", "body": b'{"reason": "cha', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return messages.pop(0)

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"content-length", b"27")]}
    await BodyGuard(inner, 65536)(scope, receive, send)
    assert seen == [] and sent == []  # nobody is left to answer

    whole = [{"type": "http.request", "body": b'{"reason": "cha', "more_body": True},
             {"type": "http.request", "body": b'nged"}', "more_body": False}]
    messages[:] = whole
    await BodyGuard(inner, 65536)(scope, receive, send)
    assert seen == [b'{"reason": "changed"}']
