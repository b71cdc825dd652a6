"""The validate section of a phased migration: each statement in a transaction of its own.

``ALTER TABLE ... ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID`` (or a ``FOREIGN KEY ... NOT VALID``)
in the expand section takes ACCESS EXCLUSIVE for an instant and checks no existing row. Its
``VALIDATE CONSTRAINT`` scans the table under SHARE UPDATE EXCLUSIVE only (reads and writes go on), but
only when its transaction took nothing stronger on the table before it: so each statement here runs
alone. Then the contract's ``SET NOT NULL`` finds the validated check and skips its own scan
(PostgreSQL 12+), and drops the check. A statement already done is cheap to run again (validating a
valid constraint does nothing), so this runs after every backfill and again before each contract.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import LockTimeout, MigrationError
from pgshift.migrations import phases, sqltext
from pgshift.migrations.budget import Limits, retrying, settings_sql
from pgshift.migrations.source import Migration

_VIOLATED = {"23514": "a row breaks the check", "23503": "a row refers to a key its table does not have",
             "23502": "a row holds a NULL"}


def run(db: Database, migration: Migration, parsed: phases.Phases, limits: Limits,
        say: Callable[[str], None] | None = None) -> int:
    """Run the validate section of ``migration``, statement by statement; how many statements ran."""
    if not parsed.validate:
        return 0
    origin = f"{migration.path.name} (validate)"
    count = 0
    for statement in sqltext.statements(parsed.validate, origin):
        where = f"{migration.path.name}, line {statement.line}"
        text = statement.text.strip().rstrip(";")
        sql = (f"RESET ALL; BEGIN; {settings_sql(limits, local=True)}\n{text};\nCOMMIT;" if statement.transactional
               else f"RESET ALL; {settings_sql(limits, local=False)}\n{text};\nRESET ALL;")
        try:
            retrying(db, limits, where, functools.partial(db.execute, sql))
        except LockTimeout as timeout:
            raise LockTimeout(f"{timeout}; the validate section runs again with inv deploy.complete") from None
        except SqlFailure as failure:
            why = _VIOLATED.get(failure.sqlstate or "")
            advice = (f"{why}: fix those rows (or the backfill line) and run inv deploy.complete again, or "
                      "inv deploy.abort" if why else "fix the statement, then run inv deploy.complete again")
            raise MigrationError(f"{where}: {failure}; {advice}") from None
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        count += 1
    if count and say is not None:
        say(f"validated {migration.id}: {count} statement(s), each in its own transaction")
    return count


def run_open(db: Database, migrations: list[Migration], limits: Limits,
             say: Callable[[str], None] | None = None) -> int:
    """The validate sections of every expanded migration whose backfills are done; statements run."""
    recorded = phases.recorded(db)
    if not recorded:
        return 0
    files = {m.id: m for m in migrations}
    total = 0
    for phase in recorded.values():
        migration = files.get(phase.id)
        if phase.phase != "expanded" or migration is None:
            continue
        parsed = phases.parse(migration.sql, migration.path.name)
        if parsed is None or not parsed.validate or not backfills_done(db, migration.id, parsed):
            continue
        total += run(db, migration, parsed, limits, say)
    return total


def backfills_done(db: Database, migration_id: str, parsed: phases.Phases) -> bool:
    if not parsed.backfills:
        return True
    row = db.one("SELECT count(*) FROM pgshift.backfills WHERE id = %s AND state = 'done'", [migration_id])
    return row is not None and int(row[0]) == len(parsed.backfills)
