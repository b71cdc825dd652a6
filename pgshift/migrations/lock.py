"""The migration lock: a PostgreSQL session advisory lock.

It belongs to the connection, so it is gone the moment the holding process dies (``kill -9``
included) and the server notices (every session of ours asks it to check, see ``Database.connect``).
A session whose client is gone but which the server has not ended yet (an older server, or a
session opened without the check) is an orphan: one of ours from this machine whose pid no longer
runs is ended, and the run says so. Waiting is bounded; on giving up the error names the holder
(pid, who and where from, since when).

There is one lock per record schema (``Database.record_schema``): tenants that share a database, each
with its own record, migrate at the same time without waiting on one another.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pgshift.databases import pooler
from pgshift.databases.db import Database, SqlFailure, client_of
from pgshift.errors import LockTimeout

# Advisory locks are scoped to the current database, so one constant key pair serves every database;
# the second key tells the record schemas of one database apart (LOCK_ID: the default, ``pgshift``).
LOCK_NAMESPACE = 0x70677368  # "pgsh"
LOCK_ID = 1


def lock_id(db: Database) -> int:
    """The lock's second key for this session's record schema: 1 for ``pgshift``, else one from its name."""
    if db.record_schema == "pgshift":
        return LOCK_ID
    return 2 + zlib.crc32(db.record_schema.encode()) % (2**31 - 2)


_HOLDER = (
    "SELECT a.pid, a.application_name, coalesce(host(a.client_addr), 'local socket'), "
    "to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid::bigint = %s AND l.objsubid = 2 AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def holder(db: Database) -> str:
    row = db.one(_HOLDER, [LOCK_NAMESPACE, lock_id(db)])
    if row is None:
        return "a session that has just released it"
    pid, app, addr, since = row
    return f"pid {pid} ({app or 'no application name'}, from {addr}) since {since}"


def end_orphan(db: Database, wait: float, say: Callable[[str], None]) -> bool:
    """If the lock's holder is an orphan of ours (its client, on this machine, is gone), end its
    session and say so; True if it was ended. Any other holder is left alone."""
    row = db.one(_HOLDER, [LOCK_NAMESPACE, lock_id(db)])
    client = client_of(row[1]) if row else None
    if row is None or client is None or not client.gone:
        return False
    what = (f"the migration lock is held by server session {row[0]}, whose client (pgshift pid {client.pid} "
            "on this machine) is gone")
    try:
        ended = db.one("SELECT pg_terminate_backend(%s)", [row[0]])
    except SqlFailure as failure:
        say(f"{what}; cannot end it ({failure}); waiting up to {wait:g}s for the server to end it")
        return False
    if not (ended and ended[0]):
        return False  # it ended by itself meanwhile
    say(f"{what}: ended that session (what it had not committed is rolled back) to take the lock")
    return True


@contextmanager
def migration_lock(db: Database, wait: float, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the migration lock for the block; wait up to ``wait`` seconds for it. Refused behind a
    pooler that does not keep one server session (``pooler``). An orphaned holder (see the module's
    docstring) is ended, told to ``say``."""
    pooler.require_session(db)
    deadline = time.monotonic() + wait
    delay = 0.05
    orphan_checked = False
    while True:
        row = db.one("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, lock_id(db)])
        if row and row[0]:
            break
        if not orphan_checked:
            orphan_checked = True
            if end_orphan(db, wait, say or _NOTES.append):
                deadline = max(deadline, time.monotonic() + 5)  # time for its backend to exit
                continue
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
            db.rows("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, lock_id(db)])


_NOTES: list[str] = []  # what was said with no ``say`` to say it to, until ``notes`` hands it over


def notes() -> list[str]:
    """What the lock did about orphans, for callers that gave no ``say``, since the last call."""
    found = list(_NOTES)
    _NOTES.clear()
    return found


def is_free(db: Database) -> bool:
    """True when no session holds the migration lock (takes nothing)."""
    row = db.one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid::bigint = %s "
        "AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [LOCK_NAMESPACE, lock_id(db)])
    return bool(row and row[0] == 0)
