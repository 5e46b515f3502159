"""The PostgreSQL saga log's schema: its forward-only migrations, and how a log is brought
to the newest one (under an advisory lock, so that openers on many machines take turns).

Kept apart from the store, whose module is about reading and writing the log.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sagakit.errors import StoreError
from sagakit.store import _sql
from sagakit.store._base import ANY_INSTANCE
from sagakit.store._postgres_url import Settings

_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
_UNFINISHED = "('pending', 'running', 'compensating')"

CHANNEL = "sagakit_changes"
"""The NOTIFY channel of instance changes; the payload is the id of the instance.

A status change is announced only for an instance somebody watches (a row in
``sagakit_watched``): a NOTIFY takes a database-wide lock at commit, which made every
batch of every worker commit in turn. The store's write calls ``sagakit_notify_watched``
once the statement has locked the rows it changed, and that function, being volatile,
reads ``sagakit_watched`` with a snapshot taken then; a watcher registers and locks the
instance's row ``FOR SHARE`` in one statement. So either the writer sees the
registration and notifies, or the registration had to wait for the writer's commit, and
the watcher's next read sees the change."""
WORK_CHANNEL = "sagakit_work"
"""The NOTIFY channel of new due work (payload ``ANY_INSTANCE``). Idle workers listen on this
one alone: on the shared channel every worker process was woken by every status change of
every saga, thousands a second, only to find nobody waiting for it."""

MIGRATIONS: _sql.Migrations = (
    (
        """CREATE TABLE sagas (
            id text PRIMARY KEY,
            name text NOT NULL,
            version integer NOT NULL,
            status text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            due_at double precision,
            lease_owner text,
            lease_expires double precision
        ) WITH (fillfactor = 80)""",
        "CREATE INDEX sagas_by_created ON sagas (created_at, id)",
        "CREATE INDEX sagas_by_status ON sagas (status, created_at, id)",
        f"CREATE INDEX sagas_due ON sagas (due_at) WHERE due_at IS NOT NULL"
        f" AND status IN {_UNFINISHED}",
        "CREATE INDEX sagas_leased ON sagas (lease_expires) WHERE lease_expires IS NOT NULL",
        """CREATE TABLE saga_log (
            saga_id text NOT NULL,
            seq integer NOT NULL,
            type text NOT NULL,
            at double precision NOT NULL,
            step text,
            attempt integer NOT NULL,
            data text,
            PRIMARY KEY (saga_id, seq)
        )""",
        """CREATE FUNCTION sagakit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'saga_log is append-only' USING ERRCODE = 'restrict_violation';
        END $$""",
        """CREATE TRIGGER saga_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
           ON saga_log FOR EACH STATEMENT EXECUTE FUNCTION sagakit_append_only()""",
        """CREATE TABLE saga_inbox (
            id bigserial PRIMARY KEY,
            saga_id text NOT NULL,
            name text NOT NULL,
            payload text NOT NULL,
            at double precision NOT NULL
        )""",
        "CREATE INDEX saga_inbox_by_saga ON saga_inbox (saga_id, id)",
        f"""CREATE FUNCTION sagakit_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.id);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER sagas_status_changed AFTER UPDATE OF status ON sagas FOR EACH ROW
           WHEN (OLD.status IS DISTINCT FROM NEW.status)
           EXECUTE FUNCTION sagakit_status_changed()""",
    ),
    (  # new due work wakes idle workers (they watch ANY_INSTANCE) instead of their poll
        f"""CREATE FUNCTION sagakit_work_created() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM created WHERE due_at IS NOT NULL) THEN
                PERFORM pg_notify('{CHANNEL}', '{ANY_INSTANCE}');
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER sagas_work_created AFTER INSERT ON sagas
           REFERENCING NEW TABLE AS created FOR EACH STATEMENT
           EXECUTE FUNCTION sagakit_work_created()""",
    ),
    (  # news of due work on a channel of its own (WORK_CHANNEL)
        f"""CREATE OR REPLACE FUNCTION sagakit_work_created() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM created WHERE due_at IS NOT NULL) THEN
                PERFORM pg_notify('{WORK_CHANNEL}', '{ANY_INSTANCE}');
            END IF;
            RETURN NULL;
        END $$""",
    ),
    (  # `list --input order_id=42` through an index instead of every saga_started record
        "CREATE INDEX saga_log_input ON saga_log"
        " USING gin ((data::jsonb -> 'input') jsonb_path_ops) WHERE seq = 0",
    ),
    (  # workers report themselves, for `sagakit versions`
        """CREATE TABLE sagakit_workers (
            owner text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            sagas text NOT NULL,
            queues text NOT NULL,
            started_at double precision NOT NULL,
            seen_at double precision NOT NULL
        )""",
    ),
    (  # the hot path appends log rows only: no trigger per row, no list-only index to keep
        "DROP TRIGGER sagas_status_changed ON sagas",
        "DROP FUNCTION sagakit_status_changed()",
        "DROP INDEX sagas_by_status",
        "CREATE INDEX sagas_needing_attention ON sagas (created_at, id)"
        " WHERE status = 'needs_attention'",
        """CREATE TABLE sagakit_watched (
            saga_id text NOT NULL,
            watcher text NOT NULL,
            since double precision NOT NULL,
            PRIMARY KEY (saga_id, watcher)
        )""",
        f"""CREATE FUNCTION sagakit_notify_watched(changed text[]) RETURNS bigint
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM sagakit_watched) THEN
                RETURN 0;
            END IF;
            RETURN (SELECT count(pg_notify('{CHANNEL}', w.saga_id)) FROM (
                SELECT DISTINCT saga_id FROM sagakit_watched WHERE saga_id = ANY(changed)
            ) AS w);
        END $$""",
    ),
)
"""Forward-only schema migrations; the schema version is how many have been applied."""

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(url: str) -> int:
    """Bring the saga log at ``url`` to this code's schema; returns the schema version.

    For ``sagakit migrate --db URL``: safe to run while workers run and from many
    machines at once (an advisory lock makes concurrent migrators take turns).
    """
    settings = Settings.parse(url)
    with settings.translated():
        conn = await asyncpg.connect(settings.dsn, server_settings=settings.server_settings)
        try:
            return await migrate_on(conn, settings, create=True)
        finally:
            await conn.close()


