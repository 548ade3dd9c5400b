"""A dependency outage answers 503 with Retry-After and loses nothing; service resumes when it is back.

The servers stopped here are embedded ones this test starts itself, never the machine's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import serve_app
from commerce.runtime import run_migrations
from commerce.settings import Settings
from store.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.integration.ray_support import TEST_JWT_SECRET

ADMIN = {"Authorization": "Bearer t"}


@pytest.fixture
async def app_over_embedded(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedPostgres, EmbeddedRedis]]:
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    settings = Settings(database_url=pg.start(), redis_url=rd.start(), admin_token="t", data_dir=tmp_path,
                        namespace=f"outage-{uuid.uuid4().hex[:6]}", jwt_secret=TEST_JWT_SECRET,
                        server_secret="outage-server-secret")
    await run_migrations(settings.database_url or "")
    saved = (serve_app.Replica.settings, serve_app.Replica.provider, serve_app.Replica.verifier)
    serve_app.Replica.configure(settings)
    transport = httpx.ASGITransport(app=serve_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=ADMIN) as client:
        yield client, pg, rd
    services = await serve_app.Replica.provider.get()
    await services.carts.close()
    await services.pool.close()
    serve_app.Replica.settings, serve_app.Replica.provider, serve_app.Replica.verifier = saved
    rd.stop()
    pg.stop()


async def test_redis_down_answers_503_and_the_cart_is_back_with_redis(
        app_over_embedded: tuple[httpx.AsyncClient, EmbeddedPostgres, EmbeddedRedis]) -> None:
    http, _, rd = app_over_embedded
    cart = (await http.post("/api/v1/cart", json={"customer_id": str(uuid.uuid4())})).json()
    rd.stop()
    down = await http.get(f"/api/v1/cart/{cart['id']}")
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.headers["content-type"] == "application/problem+json"
    created = await http.post("/api/v1/cart", json={"customer_id": str(uuid.uuid4())})
    assert created.status_code == 503
    rd.start()
    back = await http.get(f"/api/v1/cart/{cart['id']}")
    assert back.status_code == 200 and back.json()["id"] == cart["id"]


async def test_postgres_down_answers_503_and_reads_resume_when_it_is_back(
        app_over_embedded: tuple[httpx.AsyncClient, EmbeddedPostgres, EmbeddedRedis]) -> None:
    http, pg, _ = app_over_embedded
    assert (await http.get("/api/v1/orders")).status_code == 200
    pg.stop()
    down = await http.get("/api/v1/orders")
    assert down.status_code == 503 and down.headers["retry-after"]
    keyed = await http.post("/api/v1/orders", headers={"Idempotency-Key": "k-outage"}, json={
        "customer_id": str(uuid.uuid4()), "items": [{"product_id": str(uuid.uuid4()), "quantity": 1}],
        "payment_token": "tok_visa",
        "shipping_address": {"name": "A", "line1": "1", "city": "C", "postal_code": "1", "country": "US"}})
    assert keyed.status_code == 503
    admin = await http.get("/api/v1/admin/sagas", headers={"Authorization": "Bearer t"})
    assert admin.status_code == 503
    pg.start()
    assert (await http.get("/api/v1/orders")).status_code == 200
