"""Queries of the read side: order lists from ``order_views``, store-wide figures for /metrics."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import asyncpg

from store.errors import postgres_errors
from store.filters import Where


class BadCursor(ValueError):
    """A list cursor that this service did not hand out."""


def encode_cursor(created_at: dt.datetime, entity_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(entity_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, entity_id = json.loads(raw)
        if not (isinstance(created_at, str) and isinstance(entity_id, str)):
            raise TypeError("a cursor holds two strings")
        at = dt.datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        return at.astimezone(dt.UTC), uuid.UUID(entity_id)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise BadCursor("cursor is not valid") from e


async def list_orders(pool: asyncpg.Pool, *, customer_id: uuid.UUID | None, status: str | None, limit: int,
                      cursor: str | None) -> tuple[list[asyncpg.Record], str | None]:
    """A page of ``order_views`` rows, newest first, and the cursor of the next page (None: the last)."""
    after = decode_cursor(cursor)
    where = (Where().given("customer_id = {}", customer_id).given("status = {}", status)  # store.filters
             .given("(created_at, order_id) < ({}, {})", after))
    with postgres_errors():
        rows = await pool.fetch(
            f"""SELECT * FROM order_views {where.clause()}
                ORDER BY created_at DESC, order_id DESC LIMIT {where.then(limit + 1)}""", *where.arguments)
    next_cursor = encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["order_id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def inventory_totals(pool: asyncpg.Pool) -> dict[str, int]:
    with postgres_errors():
        row = await pool.fetchrow(
            """SELECT COALESCE(SUM(units_sold), 0) AS sold, COALESCE(SUM(on_hand), 0) AS on_hand,
                      COALESCE(SUM(reserved), 0) AS reserved, COUNT(*) AS skus FROM inventory_views""")
    return {k: int(v) for k, v in dict(row).items()}
