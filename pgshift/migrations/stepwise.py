"""Running a migration or rollback file statement by statement, journaled, under the lock budget.

Each plain statement commits together with its journal step; one that refuses a transaction block
(``CREATE INDEX CONCURRENTLY``) runs alone and is journaled right after. A statement that hits
``lock_timeout`` is retried after a pause, as a transactional migration is. A concurrent index build or
rebuild runs under its own wait budget, watched and reported (pgshift.migrations.concurrent); the
INVALID index a failed try left is dropped before the retry. On resume after a crash, the statement the
journal stopped at is first settled: a half-built index dropped and rebuilt, one already built kept, an
index already dropped not dropped again.

Forward files journal in ``pgshift.migrations`` (their record), rollback files in ``pgshift.rollbacks``;
the caller gives the journal step and the crash-test hook names.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from typing import NamedTuple

from pgshift.databases.db import Database
from pgshift.errors import PgShiftError
from pgshift.migrations import concurrent, sqltext
from pgshift.migrations.budget import Limits, retrying, settings_sql


class Journal(NamedTuple):
    step: Callable[[int], str]  # the SQL that records statement n (1-based) as done
    executed: str               # crash-test hook names, with the statement number appended: "<executed>:<n>"
    journaled: str


class Ran(NamedTuple):
    stopped: Stopped | None  # None: every statement is done
    attempts: int            # the most attempts one statement needed (1: no lock timeout)


class Stopped(NamedTuple):
    """Where a run stopped: the statement (``at``, 0-based) and the server's or the budget's error."""

    at: int
    statement: sqltext.Statement
    error: PgShiftError


def digest(statement: sqltext.Statement) -> str:
    return hashlib.sha256(statement.text.encode()).hexdigest()[:16]


def failpoint(name: str) -> None:
    """Crash-test hook: with PGSHIFT_FAILPOINT=<name> in the environment, die by SIGKILL right here."""
    if os.environ.get("PGSHIFT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def run(db: Database, statements: list[sqltext.Statement], limits: Limits, journal: Journal, *,
        start: int = 0, resumed: bool = False, what: str = "migration",
        progress: Callable[[str], None] | None = None) -> Ran:
    """Run ``statements[start:]``: where it stopped, if it did (the journal says the same), and the
    attempts it took. ``resumed``: an earlier run stopped at ``start`` and may have half-run that one.
    ``progress`` hears how a concurrent index build advances."""
    db.execute(settings_sql(limits, local=False))
    most = 1
    try:
        for index in range(start, len(statements)):
            statement = statements[index]
            try:
                most = max(most, _one(db, statement, journal.step(index + 1), limits, f"{what}, line {statement.line}",
                                      settle_first=resumed and index == start,
                                      executed=f"{journal.executed}:{index + 1}", say=progress))
                failpoint(f"{journal.journaled}:{index + 1}")
            except PgShiftError as error:
                return Ran(Stopped(index, statement, error), most)
    finally:
        db.execute("RESET lock_timeout; RESET statement_timeout;")
    return Ran(None, most)


def _one(db: Database, statement: sqltext.Statement, step: str, limits: Limits, what: str, *,
         settle_first: bool, executed: str, say: Callable[[str], None] | None = None) -> int:
    if statement.transactional:
        return retrying(db, limits, what, lambda: db.execute(
            f"BEGIN; {settings_sql(limits, local=True)}\n{statement.text};\n{step}; COMMIT;"))[1]
    if concurrent.handles(statement):
        tries_taken = concurrent.run(db, statement, limits, what, say, settle_first=settle_first)
        failpoint(executed)
        db.execute(step)
        return tries_taken
    tries = 0

    def attempt() -> None:
        # A retry first settles what the timed-out try left: its INVALID index is dropped (that drop
        # waits under the same budget), or the work turns out done.
        nonlocal tries
        tries += 1
        if (settle_first or tries > 1) and settle(db, statement):
            return
        db.execute(statement.text)

    tries_taken = retrying(db, limits, what, attempt)[1]
    failpoint(executed)
    db.execute(step)
    return tries_taken


def settle(db: Database, statement: sqltext.Statement) -> bool:
    """A statement that refuses a transaction may have run, or half-run, before a crash or a timeout.
    True: its effect is complete (an index it built is valid, one it dropped is gone). A half-built
    (INVALID) index is dropped, so the statement runs again."""
    if concurrent.handles(statement):
        return concurrent.settle(db, statement)
    if not statement.indexes:
        return False
    if statement.kind == "DropStmt":
        return not any(db.has_relation(name) for name in statement.indexes)
    if statement.kind == "IndexStmt":
        name = statement.indexes[0]
        row = db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        if row is None:
            return False
        if row[0]:
            return True
        db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    return False

