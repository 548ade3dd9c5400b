"""Reservation ids chosen by API callers, claimed once across every SKU.

A SKU knows the reservations made against it; this registry makes a direct reservation id mean one
thing everywhere: the same caller, product and quantity. Any other reuse of the id is refused before
any SKU is asked. Entries are kept as long as a SKU remembers a sale (90 days).
"""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg

from store.errors import postgres_errors

KEEP_DAYS = 90


@dataclasses.dataclass(frozen=True, slots=True)
class DirectReservation:
    reservation_id: uuid.UUID
    product_id: uuid.UUID
    owner: str
    quantity: int


class DirectReservations:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, r: DirectReservation) -> bool:
        """Claim the id for this reservation; False when it is taken for another one."""
        with postgres_errors():
            row = await self.pool.fetchrow(
                """WITH claimed AS (
                       INSERT INTO direct_reservations (reservation_id, product_id, owner, quantity)
                       VALUES ($1, $2, $3, $4) ON CONFLICT (reservation_id) DO NOTHING
                       RETURNING product_id, owner, quantity)
                   SELECT product_id, owner, quantity FROM claimed
                   UNION ALL
                   SELECT product_id, owner, quantity FROM direct_reservations WHERE reservation_id = $1
                   LIMIT 1""",
                r.reservation_id, r.product_id, r.owner, r.quantity)
            if row is None:  # a concurrent claim committed after this statement's snapshot was taken
                row = await self.pool.fetchrow(
                    "SELECT product_id, owner, quantity FROM direct_reservations WHERE reservation_id = $1",
                    r.reservation_id)
        return row is not None and (row["product_id"], row["owner"], row["quantity"]) == (
            r.product_id, r.owner, r.quantity)

    async def purge(self) -> int:
        with postgres_errors():
            status = await self.pool.execute(
                "DELETE FROM direct_reservations WHERE created_at < NOW() - make_interval(days => $1)", KEEP_DAYS)
        return int(status.split()[-1])