async def migrate_on(conn: _Conn, settings: Settings, *, create: bool) -> int:
    """Apply the missing migrations in one transaction, under an advisory lock so that
    concurrent openers take turns (the later ones find the work done)."""
    found = await _schema_version(conn, settings)
    if found == SCHEMA_VERSION:
        return found  # the common case costs no lock and no transaction
    _sql.refuse_newer(MIGRATIONS, found, settings.display)
    if found == 0 and not create:
        raise StoreError(f"no sagakit saga log in schema {settings.schema!r} of {settings.display}")
    key = f"sagakit.migrate.{settings.schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
    try:
        # Locked first and then a new transaction: its start drops catalog caches that
        # still say "no such schema", so it sees what an opener before us committed.
        async with conn.transaction():
            found = await _schema_version(conn, settings)
            _sql.refuse_newer(MIGRATIONS, found, settings.display)
            await _apply(conn, settings, found)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    return SCHEMA_VERSION


async def _apply(conn: _Conn, settings: Settings, found: int) -> None:
    schema = settings.quoted_schema
    # Not CREATE SCHEMA IF NOT EXISTS: that needs CREATE on the database even when the
    # schema is there, and a DBA may have made it for a role that lacks that right.
    if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", settings.schema):
        await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {schema}.sagakit_schema (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(f"SET LOCAL search_path TO {schema}")
    record = f"INSERT INTO {schema}.sagakit_schema (version) VALUES ($1)"
    for statement, args in _sql.upgrade(MIGRATIONS, found, record):
        await conn.execute(statement, *args)


async def _schema_version(conn: _Conn, settings: Settings) -> int:
    table = f"{settings.quoted_schema}.sagakit_schema"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return 0
    version = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")
    return int(version)
