from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from tests.integration.ray_support import TEST_JWT_SECRET

ADMIN = {"Authorization": "Bearer test-admin-token"}


def token(subject: str, role: str = "customer", ttl: float = 3600.0, secret: str = TEST_JWT_SECRET,
          **claims: object) -> str:
    """A JWT signed the way the session's service verifies them, valid for the whole session by default
    (modules make some at import, long before their tests run)."""
    issued = dt.datetime.now(dt.UTC)
    body = {"sub": subject, "role": role, "iat": issued, "exp": issued + dt.timedelta(seconds=ttl), **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def customer_headers(customer_id: str | None = None) -> tuple[str, dict[str, str]]:
    """A fresh customer (or the given one) and the headers that authenticate it."""
    customer_id = customer_id or str(uuid.uuid4())
    return customer_id, bearer(token(customer_id))


@pytest.fixture(scope="session")
async def http(api: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client acting as the admin (who may act for any customer); tests of access rules use others."""
    async with httpx.AsyncClient(base_url=api, timeout=60, headers=ADMIN) as client:
        yield client


@pytest.fixture(scope="session")
async def anonymous(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        yield client
