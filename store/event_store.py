"""The event store port, its PostgreSQL adapter, and the types both share.

Appends are atomic across streams and checked against each stream's expected version. Event ids
derive from the command id, so a command delivered twice collides on them and applies once.
Global order for readers is ``(transaction_id, position)``; :meth:`read_all` only reads below the
oldest transaction still in flight, so a tailing reader never skips an event that commits late.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import asyncpg
import orjson

from domain import events as ev
from store.errors import ConcurrencyConflict, DuplicateCommand, postgres_errors, replaced_after_failover


@dataclasses.dataclass(frozen=True, slots=True)
class CommandContext:
    """The command that causes an append: its id, the business flow it belongs to, and its cause."""

    command_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    occurred_at: dt.datetime

    @classmethod
    def new(cls, correlation_id: uuid.UUID, now: dt.datetime, causation_id: uuid.UUID | None = None,
            command_id: uuid.UUID | None = None) -> CommandContext:
        return cls(command_id or uuid.uuid4(), correlation_id, causation_id, now)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream. ``contexts`` gives each event its own command when several commands
    share one append (batching); otherwise every event belongs to the append's command."""

    aggregate_id: uuid.UUID
    aggregate_type: str
    expected_version: int
    events: Sequence[ev.DomainEvent]
    contexts: Sequence[CommandContext] | None = None
    deadline: Deadline | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """When the stream next needs a command (a SKU's next reservation to expire) after an append; None
    when it needs none. Kept with the events, in the same transaction."""

    due_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    aggregate_id: uuid.UUID
    aggregate_type: str
    version: int
    state: dict[str, Any]


def event_id(command_id: uuid.UUID, aggregate_id: uuid.UUID, index: int) -> uuid.UUID:
    return uuid.uuid5(command_id, f"{aggregate_id}/{index}")


def build_records(appends: Sequence[StreamAppend], ctx: CommandContext) -> list[ev.Recorded]:
    records = []
    for a in appends:
        for i, e in enumerate(a.events):
            c = a.contexts[i] if a.contexts else ctx
            meta = ev.Metadata(event_id(c.command_id, a.aggregate_id, i), c.command_id,
                               c.correlation_id, c.causation_id, c.occurred_at)
            records.append(ev.Recorded(a.aggregate_id, a.aggregate_type, a.expected_version + i + 1, e, meta))
    return records


class EventStore(Protocol):
    """The event store port; :class:`PostgresEventStore` and ``InMemoryEventStore`` implement it."""

    async def append(self, appends: Sequence[StreamAppend], ctx: CommandContext) -> list[ev.Recorded]:
        """Append to one or more streams atomically.

        Raises ConcurrencyConflict on a stale expected version, DuplicateCommand when the command
        was already applied.
        """

    async def load_stream(self, aggregate_id: uuid.UUID, after_version: int = 0) -> list[ev.Recorded]: ...

    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[ev.Recorded]:
        """Committed events after ``after_position`` in global order, never skipping a late commit."""

    async def query(self, *, aggregate_id: uuid.UUID | None = None, aggregate_type: str | None = None,
                    event_type: str | None = None, after_position: int = 0, limit: int = 100) -> list[ev.Recorded]: ...

    async def save_snapshot(self, snapshot: Snapshot) -> None: ...

    async def aggregate_type(self, aggregate_id: uuid.UUID) -> str | None:
        """The kind of aggregate this id names, or None when it has no events."""

    async def load_snapshot(self, aggregate_id: uuid.UUID) -> Snapshot | None: ...

    async def schedule(self, aggregate_id: uuid.UUID, aggregate_type: str, due_at: dt.datetime | None,
                       version: int) -> None:
        """Set (None: clear) the stream's deadline as of ``version``; an older version never overwrites it."""

    async def due(self, aggregate_type: str, now: dt.datetime, limit: int = 1000,
                  shard: tuple[int, int] | None = None) -> list[uuid.UUID]:
        """The streams of this type whose deadline has come, earliest first; with ``shard`` (index, count),
        only those whose id, as a 128-bit integer, is ``index`` modulo ``count`` (``actors.routing.shard_of``)."""

    async def next_due(self, aggregate_type: str, shard: tuple[int, int] | None = None) -> dt.datetime | None:
        """The earliest deadline of the streams of this type (with ``shard``, as for :meth:`due`); None when
        none has one."""

    async def contains(self, event_id: uuid.UUID) -> bool:
        """Whether an event with this id was stored (so the command that makes it was applied)."""


