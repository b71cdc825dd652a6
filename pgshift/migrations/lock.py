"""The migration lock: a PostgreSQL session advisory lock.

It belongs to the connection, so it is gone the moment the holding process dies (``kill -9``
included): nothing is left behind to clean up. Waiting is bounded; on giving up the error names the
holder (pid, who and where from, since when).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pgshift.databases import pooler
from pgshift.databases.db import Database
from pgshift.errors import LockTimeout

# Advisory locks are scoped to the current database, so one constant key pair serves every database.
LOCK_NAMESPACE = 0x70677368  # "pgsh"
LOCK_ID = 1


def holder(db: Database) -> str:
    row = db.one(
        "SELECT a.pid, a.application_name, coalesce(host(a.client_addr), 'local socket'), "
        "to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [LOCK_NAMESPACE])
    if row is None:
        return "a session that has just released it"
    pid, app, addr, since = row
    return f"pid {pid} ({app or 'no application name'}, from {addr}) since {since}"


@contextmanager
def migration_lock(db: Database, wait: float) -> Iterator[None]:
    """Hold the migration lock for the block; wait up to ``wait`` seconds for it. Refused behind a
    pooler that does not keep one server session (``pooler``)."""
    pooler.require_session(db)
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        row = db.one("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, LOCK_ID])
        if row and row[0]:
            break
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"another migration holds the lock: {holder(db)}; waited {wait:g}s. Wait for it to "
                "finish, or if that process is gone, end its session with SELECT pg_terminate_backend(pid)")
        time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        if not db.conn.closed:
            if db.in_transaction:  # interrupted (Ctrl-C, SIGTERM) inside a migration's transaction
                db.execute("ROLLBACK")
            db.rows("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, LOCK_ID])


def is_free(db: Database) -> bool:
    """True when no session holds the migration lock (takes nothing)."""
    row = db.one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 "
        "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [LOCK_NAMESPACE])
    return bool(row and row[0] == 0)
