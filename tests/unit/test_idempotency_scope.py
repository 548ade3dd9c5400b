"""An Idempotency-Key's scope names the request's path with its ids written one way: every spelling of an id
that the routes accept is the same resource, and so the same request; any other segment is left as it is. A
request under a key that fails with a bug is not stored, and its failure is logged with its traceback."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from commerce.auth import Principal, Role
from commerce.http import canonical_path, idempotent
from store.idempotency import StoredResponse

ID = uuid.UUID("6a6ccc99-4b04-48c1-9d1e-0123456789ab")
SPELLINGS = [str(ID), str(ID).upper(), ID.hex, ID.hex.upper(), "{" + str(ID) + "}", "{" + str(ID).upper() + "}",
             "urn:uuid:" + str(ID), "URN:UUID:" + str(ID), "{" + ID.hex + "}", "urn:uuid:" + ID.hex, "+" + ID.hex[1:],
             "0x" + ID.hex[2:], ID.hex[:31], " " + str(ID), str(ID) + "0", "orders", "", "reserve"]


@pytest.mark.parametrize("spelt", SPELLINGS)
def test_a_path_names_its_ids_as_the_routes_read_them(spelt: str) -> None:
    try:
        read = TypeAdapter(uuid.UUID).validate_python(spelt)  # what a route's UUID parameter makes of it
    except ValidationError:
        read = None
    path = f"/api/v1/inventory/{spelt}/reserve"
    assert canonical_path(path) == (f"/api/v1/inventory/{read}/reserve" if read is not None else path)


class Keys:
    """An IdempotencyStore that knows no key yet, and records what becomes of the claim."""

    def __init__(self) -> None:
        self.completed: list[int] = []
        self.released = 0

    async def claim_salted(self, scope: str, key: str, fp: str) -> tuple[None, uuid.UUID]:
        return None, uuid.uuid4()

    @contextlib.asynccontextmanager
    async def held(self, scope: str, key: str) -> AsyncIterator[None]:
        yield

    async def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        self.completed.append(response.status)

    async def release(self, scope: str, key: str) -> None:
        self.released += 1


async def test_a_bug_under_a_key_is_a_500_logged_with_its_traceback_and_the_key_is_released(
        caplog: pytest.LogCaptureFixture) -> None:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/api/v1/orders", "query_string": b"",
                       "headers": [(b"idempotency-key", b"k1")]}, receive)
    keys = Keys()

    async def work(order_id: uuid.UUID | None) -> JSONResponse:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR):
        response = await idempotent(request, keys, b"secret", Principal(Role.ADMIN, "admin"),  # type: ignore[arg-type]
                                    work)
    assert response.status_code == 500 and keys.completed == [] and keys.released == 1
    failed = [r for r in caplog.records if r.exc_info is not None]
    assert len(failed) == 1 and isinstance(failed[0].exc_info[1], RuntimeError)  # type: ignore[index]