# The deadlines with each stream's id in hex (``h``), for :func:`_in_shard`.
_DEADLINES_HEX = "deadlines, LATERAL (SELECT replace(aggregate_id::text, '-', '') AS h) AS x"


def _in_shard(count: str, index: str) -> str:
    """The condition that a deadline's stream is shard ``index`` of ``count`` (SQL parameters) as
    ``actors.routing.shard_of`` has it: its id as the 128-bit integer Python's ``UUID.int`` is (four 32-bit
    parts, each read unsigned from its bits, combined in numeric), modulo ``count``. Over ``_DEADLINES_HEX``."""
    return f"""({count} = 1 OR mod(('x' || substr(h, 1, 8))::bit(32)::bigint::numeric * 79228162514264337593543950336
                              + ('x' || substr(h, 9, 8))::bit(32)::bigint::numeric * 18446744073709551616
                              + ('x' || substr(h, 17, 8))::bit(32)::bigint::numeric * 4294967296
                              + ('x' || substr(h, 25, 8))::bit(32)::bigint, {count}) = {index})"""


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column, the arrays a statement over ``unnest`` takes (``width`` empty ones for none)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def metadata_json(meta: ev.Metadata) -> dict[str, Any]:
    return {
        "event_id": str(meta.event_id), "command_id": str(meta.command_id),
        "correlation_id": str(meta.correlation_id),
        "causation_id": str(meta.causation_id) if meta.causation_id else None,
    }


def record_from_row(row: asyncpg.Record) -> ev.Recorded:
    """Decode one ``events`` row, upcasting old schema versions."""
    meta = row["metadata"]
    event = ev.decode(row["event_type"], row["schema_version"], row["event_data"])
    causation = meta.get("causation_id")
    metadata = ev.Metadata(
        row["id"], uuid.UUID(meta["command_id"]), uuid.UUID(meta["correlation_id"]),
        uuid.UUID(causation) if causation else None, row["created_at"],
    )
    return ev.Recorded(row["aggregate_id"], row["aggregate_type"], row["version"], event, metadata, row["position"])


_COLUMNS = "id, position, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata, version, created_at"

@functools.lru_cache(maxsize=8)
def _load_streams(n: int) -> str:
    """Snapshots first (``event_data`` holds the state), then every stream's events after its snapshot. The
    ids are parameters of their own, not an array: with an array PostgreSQL plans the statement anew on
    every call (a generic plan guesses its length), which costs more than running it."""
    ids = ", ".join(f"${i}" for i in range(1, n + 1))
    return f"""
    SELECT NULL::uuid AS id, NULL::bigint AS position, aggregate_id, aggregate_type, NULL AS event_type,
           NULL::integer AS schema_version, state AS event_data, NULL::jsonb AS metadata, version,
           NULL::timestamptz AS created_at, TRUE AS is_snapshot
    FROM snapshots WHERE aggregate_id IN ({ids})
    UNION ALL
    SELECT {", ".join(f"e.{c}" for c in _COLUMNS.split(", "))}, FALSE
    FROM events e
    WHERE e.aggregate_id IN ({ids})
      AND e.version > COALESCE((SELECT s.version FROM snapshots s WHERE s.aggregate_id = e.aggregate_id), 0)
    ORDER BY is_snapshot DESC, aggregate_id, version"""


@dataclasses.dataclass(slots=True)
class Stored:
    """A stream as stored: its snapshot, and its events after the snapshot, in order."""

    snapshot: Snapshot | None
    records: list[ev.Recorded]


# Only the ids and positions come back: the rest is what the caller sent.
_INSERT = "SELECT id, position FROM append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"


async def _schedule(c: asyncpg.Connection | asyncpg.Pool, aggregate_id: uuid.UUID, aggregate_type: str, due_at: dt.datetime | None,
                    version: int) -> None:
    """No deadline is kept as 'infinity', so that its version still turns away an older writer."""
    await c.execute(
        """INSERT INTO deadlines (aggregate_id, aggregate_type, due_at, version)
           VALUES ($1, $2, COALESCE($3, 'infinity'::timestamptz), $4)
           ON CONFLICT (aggregate_id) DO UPDATE SET due_at = EXCLUDED.due_at, version = EXCLUDED.version
           WHERE deadlines.version <= EXCLUDED.version""", aggregate_id, aggregate_type, due_at, version)


