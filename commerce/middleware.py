"""ASGI middleware of the ingress: the request body guard, and the record of every request (its
problem ``instance``, its log line, a 500 problem for an exception no handler took)."""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import quote

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commerce import logs
from commerce.http import PROBLEM, PROBLEM_BASE, error_response, log, problem

# --- the request body -----------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


class _Gone(Exception):
    pass


class BodyGuard:
    """Reads the body before the app sees it: over ``limit`` bytes is a 413, bytes that are not UTF-8
    a 400, and a body cut short by the client's leaving is never handed to the app (a command would run on
    part of it). Bodies are small (the limit is 64 KiB), so reading them whole costs nothing."""

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
        except _Gone:  # the client left before its body was whole: what came is not the request it meant
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
            if message["type"] != "http.request":  # http.disconnect
                raise _Gone
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
