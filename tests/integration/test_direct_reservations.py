"""The registry of direct reservation ids on a real PostgreSQL: an id is one reservation (caller, product,
quantity) everywhere, and the registry remembers whether its SKU held it, also across a migration from a
database whose entries predate that."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from store.event_store import create_pool
from store.migrations import migrate
from store.reservations import Claim, DirectReservation, DirectReservations
from tests.integration.test_migrations import migrated_to
from tests.support import Servers, create_database, drop_database


@pytest.fixture
async def registry(database: str) -> AsyncIterator[DirectReservations]:
    pool = await create_pool(database, 4)
    yield DirectReservations(pool)
    await pool.close()


def reservation(owner: str = "service:w1", quantity: int = 3) -> DirectReservation:
    return DirectReservation(uuid.uuid4(), uuid.uuid4(), owner, quantity)


async def test_an_id_is_open_until_its_sku_held_it_and_held_after(registry: DirectReservations) -> None:
    r = reservation()
    assert await registry.claim(r) is Claim.OPEN
    assert await registry.claim(r) is Claim.OPEN  # refused by its SKU, say, and sent again: still open
    await registry.held(r.reservation_id)
    assert await registry.claim(r) is Claim.HELD
    for other in (DirectReservation(r.reservation_id, r.product_id, "service:w2", 3),
                  DirectReservation(r.reservation_id, r.product_id, "service:w1", 4),
                  DirectReservation(r.reservation_id, uuid.uuid4(), "service:w1", 3)):
        assert await registry.claim(other) is Claim.TAKEN


async def test_concurrent_claims_of_one_id_agree_on_one_reservation(registry: DirectReservations) -> None:
    rid, pid = uuid.uuid4(), uuid.uuid4()
    claims = await asyncio.gather(*[registry.claim(DirectReservation(rid, pid, f"service:w{i % 2}", 3))
                                    for i in range(20)])
    assert {c for c in claims} == {Claim.OPEN, Claim.TAKEN} and claims.count(Claim.OPEN) == 10


async def test_entries_made_before_the_registry_knew_holds_are_taken_as_never_held(servers: Servers) -> None:
    dsn = await create_database(servers.database_url, "commerce_registry")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrated_to(conn, 11)
            r = reservation()
            await conn.execute("INSERT INTO direct_reservations (reservation_id, product_id, owner, quantity) "
                               "VALUES ($1, $2, $3, $4)", r.reservation_id, r.product_id, r.owner, r.quantity)
            assert 12 in await migrate(conn)
        finally:
            await conn.close()
        pool = await create_pool(dsn, 2)
        try:
            assert await DirectReservations(pool).claim(r) is Claim.OPEN
        finally:
            await pool.close()
    finally:
        await drop_database(servers.database_url, dsn)
