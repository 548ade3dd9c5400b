"""Versioned, idempotent schema migrations; ``commerce migrate`` and every start apply them.

A transaction-level advisory lock serializes concurrent migrators (several shards starting at once);
pending versions apply in one transaction and are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import asyncpg

from store.projections import projection_lock

# The append of migration 8; migration 10 puts it back where a reverted migration once changed it.
_APPEND_EVENTS = """append_events(ids UUID[], aggregate_ids UUID[], aggregate_types VARCHAR[],
                                      event_types VARCHAR[], schema_versions INTEGER[], data JSONB[],
                                      metadata JSONB[], versions INTEGER[], created TIMESTAMPTZ[],
                                      expected INTEGER[], deadline_op INTEGER DEFAULT 0,
                                      deadline_at TIMESTAMPTZ DEFAULT NULL)
        RETURNS TABLE (id UUID, "position" BIGINT) LANGUAGE plpgsql AS $$
        DECLARE
            written INTEGER;
        BEGIN
            IF EXISTS (SELECT 1 FROM unnest(aggregate_ids, expected) AS s(aggregate_id, wanted)
                       WHERE s.wanted > 0 AND s.wanted IS DISTINCT FROM
                             (SELECT MAX(e.version) FROM events e WHERE e.aggregate_id = s.aggregate_id)) THEN
                RETURN;
            END IF;
            PERFORM pg_current_xact_id();
            RETURN QUERY
            INSERT INTO events (id, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata,
                                version, created_at)
            SELECT u.id, u.aggregate_id, u.aggregate_type, u.event_type, u.schema_version, u.event_data, u.metadata,
                   u.version, u.created_at
            FROM unnest(ids, aggregate_ids, aggregate_types, event_types, schema_versions, data, metadata, versions,
                        created)
                 AS u(id, aggregate_id, aggregate_type, event_type, schema_version, event_data, metadata, version,
                      created_at)
            RETURNING events.id, events.position;
            GET DIAGNOSTICS written = ROW_COUNT;
            -- One stream's deadline after its rows (1: set to deadline_at; 2: none, kept as 'infinity' so
            -- that its version still turns away an older writer).
            IF deadline_op > 0 THEN
                INSERT INTO deadlines (aggregate_id, aggregate_type, due_at, version)
                VALUES (aggregate_ids[1], aggregate_types[1],
                        CASE WHEN deadline_op = 2 THEN 'infinity'::timestamptz ELSE deadline_at END, versions[written])
                ON CONFLICT (aggregate_id) DO UPDATE SET due_at = EXCLUDED.due_at, version = EXCLUDED.version
                WHERE deadlines.version <= EXCLUDED.version;
            END IF;
        END
        $$;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "event store",
        """
        CREATE TABLE events (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            position BIGSERIAL NOT NULL UNIQUE,
            transaction_id XID8 NOT NULL DEFAULT pg_current_xact_id(),
            aggregate_id UUID NOT NULL,
            aggregate_type VARCHAR(100) NOT NULL,
            event_type VARCHAR(100) NOT NULL,
            schema_version INTEGER NOT NULL DEFAULT 1,
            event_data JSONB NOT NULL,
            metadata JSONB NOT NULL DEFAULT '{}',
            version INTEGER NOT NULL CHECK (version > 0),
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            UNIQUE (aggregate_id, version)
        );
        CREATE INDEX events_transaction_position ON events (transaction_id, position);
        CREATE INDEX events_type_position ON events (event_type, position);
        CREATE INDEX events_aggregate_type_position ON events (aggregate_type, position);
        CREATE TABLE snapshots (
            aggregate_id UUID PRIMARY KEY,
            aggregate_type VARCHAR(100) NOT NULL,
            version INTEGER NOT NULL,
            state JSONB NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
        );
        """,
    ),
    (
        2,
        "read models",
        """
        CREATE TABLE projection_checkpoints (
            name VARCHAR(100) PRIMARY KEY,
            position BIGINT NOT NULL,
            transaction_id XID8 NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
        );
        CREATE TABLE order_views (
            order_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            status VARCHAR(50) NOT NULL,
            total_amount DECIMAL(12, 2) NOT NULL,
            created_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ,
            version INTEGER NOT NULL,
            saga_id UUID NOT NULL,
            items JSONB NOT NULL,
            reason TEXT
        );
        CREATE INDEX order_views_created ON order_views (created_at DESC, order_id DESC);
        CREATE INDEX order_views_customer ON order_views (customer_id, created_at DESC, order_id DESC);
        CREATE INDEX order_views_status ON order_views (status, created_at DESC, order_id DESC);
        CREATE TABLE inventory_views (
            product_id UUID PRIMARY KEY,
            name TEXT NOT NULL,
            price DECIMAL(12, 2) NOT NULL,
            on_hand INTEGER NOT NULL,
            reserved INTEGER NOT NULL,
            units_sold BIGINT NOT NULL DEFAULT 0,
            version INTEGER NOT NULL,
            updated_at TIMESTAMPTZ
        );
        CREATE TABLE inventory_reservations (
            reservation_id UUID PRIMARY KEY,
            product_id UUID NOT NULL,
            quantity INTEGER NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX inventory_reservations_expiry ON inventory_reservations (expires_at);
        """,
    ),
    (
        3,
        "sagas",
        """
        CREATE TABLE sagas (
            saga_id UUID PRIMARY KEY,
            saga_type VARCHAR(100) NOT NULL,
            current_step VARCHAR(100) NOT NULL,
            saga_data JSONB NOT NULL,
            status VARCHAR(50) NOT NULL,
            order_id UUID NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL,
            created_at TIMESTAMPTZ DEFAULT NOW(),
            updated_at TIMESTAMPTZ DEFAULT NOW()
        );
        CREATE INDEX sagas_status ON sagas (status, created_at DESC, saga_id DESC);
        CREATE INDEX sagas_order ON sagas (order_id);
        CREATE INDEX sagas_created ON sagas (created_at DESC, saga_id DESC);
        CREATE TABLE saga_steps (
            saga_id UUID NOT NULL REFERENCES sagas (saga_id),
            seq INTEGER NOT NULL,
            step VARCHAR(100) NOT NULL,
            action VARCHAR(20) NOT NULL,
            outcome VARCHAR(20) NOT NULL,
            attempt INTEGER NOT NULL,
            error TEXT,
            at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (saga_id, seq)
        );
        """,
    ),
    (
        4,
        "idempotency keys and provider ledgers",
        """
        CREATE TABLE idempotency_keys (
            scope VARCHAR(200) NOT NULL,
            key VARCHAR(255) NOT NULL,
            fingerprint VARCHAR(64) NOT NULL,
            status INTEGER,
            body JSONB,
            headers JSONB,
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            PRIMARY KEY (scope, key)
        );
        CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
        CREATE TABLE provider_ledger (
            provider VARCHAR(50) NOT NULL,
            operation VARCHAR(50) NOT NULL,
            key VARCHAR(200) NOT NULL,
            reference VARCHAR(100) NOT NULL,
            status VARCHAR(50) NOT NULL,
            amount DECIMAL(12, 2),
            detail JSONB NOT NULL DEFAULT '{}',
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            PRIMARY KEY (provider, operation, key)
        );
        CREATE TABLE provider_attempts (
            id BIGSERIAL PRIMARY KEY,
            provider VARCHAR(50) NOT NULL,
            operation VARCHAR(50) NOT NULL,
            key VARCHAR(200) NOT NULL,
            outcome VARCHAR(50) NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT NOW()
        );
        CREATE INDEX provider_attempts_key ON provider_attempts (key);
        """,
    ),
    (
        5,
        "caller-scoped idempotency keys and direct reservation ids",
        """
        ALTER TABLE idempotency_keys ALTER COLUMN scope TYPE TEXT;
        CREATE TABLE direct_reservations (
            reservation_id UUID PRIMARY KEY,
            product_id UUID NOT NULL,
            owner TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
        );
        CREATE INDEX direct_reservations_created ON direct_reservations (created_at);
        CREATE TABLE secret_fingerprints (
            name TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
        );
        """,
    ),
    (
        6,
        "durable record of carts; quarantine of unreadable events",
        """
        CREATE TABLE carts (
            cart_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            status VARCHAR(20) NOT NULL,
            order_id UUID,
            lines JSONB NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            version INTEGER NOT NULL
        );
        CREATE INDEX carts_expires ON carts (expires_at);
        CREATE INDEX carts_customer ON carts (customer_id);
        CREATE TABLE events_quarantine (
            LIKE events INCLUDING DEFAULTS,
            quarantined_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            PRIMARY KEY (id)
        );
        """,
    ),
    (
        7,
        "deadlines",
        # A stream's next deadline (a SKU's next reservation to expire), written in the transaction of
        # the stream's events, so that acting on it never waits on a projection. Filled once from the
        # events: every SKU that ever had a reservation is due now, and its shard's first pass either
        # expires what is due or sets the deadline right from the SKU's own state.
        """
        CREATE TABLE deadlines (
            aggregate_id UUID PRIMARY KEY,
            aggregate_type VARCHAR(100) NOT NULL,
            due_at TIMESTAMPTZ NOT NULL,
            version INTEGER NOT NULL
        );
        CREATE INDEX deadlines_due ON deadlines (aggregate_type, due_at);
        INSERT INTO deadlines (aggregate_id, aggregate_type, due_at, version)
            SELECT DISTINCT aggregate_id, aggregate_type, NOW(), 0 FROM events WHERE event_type = 'StockReserved';
        """,
    ),
    (
        8,
        "append in one statement",
        # An append is one round trip: in its own transaction (a statement outside one is its own) or in the
        # caller's. All or nothing: if any stream is no longer at the version expected of it, nothing is
        # written and nothing comes back (the caller raises ConcurrencyConflict). Otherwise the transaction
        # id is taken before any position is drawn, the rows go in, a single stream's deadline is written
        # with them, and each row's id and position come back.
        "CREATE FUNCTION " + _APPEND_EVENTS,
    ),
    (
        10,
        "record sagas in one statement",
        # A group commit of sagas (actors/order_commits.py) is one round trip, in its own transaction: the
        # events as append_events writes them (nothing at all when a stream moved on), then, only if they
        # went in, each saga's row and its new steps. A saga appears at most once (the caller keeps its last).
        # Version 9 was taken by a change since reverted (append_events notified its readers); a database that
        # applied it gets migration 8's append_events back here. Where version 9 was this same function
        # (under its first number), it is made again, the same.
        "CREATE OR REPLACE FUNCTION " + _APPEND_EVENTS + """
        CREATE OR REPLACE FUNCTION record_sagas(ids UUID[], aggregate_ids UUID[], aggregate_types VARCHAR[],
                                     event_types VARCHAR[], schema_versions INTEGER[], data JSONB[],
                                     metadata JSONB[], versions INTEGER[], created TIMESTAMPTZ[],
                                     expected INTEGER[], deadline_op INTEGER, deadline_at TIMESTAMPTZ,
                                     saga_ids UUID[], saga_types VARCHAR[], current_steps VARCHAR[],
                                     saga_data JSONB[], statuses VARCHAR[], order_ids UUID[],
                                     attempts INTEGER[], saga_versions INTEGER[], saga_created TIMESTAMPTZ[],
                                     saga_updated TIMESTAMPTZ[], step_sagas UUID[], step_seqs INTEGER[],
                                     step_names VARCHAR[], step_actions VARCHAR[], step_outcomes VARCHAR[],
                                     step_attempts INTEGER[], step_errors TEXT[], step_at TIMESTAMPTZ[])
        RETURNS TABLE (id UUID, "position" BIGINT) LANGUAGE plpgsql AS $$
        BEGIN
            RETURN QUERY SELECT a.id, a."position" FROM append_events(
                ids, aggregate_ids, aggregate_types, event_types, schema_versions, data, metadata, versions,
                created, expected, deadline_op, deadline_at) AS a;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            INSERT INTO sagas (saga_id, saga_type, current_step, saga_data, status, order_id, attempts, version,
                               created_at, updated_at)
            SELECT * FROM unnest(saga_ids, saga_types, current_steps, saga_data, statuses, order_ids, attempts,
                                 saga_versions, saga_created, saga_updated)
            ON CONFLICT (saga_id) DO UPDATE SET current_step = EXCLUDED.current_step,
                saga_data = EXCLUDED.saga_data, status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                version = EXCLUDED.version, updated_at = EXCLUDED.updated_at;
            INSERT INTO saga_steps (saga_id, seq, step, action, outcome, attempt, error, at)
            SELECT * FROM unnest(step_sagas, step_seqs, step_names, step_actions, step_outcomes, step_attempts,
                                 step_errors, step_at)
            ON CONFLICT DO NOTHING;
        END
        $$;
        """,
    ),
    (
        11,
        "read models replayed in numeric transaction order",
        # Until this version the projector read transactions in the order of their ids' text ('1000' before
        # '999'): a batch across such a boundary could apply an order's or a SKU's events out of order, or
        # skip some. The read models are emptied and their checkpoints dropped, so the projector replays every
        # event in order, as `commerce projections rebuild` does; each projection's lock is taken first, as
        # the rebuild takes it, so a projector still running applies nothing meanwhile.
        f"""
        SELECT pg_advisory_xact_lock({projection_lock("order_views")});
        SELECT pg_advisory_xact_lock({projection_lock("inventory_views")});
        TRUNCATE order_views, inventory_views, inventory_reservations;
        DELETE FROM projection_checkpoints;
        """,
    ),
    (
        12,
        "the registry of direct reservation ids says whether a SKU held each",
        # Entries made before are taken as never held (as the service treated them until now): a reserve
        # re-sent under one of them after its SKU forgot it is, as before, a new reservation.
        """
        ALTER TABLE direct_reservations ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
        """,
    ),
    (
        13,
        "idempotency keys have a salt of their own, and a released claim is kept",
        # Keys claimed before keep no salt (NULL): their requests, retried across the upgrade, derive the
        # ids they derived before. The salt is no column default: a replica of the release before, still
        # serving during a rolling upgrade, inserts keys whose ids it derives without one, and they must
        # stay without one. The service's claim sets it.
        """
        ALTER TABLE idempotency_keys ADD COLUMN salt UUID;
        ALTER TABLE idempotency_keys ADD COLUMN released BOOLEAN NOT NULL DEFAULT FALSE;
        """,
    ),
    (
        14,
        "a saga's row is rewritten in place",
        # A saga's row is rewritten at every step, and no index holds what a step changes but its status (at the
        # end). On full pages each new version went to another page, with an entry in each of the table's four
        # indexes: 84-89 % of the rewrites in benchmarks with autovacuum off (docs/benchmarks.md, eighteenth
        # round). Half of each page is kept free for them, so that PostgreSQL writes them beside the old version
        # and no index entry (HOT). It applies to the pages written from now on. The setting's lock waits for a
        # vacuum of the table under way (an anti-wraparound one is not cancelled): at most 5 s, then the start
        # fails, to be tried again.
        """
        SET LOCAL lock_timeout = '5s';
        ALTER TABLE sagas SET (fillfactor = 50);
        SET LOCAL lock_timeout TO DEFAULT;
        """,
    ),
    (
        15,
        "sagas counted by status as they change",
        # /metrics and /health count the sagas by status; a GROUP BY over `sagas` grows with the orders' history
        # (1-2 s at ten million sagas, docs/benchmarks.md) and anyone may ask. Every change of a saga's status now
        # adds a row to `saga_count_changes` in the changing transaction, by triggers, whoever writes: the group
        # commit's record_sagas, an operator's repair, SQL by hand. Those rows are only ever inserted, so writers
        # never wait on each other for them, as they would on a counter row. A count is `saga_counts` plus the
        # changes not yet folded into it, read in one statement (one snapshot); the projector folds them
        # (SagaStore.fold_counts) and vacuums the table, which keeps its pages (a vacuum that gave them back would
        # wait for the writers' locks) but after a backlog. New sagas are counted once per statement and status (a
        # group commit inserts many), a status changed or a saga deleted once per row, and an UPDATE that leaves
        # the status as it was adds nothing. A TRUNCATE of `sagas` empties both tables once any fold under way is
        # done (the lock; then its DELETEs see the fold, in READ COMMITTED, PostgreSQL's default), even when it
        # names them too, which a TRUNCATE of them here could not. Whatever locks both tables locks the changes
        # first, as a fold does. The lock on `sagas` keeps writers out while the sagas there are counted (a few
        # seconds at ten million): at most 5 s to get it, as migration 14.
        """
        CREATE TABLE saga_counts (status VARCHAR(50) PRIMARY KEY, n BIGINT NOT NULL);
        CREATE TABLE saga_count_changes (status VARCHAR(50) NOT NULL, n BIGINT NOT NULL) WITH (vacuum_truncate = off);
        CREATE FUNCTION saga_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO saga_count_changes (status, n) SELECT status, COUNT(*) FROM inserted GROUP BY status;
            RETURN NULL;
        END
        $$;
        CREATE FUNCTION saga_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO saga_count_changes (status, n) VALUES (OLD.status, -1), (NEW.status, 1);
            ELSE
                INSERT INTO saga_count_changes (status, n) VALUES (OLD.status, -1);
            END IF;
            RETURN NULL;
        END
        $$;
        CREATE FUNCTION saga_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            LOCK TABLE saga_count_changes, saga_counts IN EXCLUSIVE MODE;
            DELETE FROM saga_count_changes;
            DELETE FROM saga_counts;
            RETURN NULL;
        END
        $$;
        SET LOCAL lock_timeout = '5s';
        LOCK TABLE sagas IN SHARE ROW EXCLUSIVE MODE;
        SET LOCAL lock_timeout TO DEFAULT;
        CREATE TRIGGER saga_counts_insert AFTER INSERT ON sagas REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION saga_counts_inserted();
        CREATE TRIGGER saga_counts_update AFTER UPDATE OF status ON sagas
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION saga_counts_changed();
        CREATE TRIGGER saga_counts_delete AFTER DELETE ON sagas FOR EACH ROW EXECUTE FUNCTION saga_counts_changed();
        CREATE TRIGGER saga_counts_truncate AFTER TRUNCATE ON sagas
            FOR EACH STATEMENT EXECUTE FUNCTION saga_counts_truncated();
        INSERT INTO saga_counts (status, n) SELECT status, COUNT(*) FROM sagas GROUP BY status;
        """,
    ),
]

LATEST = MIGRATIONS[-1][0]
_LOCK_KEY = 7_340_212_001


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now. A schema already current is
    only read, so that a database set read-only can be verified as it is."""
    if await _applied(conn) >= {version for version, _, _ in MIGRATIONS}:
        return []
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
        )
        done = await _versions(conn)
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(version)
    return applied_now


async def _applied(conn: asyncpg.Connection) -> set[int]:
    return await _versions(conn) if await _tracked(conn) else set()


async def _tracked(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"))


async def _versions(conn: asyncpg.Connection) -> set[int]:
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def current_version(conn: asyncpg.Connection) -> int:
    if not await _tracked(conn):
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
