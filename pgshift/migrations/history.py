"""The migration record: table ``pgshift.migrations`` in the target database.

The record, its lock and every journal of ours live in one schema, ``pgshift`` unless the settings'
``record_schema`` names another (a fleet target with ``schema = "t1"`` keeps its own in ``pgshift_t1``,
so tenants that share a database each have their own record). This module owns those names: ``rel``
gives a bookkeeping table's name for a session, ``in_schema`` moves one of our own scripts to it.

A transactional migration's row is written in the same transaction as its statements, so a row
exists exactly when the effect does. A migration that runs outside a transaction keeps a journal in
its row (state ``running``, how many statements are done, a hash of each), so a crash is resumable
and ``status`` shows where it stopped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

from pgshift.databases.db import Database, SqlFailure

SCHEMA = "pgshift"
TABLE = "pgshift.migrations"

# Every table of ours in the record schema; a name outside these is refused.
BOOKKEEPING = frozenset({"migrations", "schema_snapshots", "rollbacks", "deploys", "maintenance", "phases",
                         "backfills", "audit", "statement_looks"})
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_OURS = re.compile(r"(?<![\w.\"])pgshift\.(" + "|".join(sorted(BOOKKEEPING)) + r")\b"
                   r"|(?<=SCHEMA IF NOT EXISTS )pgshift\b")


def schema_sql(name: str) -> str:
    """A record schema as SQL: ``pgshift`` as ever, any other quoted (names are plain identifiers)."""
    if name == SCHEMA:
        return SCHEMA
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"record schema {name!r} is not a plain identifier")
    return f'"{name}"'


def rel(db: Database, table: str) -> str:
    """The name of bookkeeping ``table`` for this session's record schema, e.g. ``pgshift.migrations``."""
    if table not in BOOKKEEPING:
        raise ValueError(f"{table!r} is not a bookkeeping table")
    return f"{schema_sql(db.record_schema)}.{table}"


def in_schema(db: Database, script: str) -> str:
    """One of our own scripts (never one with a user's text in it) with its ``pgshift.<table>`` names and
    ``CREATE SCHEMA IF NOT EXISTS pgshift`` moved to this session's record schema; as is for ``pgshift``."""
    if db.record_schema == SCHEMA:
        return script
    quoted = schema_sql(db.record_schema)
    return _OURS.sub(lambda m: f"{quoted}.{m[1]}" if m[1] else quoted, script)

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.migrations (
    id               text PRIMARY KEY,
    checksum         text NOT NULL,
    state            text NOT NULL CHECK (state IN ('applied', 'running', 'failed')),
    applied_at       timestamptz NOT NULL DEFAULT now(),
    duration_ms      integer,
    applied_by       text NOT NULL DEFAULT current_setting('application_name'),
    transactional    boolean NOT NULL DEFAULT true,
    statements_total integer,
    statements_done  integer NOT NULL DEFAULT 0,
    done_hashes      text[] NOT NULL DEFAULT '{}',
    error            text
);
"""

# The reference drift is measured against: a catalog snapshot per applied set (pgshift.migrations.drift).
SNAPSHOTS = "pgshift.schema_snapshots"
SNAPSHOTS_DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.schema_snapshots (
    applied    text PRIMARY KEY,
    head       text,
    migrations integer NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    objects    jsonb NOT NULL
);
ALTER TABLE pgshift.schema_snapshots ADD COLUMN IF NOT EXISTS catalog text;
"""