# What orjson would write and the json module refuses, refused: a date or a dataclass passed by mistake
# (unencoded by domain.codec) fails as it did, rather than being stored in a form nothing reads back.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_text(value: Any) -> str:
    """A json or jsonb parameter's text: orjson's, several times faster than the json module's, whose encoding
    of events and saga rows took a twentieth of the order shard's CPU (docs/benchmarks.md, eighteenth round);
    the json module's for what orjson refuses (an integer beyond 64 bits, a key that is not a string, a date),
    which raises TypeError for what it cannot hold. Parameters are JSON primitives (domain.codec): orjson
    writes a non-finite float, which they never hold, as null. Reading stays with the json module, which keeps
    every integer exact."""
    try:
        return orjson.dumps(value, option=_STRICT).decode()
    except TypeError:
        return json.dumps(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json_text, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json_text, decoder=json.loads, schema="pg_catalog")


SERVICE = "commerce-service"  # the application name of the running service's connections


async def create_pool(dsn: str, size: int, application_name: str = "commerce-tool") -> asyncpg.Pool:
    """A pool whose connections name their application, so that tools can tell whether the service runs.
    The service's own pools skip asyncpg's reset query on every release (a round trip): the service sets
    no session state (no SET, LISTEN, cursor or session-level lock); an open transaction is still rolled
    back. Tools keep the reset (a rebuild holds a session-level lock)."""
    with postgres_errors():
        pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, init=init_connection,
                                                       command_timeout=60,
                                                       reset=_no_session_state if application_name == SERVICE else None,
                                                       server_settings={"application_name": application_name})
    return replaced_after_failover(pool)


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Nothing to reset (see create_pool)."""


def after_checkpoint(position: str, transaction_id: str = "NULL::xid8") -> str:
    """The condition on ``events`` of the rows that a reader of the log, whose checkpoint is the row at
    ``position`` (an SQL expression, 0 for none, that names no column of ``events`` unqualified: those would
    be the inner subquery's), reads next: after that row in (transaction_id, position) order, and only of
    transactions older than every one still in progress, since one of those could still commit rows that
    sort before the rows of a later transaction. Ordered by (transaction_id, position), a read under it
    follows the index of that name. ``transaction_id`` (an xid8 expression) is that row's, when the reader
    kept it with its checkpoint: the row may be gone since (moved to quarantine), and the row found below
    its position in its place could belong to a later transaction, past rows not read yet. Without it (NULL),
    it is looked up."""
    return f"""((transaction_id, position) > (
                    COALESCE({transaction_id}, (SELECT transaction_id FROM events WHERE position <= {position}
                              ORDER BY position DESC LIMIT 1), '0'::xid8), {position})
              AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()))"""


class PostgresEventStore:
    """The event store on PostgreSQL through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self, conn: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A transaction whose id is taken first, before any position is drawn from the sequence."""
        if conn is not None:
            yield conn
            return
        with postgres_errors():
            async with self.pool.acquire() as c, c.transaction():
                await c.execute("SELECT pg_current_xact_id()")
                yield c

    async def append(self, appends: Sequence[StreamAppend], ctx: CommandContext,
                     conn: asyncpg.Connection | None = None) -> list[ev.Recorded]:
        records = build_records(appends, ctx)
        if not records:
            return []
        # One stream: one statement, its own transaction (all its rows, and its deadline, or nothing).
        if conn is None and len(appends) == 1:
            with postgres_errors():
                async with self.pool.acquire() as c:
                    return await self.write(c, appends, records)
        async with self.transaction(conn) as c:
            return await self.write(c, appends, records)

    async def write(self, c: asyncpg.Connection | asyncpg.Pool, appends: Sequence[StreamAppend],
                    records: Sequence[ev.Recorded], statement: str = _INSERT,
                    more: Sequence[Any] = ()) -> list[ev.Recorded]:
        """Write ``records`` (what :func:`build_records` made of ``appends``, in their order) on ``c``; the
        records back with their positions. One statement, all or nothing: the rows go in only if every stream
        is still at its expected version (else ConcurrencyConflict, with nothing written); a stream that
        another append starts first collides on ``UNIQUE(aggregate_id, version)``, which aborts the caller's
        transaction. As the first statement of a transaction it takes the transaction's id before any
        position is drawn.

        ``statement`` may name another function that appends as ``append_events`` does, with arguments of its
        own after the append's (``more``). On the pool the statement is its own transaction: then it may not
        leave the deadlines of several streams to statements of their own."""
        if not isinstance(c, asyncpg.Connection) and len(appends) > 1 and any(a.deadline for a in appends):
            raise ValueError("the deadlines of several streams need a transaction")
        expected = [a.expected_version for a in appends for _ in a.events]
        rows = [(r.metadata.event_id, r.aggregate_id, r.aggregate_type, r.event_type, type(r.event).schema_version,
                 ev.encode(r.event), metadata_json(r.metadata), r.version, r.metadata.occurred_at, wanted)
                for r, wanted in zip(records, expected, strict=True)]
        single = appends[0].deadline if len(appends) == 1 else None
        deadline = (0, None) if single is None else (2, None) if single.due_at is None else (1, single.due_at)
        try:
            stored = await c.fetch(statement, *columns(rows, 10), *deadline, *more)
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name == "events_pkey":
                raise DuplicateCommand(str(records[0].metadata.command_id)) from e
            raise ConcurrencyConflict(records[0].aggregate_id, appends[0].expected_version) from e
        if not stored:  # a stream had moved on: nothing was written
            stale = next((a for a in appends if a.events and a.expected_version > 0), appends[0])
            raise ConcurrencyConflict(stale.aggregate_id, stale.expected_version)
        for a in appends if len(appends) > 1 else ():  # several streams: each deadline in a statement of its own
            if a.deadline is not None:
                await _schedule(c, a.aggregate_id, a.aggregate_type, a.deadline.due_at, a.expected_version + len(a.events))
        positions = {row["id"]: row["position"] for row in stored}
        # Built, not dataclasses.replace'd: replace walks the fields for each record (2 % of an order shard's time).
        return [ev.Recorded(aggregate_id=r.aggregate_id, aggregate_type=r.aggregate_type, version=r.version,
                            event=r.event, metadata=r.metadata, position=positions[r.metadata.event_id])
                for r in records]

    async def load_stream(self, aggregate_id: uuid.UUID, after_version: int = 0) -> list[ev.Recorded]:
        with postgres_errors():
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE aggregate_id = $1 AND version > $2 ORDER BY version",
                aggregate_id, after_version)
        return [record_from_row(r) for r in rows]

    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[ev.Recorded]:
        rows = await self.read_all_rows(after_position, limit)
        return [record_from_row(r) for r in rows]

    async def read_all_rows(self, after_position: int, limit: int, conn: asyncpg.Connection | None = None,
                            aggregate_types: Sequence[str] | None = None,
                            before_transaction: str | None = None,
                            after_transaction: str | None = None) -> list[asyncpg.Record]:
        """The rows after ``after_position`` in global order. With ``aggregate_types``, the rows of other
        aggregates come without their data and metadata (NULL): a reader that skips them moves past them
        without transferring or decoding them. With ``before_transaction`` (an xid8 as text), only the rows
        of the transactions before it: a reader that stops where the log stood when it began. With
        ``after_transaction``, the transaction of the row at ``after_position`` (a checkpoint's own)."""
        sql = """
            SELECT id, position, aggregate_id, aggregate_type, event_type, schema_version,
                   CASE WHEN $3::varchar[] IS NULL OR aggregate_type = ANY($3) THEN event_data END AS event_data,
                   CASE WHEN $3::varchar[] IS NULL OR aggregate_type = ANY($3) THEN metadata END AS metadata,
                   version, created_at, transaction_id::text AS transaction_id FROM events
            WHERE """ + after_checkpoint("$1", "$5::text::xid8") + """
              AND ($4::text IS NULL OR transaction_id < $4::text::xid8)
            -- The table's columns, qualified: a bare name would be the text column above, ordered as text
            -- ('1000' before '999'), so that a batch across such a boundary skipped events or misordered them.
            ORDER BY events.transaction_id, events.position
            LIMIT $2"""
        types = list(aggregate_types) if aggregate_types is not None else None
        with postgres_errors():
            if conn is not None:
                return list(await conn.fetch(sql, after_position, limit, types, before_transaction, after_transaction))
            return list(await self.pool.fetch(sql, after_position, limit, types, before_transaction,
                                              after_transaction))

    async def query(self, *, aggregate_id: uuid.UUID | None = None, aggregate_type: str | None = None,
                    event_type: str | None = None, after_position: int = 0, limit: int = 100) -> list[ev.Recorded]:
        sql = f"""
            SELECT {_COLUMNS} FROM events
            WHERE {after_checkpoint("$1")}
              AND ($2::uuid IS NULL OR aggregate_id = $2)
              AND ($3::varchar IS NULL OR aggregate_type = $3)
              AND ($4::varchar IS NULL OR event_type = $4)
            ORDER BY transaction_id, position
            LIMIT $5"""
        with postgres_errors():
            rows = await self.pool.fetch(sql, after_position, aggregate_id, aggregate_type, event_type, limit)
        return [record_from_row(r) for r in rows]

    async def schedule(self, aggregate_id: uuid.UUID, aggregate_type: str, due_at: dt.datetime | None,
                       version: int) -> None:
        with postgres_errors():
            async with self.pool.acquire() as c:
                await _schedule(c, aggregate_id, aggregate_type, due_at, version)

    async def due(self, aggregate_type: str, now: dt.datetime, limit: int = 1000,
                  shard: tuple[int, int] | None = None) -> list[uuid.UUID]:
        index, count = shard or (0, 1)
        with postgres_errors():
            # Filtered here, not by the caller: streams of other shards due first (a shard down with a backlog)
            # would fill the limit and keep this shard's from being seen at all.
            rows = await self.pool.fetch(
                f"""SELECT aggregate_id FROM {_DEADLINES_HEX}
                    WHERE aggregate_type = $1 AND due_at <= $2 AND {_in_shard("$4", "$5")}
                    ORDER BY due_at LIMIT $3""",
                aggregate_type, now, limit, count, index)
        return [r["aggregate_id"] for r in rows]

    async def next_due(self, aggregate_type: str, shard: tuple[int, int] | None = None) -> dt.datetime | None:
        index, count = shard or (0, 1)
        with postgres_errors():
            due: dt.datetime | None = await self.pool.fetchval(
                # A stream with nothing due keeps its row with 'infinity' (which asyncpg reads as a naive year 9999).
                # In due_at order, up to this shard's first: another shard's backlog (a shard down) does not
                # make this one pass every second.
                f"""SELECT due_at FROM {_DEADLINES_HEX}
                    WHERE aggregate_type = $1 AND due_at < 'infinity' AND {_in_shard("$2", "$3")}
                    ORDER BY due_at LIMIT 1""", aggregate_type, count, index)
        return due

    async def contains(self, event_id: uuid.UUID) -> bool:
        with postgres_errors():
            return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)", event_id))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        with postgres_errors():
            await self.pool.execute(
                """INSERT INTO snapshots (aggregate_id, aggregate_type, version, state) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (aggregate_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state,
                   created_at = NOW() WHERE snapshots.version < EXCLUDED.version""",
                snapshot.aggregate_id, snapshot.aggregate_type, snapshot.version, snapshot.state)

    async def aggregate_type(self, aggregate_id: uuid.UUID) -> str | None:
        """The kind of aggregate this id names, or None when it has no events."""
        with postgres_errors():
            kind: str | None = await self.pool.fetchval(
                "SELECT aggregate_type FROM events WHERE aggregate_id = $1 AND version = 1", aggregate_id)
        return kind

    async def load_streams(self, aggregate_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Stored]:
        """Each stream's snapshot (if any) and its events after it, in one round trip: what loading an entity
        made of several streams (an order and its saga) reads."""
        if not aggregate_ids:
            return {}
        with postgres_errors():
            rows = await self.pool.fetch(_load_streams(len(aggregate_ids)), *aggregate_ids)
        out: dict[uuid.UUID, Stored] = {a: Stored(None, []) for a in aggregate_ids}
        for row in rows:
            stored = out[row["aggregate_id"]]
            if row["is_snapshot"]:
                stored.snapshot = Snapshot(row["aggregate_id"], row["aggregate_type"], row["version"],
                                           row["event_data"])
            else:
                stored.records.append(record_from_row(row))
        return out

    async def load_snapshot(self, aggregate_id: uuid.UUID) -> Snapshot | None:
        with postgres_errors():
            row = await self.pool.fetchrow(
                "SELECT aggregate_id, aggregate_type, version, state FROM snapshots WHERE aggregate_id = $1",
                aggregate_id)
        if row is None:
            return None
        return Snapshot(row["aggregate_id"], row["aggregate_type"], row["version"], row["state"])
