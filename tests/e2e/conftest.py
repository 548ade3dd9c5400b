from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

ADMIN = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture(scope="session")
async def http(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        yield client
