"""Reservation ids chosen by API callers, claimed once across every SKU.

A SKU knows the reservations made against it; this registry makes a direct reservation id mean one
thing everywhere: the same caller, product and quantity. Any other reuse of the id is refused before
any SKU is asked. An entry also says whether a SKU has held the reservation: a SKU forgets a closed
reservation 7 days after it ends, and the registry's word keeps a reserve re-sent after that from holding
stock a second time. Entries are kept as long as a SKU remembers a sale (90 days).
"""

from __future__ import annotations

import dataclasses
import enum
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


class Claim(enum.Enum):
    TAKEN = "taken"  # the id is another reservation's (caller, product or quantity)
    OPEN = "open"  # this reservation's, and no SKU has held it yet (a new id, or one refused before)
    HELD = "held"  # this reservation's, and its SKU held it (it may have ended since)


class DirectReservations:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, r: DirectReservation) -> Claim:
        """Claim the id for this reservation."""
        with postgres_errors():
            row = await self.pool.fetchrow(
                """WITH claimed AS (
                       INSERT INTO direct_reservations (reservation_id, product_id, owner, quantity)
                       VALUES ($1, $2, $3, $4) ON CONFLICT (reservation_id) DO NOTHING
                       RETURNING product_id, owner, quantity, held)
                   SELECT product_id, owner, quantity, held FROM claimed
                   UNION ALL
                   SELECT product_id, owner, quantity, held FROM direct_reservations WHERE reservation_id = $1
                   LIMIT 1""",
                r.reservation_id, r.product_id, r.owner, r.quantity)
            if row is None:  # a concurrent claim committed after this statement's snapshot was taken
                row = await self.pool.fetchrow(
                    "SELECT product_id, owner, quantity, held FROM direct_reservations WHERE reservation_id = $1",
                    r.reservation_id)
        if row is None or (row["product_id"], row["owner"], row["quantity"]) != (r.product_id, r.owner, r.quantity):
            return Claim.TAKEN
        return Claim.HELD if row["held"] else Claim.OPEN

    async def registered(self, reservation_id: uuid.UUID) -> DirectReservation | None:
        """The reservation the id was claimed for, if it was; claims nothing."""
        with postgres_errors():
            row = await self.pool.fetchrow(
                "SELECT product_id, owner, quantity FROM direct_reservations WHERE reservation_id = $1", reservation_id)
        return None if row is None else DirectReservation(reservation_id, row["product_id"], row["owner"], row["quantity"])

    async def held(self, reservation_id: uuid.UUID) -> None:
        """Its SKU has held the reservation: from now on a SKU that no longer knows it has forgotten it."""
        with postgres_errors():
            await self.pool.execute(
                "UPDATE direct_reservations SET held = TRUE WHERE reservation_id = $1 AND NOT held", reservation_id)

    async def purge(self) -> int:
        with postgres_errors():
            status = await self.pool.execute(
                "DELETE FROM direct_reservations WHERE created_at < NOW() - make_interval(days => $1)", KEEP_DAYS)
        return int(status.split()[-1])
