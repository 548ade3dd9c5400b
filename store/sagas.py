"""The saga store: the ``sagas`` table (current state) and ``saga_steps`` (history), written in the
same transaction as the saga's events and the order events that record a step's outcome."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from domain import events as ev
from domain import saga as sg
from domain.codec import to_primitive
from store import repository as repo
from store.errors import postgres_errors
from store.event_store import CommandContext, PostgresEventStore, StreamAppend, build_records, columns
from store.filters import Where

STEP_OUTCOMES = {sg.StepAttempted: "started", sg.StepSucceeded: "succeeded", sg.StepFailed: "failed"}
# The statuses of unfinished sagas, named rather than "all but the terminal ones", so that the status index
# finds them in proportion to their number (finished sagas pile up, and anyone may ask /health). They are written
# into the statements, not passed as parameters: from its sixth execution on a connection, PostgreSQL may run a
# statement with the plan it made for any parameter (its generic plan), and for the oldest saga in "these
# statuses" that plan walked every saga in creation order, finished ones included, until it met an unfinished
# one: at every /health and /metrics, a walk as long as the orders' history (docs/benchmarks.md).
_UNFINISHED = [s.value for s in sg.SagaStatus if s not in sg.TERMINAL]


def _status_in(statuses: Sequence[str]) -> str:
    return "status IN ({})".format(", ".join(f"'{s}'" for s in statuses))  # the enum's own names, no input


UNFINISHED = _status_in(_UNFINISHED)
UNFINISHED_BUT_FAILED = _status_in([s for s in _UNFINISHED if s != sg.SagaStatus.FAILED.value])
# The oldest of each unfinished status is the end of its range of sagas_status: one lookup each, whatever the
# table's statistics say about how many sagas are unfinished (LEAST passes over a status with none). Until a
# vacuum, the lookup also steps over the entries that sagas left behind when they finished.
OLDEST_UNFINISHED = "SELECT COALESCE(EXTRACT(EPOCH FROM NOW() - LEAST({})), 0)".format(", ".join(
    f"(SELECT MIN(created_at) FROM sagas WHERE status = '{s}')" for s in _UNFINISHED))
# Sagas by status, kept as they change (migration 15): the counts folded so far and the changes since, in one
# snapshot, however many sagas there are. A status whose sagas all moved on sums to 0 and is left out.
COUNTS = """SELECT status, SUM(n)::bigint AS n
            FROM (SELECT status, n FROM saga_counts UNION ALL SELECT status, n FROM saga_count_changes) AS c
            GROUP BY status HAVING SUM(n) <> 0"""
# A batch of changes folded into the counts, in one statement: the rows deleted are the rows added. A folder
# running at the same time skips the rows this one deleted (and waits for its commit to know), and both update
# the counts in the same order of status, so that neither waits on the other for good. In batches, so that a
# backlog (the projector down for long) is folded in statements of bounded length.
FOLD_BATCH = 50_000
FOLD_COUNTS = f"""WITH folded AS (DELETE FROM saga_count_changes
                                  WHERE ctid = ANY(ARRAY(SELECT ctid FROM saga_count_changes LIMIT {FOLD_BATCH}))
                                  RETURNING status, n),
                       added AS (INSERT INTO saga_counts AS c (status, n)
                                 SELECT status, SUM(n) FROM folded GROUP BY status ORDER BY status
                                 ON CONFLICT (status) DO UPDATE SET n = c.n + EXCLUDED.n)
                  SELECT COUNT(*) FROM folded"""
SCANNED_COUNTS = "SELECT status, COUNT(*) AS n FROM sagas GROUP BY status"


def prepare(ctx: CommandContext, saga: sg.Saga | None, saga_id: uuid.UUID, saga_events: Sequence[ev.DomainEvent],
            others: Sequence[StreamAppend] = ()) -> tuple[list[StreamAppend], list[ev.Recorded], sg.Saga]:
    """What recording the saga's events (and other streams') writes: the appends, their records (ids, versions
    and times are the command's own, before any write) and the saga after them."""
    appends = [StreamAppend(saga_id, sg.AGGREGATE_TYPE, saga.version if saga else 0, saga_events), *others]
    records = build_records(appends, ctx)
    after = repo.fold(repo.SAGA, saga, records)
    if after is None:
        raise ValueError(f"saga {saga_id} has no SagaStarted event")
    return appends, records, after


_RECORD_SAGAS = f"SELECT id, position FROM record_sagas({', '.join(f'${n}' for n in range(1, 31))})"


def _saga_row(saga: sg.Saga) -> tuple[Any, ...]:
    return (saga.saga_id, sg.SAGA_TYPE, saga.current_step or "done", to_primitive(saga), saga.status.value,
            saga.order_id, saga.attempts_total, saga.version, saga.created_at, saga.updated_at)


def _step_rows(sagas: Sequence[tuple[sg.Saga, Sequence[ev.Recorded]]]) -> list[tuple[Any, ...]]:
    """The step history rows that the sagas' records make: one per attempt started, succeeded or failed."""
    return [
        (saga.saga_id, r.version, r.event.step, r.event.action.value, outcome, r.event.attempt,  # type: ignore[attr-defined]
         getattr(r.event, "error", None), r.at)
        for saga, records in sagas
        for r in records if r.aggregate_id == saga.saga_id and (outcome := STEP_OUTCOMES.get(type(r.event)))
    ]


def _saga_columns(sagas: Sequence[tuple[sg.Saga, Sequence[ev.Recorded]]]) -> list[list[Any]]:
    """The sagas' rows as arrays, a saga written twice by its last state only (one row may change once)."""
    last = {saga.saga_id: saga for saga, _ in sagas}
    return columns([_saga_row(saga) for saga in last.values()], 10)


def _step_columns(sagas: Sequence[tuple[sg.Saga, Sequence[ev.Recorded]]]) -> list[list[Any]]:
    return columns(_step_rows(sagas), 8)


class SagaStore:
    def __init__(self, events: PostgresEventStore) -> None:
        self.events = events

    async def record(self, ctx: CommandContext, saga: sg.Saga | None, saga_id: uuid.UUID,
                     saga_events: Sequence[ev.DomainEvent], others: Sequence[StreamAppend] = ()) -> tuple[sg.Saga, list[ev.Recorded]]:
        """Append the saga's events (and other streams' events) and update ``sagas`` atomically."""
        appends, records, after = prepare(ctx, saga, saga_id, saga_events, others)
        with postgres_errors():
            return after, await self.write_with_events(appends, records, [(after, records)])

    async def write_with_events(self, appends: Sequence[StreamAppend], records: Sequence[ev.Recorded],
                                sagas: Sequence[tuple[sg.Saga, Sequence[ev.Recorded]]]) -> list[ev.Recorded]:
        """The appends' records, and the sagas' rows and step histories, all or nothing, in one statement
        (migration 10's ``record_sagas``), its own transaction; the records back with their positions. Raises
        as ``PostgresEventStore.write`` does (sagas' streams keep no deadline)."""
        return await self.events.write(self.events.pool, appends, records, _RECORD_SAGAS,
                                       [*_saga_columns(sagas), *_step_columns(sagas)])

    async def write_many(self, conn: asyncpg.Connection,
                         sagas: Sequence[tuple[sg.Saga, Sequence[ev.Recorded]]]) -> None:
        """Several sagas' rows and step histories (one pipelined round trip for each table), in the caller's
        transaction; ``records`` may hold other streams' records too."""
        await conn.executemany(
            """INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, attempts, version,
                                  created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (saga_id) DO UPDATE SET current_step = $3, saga_data = $4, status = $5, attempts = $7,
                   version = $8, updated_at = $10""",
            [_saga_row(saga) for saga, _ in sagas])
        steps = _step_rows(sagas)
        if steps:
            await conn.executemany(
                """INSERT INTO saga_steps (saga_id, seq, step, action, outcome, attempt, error, at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""", steps)

    async def unfinished(self, include_failed: bool = True) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Every saga not in a terminal state (FAILED ones too, unless told not to), as (saga_id, order_id)."""
        wanted = UNFINISHED if include_failed else UNFINISHED_BUT_FAILED
        with postgres_errors():
            rows = await self.events.pool.fetch(f"SELECT saga_id, order_id FROM sagas WHERE {wanted}")
        return [(r["saga_id"], r["order_id"]) for r in rows]

    async def get(self, saga_id: uuid.UUID) -> dict[str, Any] | None:
        with postgres_errors():
            row = await self.events.pool.fetchrow("SELECT * FROM sagas WHERE saga_id = $1", saga_id)
            if row is None:
                return None
            steps = await self.events.pool.fetch(
                "SELECT step, action, outcome, attempt, at, error FROM saga_steps WHERE saga_id = $1 ORDER BY seq",
                saga_id)
        return {**dict(row), "steps": [dict(s) for s in steps]}

    async def list(self, *, status: str | None, order_id: uuid.UUID | None, limit: int,
                   cursor: tuple[Any, uuid.UUID] | None, stuck_for: float | None = None) -> list[dict[str, Any]]:
        """Sagas newest first; with ``stuck_for``, only unfinished ones that have not moved for that long. The
        statement names only the filters given (store.filters)."""
        where = (Where().given("status = {}", status).given("order_id = {}", order_id)
                 .given("(created_at, saga_id) < ({}, {})", cursor)
                 .given(f"{UNFINISHED} AND updated_at < NOW() - make_interval(secs => {{}})", stuck_for))
        with postgres_errors():
            rows = await self.events.pool.fetch(
                f"""SELECT saga_id, saga_type, order_id, status, current_step, attempts, created_at, updated_at
                    FROM sagas {where.clause()} ORDER BY created_at DESC, saga_id DESC LIMIT {where.then(limit)}""",
                *where.arguments)
        return [dict(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        """Sagas by status, those with none left out: two small tables, whatever the number of sagas."""
        with postgres_errors():
            rows = await self.events.pool.fetch(COUNTS)
        return {r["status"]: r["n"] for r in rows}

    async def fold_counts(self, batches: int | None = None) -> int:
        """Fold the changes of the sagas' statuses into their counts, so that counting reads few rows: at most
        ``batches`` statements of FOLD_BATCH changes each (all of the changes when None); returns how many were
        folded. The counts read the same before and after."""
        folded, done = 0, 0
        with postgres_errors():
            while batches is None or done < batches:
                batch = int(await self.events.pool.fetchval(FOLD_COUNTS))
                folded, done = folded + batch, done + 1
                if batch < FOLD_BATCH:
                    break
        return folded

    async def recount(self) -> None:
        """Count the sagas by status again from the sagas themselves, for counts that went wrong (writes with the
        triggers off, a bug). Writers of sagas wait meanwhile (they are counted before or after), and so do folds;
        the changes are locked first, as a fold locks them. At most 5 s to get the locks (a vacuum of ``sagas``
        under way holds them off, and writers would queue behind the wait): asyncpg's LockNotAvailableError."""
        async with self.events.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            await conn.execute("LOCK TABLE sagas IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute("LOCK TABLE saga_count_changes, saga_counts IN EXCLUSIVE MODE")
            await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
            await conn.execute("DELETE FROM saga_count_changes")
            await conn.execute("DELETE FROM saga_counts")
            await conn.execute(f"INSERT INTO saga_counts (status, n) {SCANNED_COUNTS}")

    async def vacuum_count_changes(self, give_back: bool = False) -> None:
        """Make the space of folded changes free for the next ones, so that the table they pass through stays as
        large as the changes between two folds, with or without autovacuum. With ``give_back`` (after a backlog),
        the empty pages at its end go back to the file system too, if the writers' locks let the vacuum take its
        own within 5 s (PostgreSQL's wait). A vacuum of it already under way is left to finish on its own."""
        with postgres_errors():
            await self.events.pool.execute(
                f"VACUUM (SKIP_LOCKED{', TRUNCATE true' if give_back else ''}) saga_count_changes")

    async def oldest_unfinished_age(self) -> float:
        with postgres_errors():
            age = await self.events.pool.fetchval(OLDEST_UNFINISHED)
        return float(age)
