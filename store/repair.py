"""``commerce events repair``: for each problem ``verify`` finds, the safe fix, or why there is none.

Events are the source of truth and are never rewritten. So a repair only rebuilds what derives from
them (read models, the ``sagas`` tables, checkpoints), or sets aside an event that the running code
cannot read when nothing in its stream comes after it and no newer release has migrated the database (a
newer release is known by its migrations only: one that adds event types and no migration is not seen). A
gap in a stream, an event in the middle of a stream that does not decode, or a stream that does not start
as its aggregate does, cannot be fixed from the store itself: the answer names what to do instead.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from store import migrations
from store import repository as repo
from store.event_store import SERVICE, PostgresEventStore, record_from_row
from store.projections import rebuild
from store.sagas import SagaStore
from store.verify import Kind, Problem, find_problems


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """A planned repair: what it does, and the problems it answers."""

    action: str
    problems: tuple[Problem, ...]
    run: Callable[[asyncpg.Pool], Awaitable[None]] | None  # None: no safe fix

    @property
    def safe(self) -> bool:
        return self.run is not None


_CANNOT = {
    Kind.GAP: "a missing version cannot be made up from the store: restore the stream from a backup",
    Kind.BAD_STREAM: "the stream's first event is not its aggregate's creation: restore it from a backup",
}


async def plan(pool: asyncpg.Pool, problems: list[Problem]) -> list[Step]:
    """The repairs for ``problems``, safest first; nothing is changed."""
    steps: list[Step] = []
    by_kind = {kind: tuple(p for p in problems if p.kind is kind) for kind in Kind}
    for kind in (Kind.GAP, Kind.BAD_STREAM):
        steps += [Step(f"cannot fix: {_CANNOT[kind]}", (p,), None) for p in by_kind[kind]]
    unreadable = (*by_kind[Kind.UNKNOWN_TYPE], *by_kind[Kind.UNDECODABLE])
    refused = await _setting_aside_refused(pool) if unreadable else None
    set_aside = [await _set_aside(pool, p, refused) for p in unreadable]
    steps += set_aside
    blocker = next((s.problems[0] for s in set_aside if not s.safe), None)
    checkpoints = by_kind[Kind.CHECKPOINT_AHEAD]
    derived = (*checkpoints, *by_kind[Kind.READ_MODEL])
    if derived and blocker is not None:
        # A rebuild would empty the read models and then stop at that event: worse than leaving them.
        steps.append(Step(f"cannot rebuild the read models: the projections would stop at the event that stays "
                          f"({blocker})", derived, None))
    elif checkpoints:
        steps.append(Step("reset the checkpoints ahead of the store, then rebuild the read models",
                          checkpoints, _reset_checkpoints))
    elif derived:
        steps.append(Step("rebuild the read models from the events", derived, _rebuild))
    sagas = tuple(p for p in by_kind[Kind.SAGA_TABLE] if isinstance(p.subject, uuid.UUID))
    if sagas:
        steps.append(Step("re-derive the sagas rows and step histories from their events", sagas,
                          lambda pool: _rederive_sagas(pool, [s.subject for s in sagas])))  # type: ignore[misc]
    if by_kind[Kind.SAGA_COUNTS]:
        steps.append(Step("count the sagas by status again from the sagas", by_kind[Kind.SAGA_COUNTS], _recount))
    return steps


async def _setting_aside_refused(pool: asyncpg.Pool) -> str | None:
    """Why no unreadable event may be set aside now, if none may: the service runs (it could append after the
    event meanwhile, or hold the event's effect in memory), or a newer release migrated the database (the
    event may be that release's, not damage)."""
    running = int(await pool.fetchval(
        """SELECT COUNT(*) FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = $1""", SERVICE))
    if running:
        return f"cannot fix while the service runs ({running} of its connections are open): stop it, then repair again"
    async with pool.acquire() as conn:
        schema = await migrations.current_version(conn)
    if schema > migrations.LATEST:
        return (f"cannot fix: a newer release migrated this database (schema {schema}, this release knows "
                f"{migrations.LATEST}) and may have written the event; run that release's repair")
    return None


async def _set_aside(pool: asyncpg.Pool, p: Problem, refused: str | None) -> Step:
    """Quarantine an event the code cannot read, if it is the last of its stream (no gap follows) and nothing
    refuses it (``refused``: why not)."""
    if refused is not None:
        return Step(refused, (p,), None)
    row = await pool.fetchrow(
        """SELECT e.id, e.aggregate_id, e.version,
                  (SELECT MAX(version) FROM events x WHERE x.aggregate_id = e.aggregate_id) AS last
           FROM events e WHERE e.id = $1""", p.subject)
    if row is None:
        return Step("nothing to do: the event is gone already", (p,), _nothing)
    if row["version"] != row["last"]:
        return Step(f"cannot fix: events follow it in stream {row['aggregate_id']} (version {row['version']} of "
                    f"{row['last']}); run a release that knows the event, or upcast it", (p,), None)
    return Step(f"move event {row['id']} to events_quarantine (the last of stream {row['aggregate_id']})", (p,),
                lambda pool: _quarantine(pool, row["id"]))


async def _nothing(pool: asyncpg.Pool) -> None:
    return None


async def _quarantine(pool: asyncpg.Pool, event_id: uuid.UUID) -> None:
    """Move the event aside, with the snapshots that may hold its effect; checked again in the transaction."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await conn.fetchrow(
            """DELETE FROM events e WHERE e.id = $1
                 AND e.version = (SELECT MAX(version) FROM events x WHERE x.aggregate_id = e.aggregate_id)
               RETURNING *""", event_id)
        if moved is None:
            raise RepairRefused(f"event {event_id} is no longer the last of its stream; nothing was moved")
        columns = list(moved.keys())
        await conn.execute(
            f"INSERT INTO events_quarantine ({', '.join(columns)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(columns)))}) ON CONFLICT (id) DO NOTHING", *moved.values())
        await conn.execute("DELETE FROM snapshots WHERE aggregate_id = $1 AND version >= $2",
                           moved["aggregate_id"], moved["version"])


class RepairRefused(Exception):
    """A repair found the store changed since it was planned and did nothing."""


async def _rebuild(pool: asyncpg.Pool) -> None:
    await rebuild(pool)


async def _reset_checkpoints(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "DELETE FROM projection_checkpoints WHERE position > (SELECT COALESCE(MAX(position), 0) FROM events)")
    await rebuild(pool)


async def _rederive_sagas(pool: asyncpg.Pool, saga_ids: list[uuid.UUID]) -> None:
    """Rewrite each saga's rows from its events. The row is locked first, so a saga the running service
    moves on meanwhile is written by the service after this, never overwritten with an older state."""
    sagas = SagaStore(PostgresEventStore(pool))
    for saga_id in saga_ids:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM sagas WHERE saga_id = $1 FOR UPDATE", saga_id)
            rows = await conn.fetch("SELECT * FROM events WHERE aggregate_id = $1 ORDER BY version", saga_id)
            records = [record_from_row(r) for r in rows]
            saga = repo.fold(repo.SAGA, None, records)
            await conn.execute("DELETE FROM saga_steps WHERE saga_id = $1", saga_id)
            if saga is None:
                await conn.execute("DELETE FROM sagas WHERE saga_id = $1", saga_id)
                continue
            await sagas.write_many(conn, [(saga, records)])


async def _recount(pool: asyncpg.Pool) -> None:
    try:
        await SagaStore(PostgresEventStore(pool)).recount()
    except asyncpg.LockNotAvailableError as e:
        raise RepairRefused("the sagas stayed locked for 5 s (a vacuum of them, or a long write): nothing was "
                            "counted; run the repair again") from e


async def repair(pool: asyncpg.Pool, report: Callable[[Step], None], rounds: int = 3) -> list[Problem]:
    """Make the safe repairs until none is left to make (setting an event aside changes what derives
    from its stream, so a second round rebuilds that); returns the problems that remain."""
    problems = await find_problems(pool)
    for _ in range(rounds):
        steps = [s for s in await plan(pool, problems) if s.run is not None]
        if not steps:
            break
        for step in steps:
            await step.run(pool)  # type: ignore[misc]
            report(step)
        problems = await find_problems(pool)
    return problems