# The journal of a rollback run statement by statement: its migration's record stays until the last
# statement is done, then both go in one transaction (a crash in between resumes where it stopped).
ROLLBACKS_DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.rollbacks (
    id               text PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    statements_total integer NOT NULL,
    statements_done  integer NOT NULL DEFAULT 0,
    done_hashes      text[] NOT NULL DEFAULT '{}'
);
"""


def rollback_journal(db: Database) -> dict[str, tuple[int, int, tuple[str, ...]]]:
    """Half-done rollbacks: id -> (statements total, done, their hashes)."""
    if not db.has_relation(rel(db, "rollbacks")):
        return {}
    return {r[0]: (r[1], r[2], tuple(r[3])) for r in db.rows(
        f"SELECT id, statements_total, statements_done, done_hashes FROM {rel(db, 'rollbacks')}")}


class Record(NamedTuple):
    """One row of the record. A named tuple: every status and apply builds one per migration."""

    id: str
    checksum: str
    state: str
    applied_at: datetime
    duration_ms: int | None
    applied_by: str
    transactional: bool
    statements_total: int | None
    statements_done: int
    done_hashes: tuple[str, ...]
    error: str | None


def stopped_without_file(rec: Record) -> str:
    """What to say of a record stopped part-way whose file is gone: its statements so far are in effect."""
    return (f"stopped after statement {rec.statements_done} of {rec.statements_total} and "
            f"migrations/{rec.id}.sql is gone, so the database holds part of it; restore the file from version "
            f"control and run inv dev.migrate to finish it, or undo those statements by hand and run "
            f"inv dev.mark {rec.id} --reverted")


def exists(db: Database) -> bool:
    return db.has_relation(rel(db, "migrations"))


def shared_record_instead(db: Database) -> str | None:
    """Why not to start a new record in this session's own record schema: the database already holds
    the ``pgshift`` one (kept there before tenants had their own), whose migrations would run again."""
    if db.record_schema == SCHEMA or exists(db) or not db.has_relation(TABLE):
        return None
    own = schema_sql(db.record_schema)
    return (f"the record for this target belongs in {own}, which has none yet, while {TABLE} exists in this "
            f"database: deploying would apply every migration again. If {TABLE} is this tenant's record, move "
            f"it (CREATE SCHEMA {own}; ALTER TABLE {TABLE} SET SCHEMA {own}), or keep using it with "
            f"record_schema = \"pgshift\" on the target in fleet.toml")


def ensure(db: Database) -> None:
    """Create the record table (call under the migration lock)."""
    if not exists(db):
        db.execute(in_schema(db, DDL))


def records(db: Database) -> dict[str, Record]:
    """Every record; none when the table does not exist yet (one round trip either way)."""
    try:
        rows = db.rows(
            "SELECT id, checksum, state, applied_at, duration_ms, applied_by, transactional, "
            f"statements_total, statements_done, done_hashes, error FROM {rel(db, 'migrations')} ORDER BY id")
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):  # undefined table / schema: nothing applied yet
            return {}
        raise
    return {row[0]: Record._make((*row[:9], tuple(row[9]), row[10])) for row in rows}


# A migration's duration, measured by the server: its script first selects NOTE_START (within one
# message of several migrations, statement_timestamp() is the message's, so it cannot serve).
NOTE_START = "set_config('pgshift.started', clock_timestamp()::text, true)"
SINCE_NOTED_MS = ("(extract(epoch FROM clock_timestamp() - current_setting('pgshift.started')::timestamptz)"
                  " * 1000)::integer")


def upsert_sql(db: Database, *, id: str, checksum: str, state: str, duration_ms: int | str | None,
               transactional: bool, total: int | None = None, done: int = 0,
               hashes: tuple[str, ...] = (), error: str | None = None) -> str:
    """The statement that writes a record; returned as text to send inside the migration's own script.

    ``duration_ms`` may be ``SINCE_NOTED_MS`` to let the server measure the script it is part of."""
    values = ", ".join(_literal(db, v) for v in (
        id, checksum, state, duration_ms, transactional, total, done, list(hashes), error))
    return (
        f"INSERT INTO {rel(db, 'migrations')} (id, checksum, state, duration_ms, transactional, "
        f"statements_total, statements_done, done_hashes, error) VALUES ({values}) "
        "ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, state = EXCLUDED.state, "
        "applied_at = now(), duration_ms = EXCLUDED.duration_ms, "
        "applied_by = current_setting('application_name'), transactional = EXCLUDED.transactional, "
        "statements_total = EXCLUDED.statements_total, statements_done = EXCLUDED.statements_done, "
        "done_hashes = EXCLUDED.done_hashes, error = EXCLUDED.error"
    )


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _literal(db: Database, value: object) -> str:
    """SQL literal; the common values (ids, hex checksums, numbers) without a round through the driver."""
    if value is SINCE_NOTED_MS:
        return value
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _PLAIN.issuperset(value):
        return f"'{value}'"
    if isinstance(value, list) and not value:
        return "'{}'"
    return db.literal(value)


def delete_sql(db: Database, id: str) -> str:
    return f"DELETE FROM {rel(db, 'migrations')} WHERE id = {db.literal(id)}"
